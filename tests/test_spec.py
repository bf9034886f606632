"""JobSpec validation names the field; the CLI translate path works without a server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.core.errors import ValidationError
from gateway.core.models import parse_spec

ROOT = Path(__file__).resolve().parent.parent


def base(**kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"name": "ok-name", "backend": "runai", "image": "img"}
    d.update(kw)
    return d


@pytest.mark.parametrize(("data", "loc"), [
    (base(name="Bad_Name"), ["name"]),
    (base(name="a" * 64), ["name"]),
    (base(colour="red"), ["colour"]),
    (base(resources={"gpus": -1}), ["resources", "gpus"]),
    (base(resources={"gpus": 1.5}), ["resources", "gpus"]),
    (base(resources={"memory": "lots"}), ["resources", "memory"]),
    (base(resources={"nodes": 0}), ["resources", "nodes"]),
    (base(resources={"cores": 2}), ["resources", "cores"]),
    (base(inputs=[{"name": "d", "uri": "http://x/y"}]), ["inputs", 0, "uri"]),
    (base(priority="urgent"), ["priority"]),
    (base(max_runtime_seconds=0), ["max_runtime_seconds"]),
    (base(distributed={"framework": "horovod"}), ["distributed", "framework"]),
    (base(env={"1BAD": "x"}), ["env"]),
    ({"backend": "runai", "image": "x"}, ["name"]),
])
def test_errors_name_the_field(data: dict[str, Any], loc: list[Any]) -> None:
    with pytest.raises(ValidationError) as err:
        parse_spec(data)
    assert err.value.status == 422
    assert loc in [e["loc"] for e in err.value.errors or []]


def test_nodes_above_one_need_a_framework() -> None:
    with pytest.raises(ValidationError, match=r"distributed\.framework"):
        parse_spec(base(resources={"nodes": 2}))


def test_unknown_field_says_so() -> None:
    with pytest.raises(ValidationError) as err:
        parse_spec(base(colour="red"))
    assert err.value.errors == [{"loc": ["colour"], "msg": "unknown field"}]


def tjg(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("backend", ["runai", "modelarts"])
def test_cli_translate_prints_request_and_report(backend: str) -> None:
    r = tjg("translate", "--backend", backend, "examples/single-gpu.yaml")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["backend"] == backend
    assert out["request"]["method"] == "POST" and out["request"]["body"]
    assert {e["field"] for e in out["report"]} >= {"name", "image", "resources.gpus"}


def test_cli_translate_invalid_spec_exits_1_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Not_Valid\nimage: x\nresources: {gpus: -2}\n")
    r = tjg("translate", "--backend", "runai", "-o", "json", str(bad))
    assert r.returncode == 1
    problem = json.loads(r.stderr)
    assert problem["status"] == 422
    locs = [e["loc"] for e in problem["errors"]]
    assert ["name"] in locs and ["resources", "gpus"] in locs


def test_cli_translate_strict_refuses_dropped(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s3job\nimage: x\ninputs: [{name: d, uri: 's3://b/p'}]\n")
    assert tjg("translate", "--backend", "modelarts", str(spec)).returncode == 0
    r = tjg("translate", "--backend", "modelarts", "--strict", str(spec))
    assert r.returncode == 1 and "inputs" in r.stderr


def test_cli_translate_unknown_backend(tmp_path: Path) -> None:
    r = tjg("translate", "--backend", "nope", "examples/single-gpu.yaml")
    assert r.returncode == 1 and "unknown backend" in r.stderr


def test_cli_translate_errors_are_one_line_as_every_command_says_them(tmp_path: Path) -> None:
    """Issue 30: tjg translate printed a whole problem document where the other commands print one line."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Bad_Name\nbackend: runai\nimage: x\n")
    r = tjg("translate", "--backend", "runai", str(bad))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and r.stderr.startswith("tjg: error: invalid job spec: name")
