"""The CLI in process (no server, no subprocess): the commands that need no gateway, its usage errors and its
exit codes, as a user meets them."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import __version__
from gateway.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _keep_sigpipe() -> Iterator[None]:
    """main() restores the default SIGPIPE as a Unix tool does; give the test process its own back."""
    before = signal.getsignal(signal.SIGPIPE)
    yield
    signal.signal(signal.SIGPIPE, before)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as stop:  # argparse's own exits (--help, --version, usage errors)
        rc = int(stop.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "--version")
    assert rc == 0 and __version__ in out
    rc, out, _ = run(capsys, "--help")
    assert rc == 0 and "exit codes" in out and "examples" in out


def test_translate_prints_the_vendor_request_and_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    for backend in ("runai", "modelarts"):
        rc, out, _ = run(capsys, "translate", "--backend", backend, "--config", str(ROOT / "config/gateway.yaml"),
                         str(ROOT / "examples/single-gpu.yaml"))
        doc = json.loads(out)
        assert rc == 0 and doc["backend"] == backend and doc["request"]["method"] == "POST"
        assert {e["field"] for e in doc["report"]} >= {"name", "image"}


def test_translate_problems_are_one_line_or_with_o_json_a_problem_document_and_exit_1(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("name: x\nimage: y\nresources: {gpus: -1}\n")
    config = str(ROOT / "config/gateway.yaml")
    rc, _, err = run(capsys, "translate", "--backend", "runai", "--config", config, str(spec))
    assert rc == 1 and err.startswith("tjg: error: invalid job spec: resources.gpus") and err.count("\n") == 1
    rc, _, err = run(capsys, "translate", "--backend", "runai", "--config", config, "-o", "json", str(spec))
    assert rc == 1 and json.loads(err)["errors"][0]["loc"][-1] == "gpus"


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "phases", "nosuch")
    assert rc == 2 and "unknown backend kind 'nosuch' (known: " in err and "modelarts" in err and "runai" in err
    rc, _, err = run(capsys, "simulate", "runai", "--port", "99999")
    assert rc == 2 and "not a port number" in err


def test_phases_and_completion_come_from_the_registry_and_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "phases", "modelarts")
    assert rc == 0 and json.loads(out)["Terminated"] == {"phase": "CANCELLED", "terminal": True}
    rc, out, _ = run(capsys, "completion", "bash")
    assert rc == 0 and "complete" in out and "submit" in out and "--source-action" in out


def test_version_and_help_load_no_command_module() -> None:
    """Issue 30: every command took ~0.35 s, --version included. --version and --help import only the parser:
    not aiohttp, the vendors, the store or the commands' modules."""
    import subprocess
    import sys

    probe = ("import sys; from gateway.cli.main import main\n"
             "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
             "heavy = [m for m in ('aiohttp', 'sqlalchemy', 'yaml', 'adapters.registry', 'gateway.client',"
             " 'gateway.cli.client_cmds', 'gateway.cli.server_cmds') if m in sys.modules]\n"
             "print('HEAVY:' + ','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "tjg (trainjob-gateway)" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "HEAVY:", f"imported for --version: {out.stdout}"


def test_a_client_command_loads_neither_aiohttp_nor_the_models() -> None:
    """Issue 30: `tjg list` took ~0.35 s, mostly imports. A client command calls the gateway with the standard
    library (gateway.wire): aiohttp, pydantic, YAML and the vendors stay unloaded."""
    import subprocess
    import sys

    probe = ("import sys; from gateway.cli.main import main\n"
             "try:\n    main(['list', '--url', 'http://127.0.0.1:9', '--api-key', 'k'])\n"
             "except SystemExit as e:\n    print('EXIT:', e.code)\n"
             "heavy = [m for m in ('aiohttp', 'pydantic', 'sqlalchemy', 'yaml', 'adapters.registry', "
             "'gateway.core.models') if m in sys.modules]\n"
             "print('HEAVY:' + ','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "cannot reach the gateway at http://127.0.0.1:9" in out.stderr, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY:", f"imported for `tjg list`: {out.stdout}"
