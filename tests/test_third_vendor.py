"""A third vendor is one folder plus one registry line: the toy vendor (tests/toyvendor/, its simulator
included) is registered by the import below and served by the gateway with no other file changed."""

from __future__ import annotations

import ast
import io
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

import tests.toyvendor.adapter  # noqa: F401  (the registry line)
from benchmarks.procs import free_port
from gateway.cli.main import main as tjg
from gateway.core.adapter import REGISTRY
from gateway.core.config import parse_config
from gateway.core.errors import ValidationError
from tests.gwkit import start_gateway

ROOT = Path(__file__).resolve().parent.parent


def toy_config(tmp_path: Path) -> Any:
    return parse_config({
        "store": {"url": f"sqlite+aiosqlite:///{tmp_path}/tjg.db"}, "log_level": "warning",
        "tenants": [{"name": "alpha", "api_keys": ["alpha-key-123"]}],
        "backends": [{"name": "toybox", "kind": "toy", "url": f"http://127.0.0.1:{free_port()}", "simulate": True,
                      "token": "toy-secret", "sync_interval": 0.2}]})


async def test_submit_get_list_cancel_and_backends_on_a_toy_vendor(tmp_path: Path) -> None:
    gw = await start_gateway(toy_config(tmp_path))
    try:
        status, backends = await gw.call("GET", "/v1/backends")
        assert status == 200
        toy = next(b for b in backends if b["name"] == "toybox")
        assert toy["kind"] == "toy"
        assert toy["capabilities"]["suspend"] == {"supported": False, "reason": "toy cloud has no such thing"}

        job = await gw.submit({"name": "hello", "backend": "toybox", "image": "busybox", "command": ["true"]})
        assert job["backend"] == "toybox" and job["backend_job_id"]
        outcomes = {e["field"]: e["outcome"] for e in job["report"]}
        assert outcomes["image"] == "exact" and outcomes["command"] == "dropped"

        running = await gw.wait_phase(job["id"], {"RUNNING"})
        assert running["status"]["phase"] == "RUNNING" and running["status"]["vendor_phase"] == "running"
        status, page = await gw.call("GET", "/v1/jobs?backend=toybox")
        assert status == 200 and [j["id"] for j in page["jobs"]] == [job["id"]]

        status, problem = await gw.call("POST", f"/v1/jobs/{job['id']}/suspend")
        assert status == 409 and "toy cloud has no such thing" in problem["detail"]
        status, _ = await gw.call("POST", f"/v1/jobs/{job['id']}/cancel")
        assert status in (200, 202)
        ended = await gw.wait_phase(job["id"], {"CANCELLED"})
        assert ended["status"]["phase"] == "CANCELLED" and ended["status"]["vendor_phase"] == "stopped"

    finally:
        await gw.c.close()


def test_the_cli_and_the_config_know_the_toy_kind_from_the_registry() -> None:
    assert "toy" in REGISTRY.kinds()
    out = io.StringIO()
    with redirect_stdout(out):
        assert tjg(["phases", "toy"]) == 0
    assert '"done"' in out.getvalue() and '"SUCCEEDED"' in out.getvalue()
    with pytest.raises(ValidationError, match=r"backends\.0\.token"):
        parse_config({"backends": [{"name": "t", "kind": "toy", "url": "http://x", "token": 5}]})
    with pytest.raises(ValidationError, match=r"unknown backend kind 'nosuch'.*modelarts.*runai.*toy"):
        parse_config({"backends": [{"name": "t", "kind": "nosuch", "url": "http://x"}]})


def test_nothing_outside_a_vendor_folder_names_a_vendor_in_code() -> None:
    """No string equal to a vendor kind and no identifier naming one, outside adapters/<vendor>/ and the registry
    (prose in docstrings and help texts may name the vendors)."""
    kinds = {"runai", "modelarts"}
    files = [p for root in ("gateway", "mappings", "simulators", "adapters") for p in (ROOT / root).rglob("*.py")
             if not any(part in kinds for part in p.relative_to(ROOT).parts)
             and p.relative_to(ROOT).as_posix() != "adapters/registry.py"]
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            words: list[str] = []
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found += [f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}" for k in kinds
                          if node.value.strip().lower() == k]
            elif isinstance(node, ast.Name):
                words = [node.id]
            elif isinstance(node, ast.Attribute):
                words = [node.attr]
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                words = [node.name]
            hits = [w for w in words if w.lower() in kinds or any(f"{k}_" in w.lower() or f"_{k}" in w.lower()
                                                                   for k in kinds)]
            found += [f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}: {w}" for w in hits]
    assert len(files) > 40
    assert found == []
