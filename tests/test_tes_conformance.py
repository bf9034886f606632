"""GA4GH's own TES conformance runner (elixir-cloud-aai/openapi-test-runner, in ../shared/tools) against a live
gateway, once per backend, authenticating as it can: HTTP Basic with the API key as the password."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.api.app import create_app
from tests.conftest import AppThread, gateway_config

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT.parent / "shared" / "tools" / "openapi-test-runner-552ff3c.tar.gz"
# What cannot pass against simulators, and why: the simulators run no commands.
NEEDS_A_REAL_RUN = {
    ("tests/create_task_ignore_error.yml", "get_task"):
        "the first executor's command is `ERROR`, which must really fail for the task to stop there and for the "
        "second task to log two executors; the simulators run no commands, so every executor 'succeeds' and the "
        "task has one run to log",
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runner unpacked and installed in a venv of its own (its pins are not ours): its executable."""
    if not RUNNER.exists():
        pytest.skip(f"GA4GH's conformance runner is not at {RUNNER} (the shared folder beside the checkout)")
    home = tmp_path_factory.mktemp("otr")
    with tarfile.open(RUNNER) as tar:
        tar.extractall(home, filter="data")
    src = home / "openapi-test-runner"
    venv = home / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for args in (["-r", "requirements.txt"], ["-e", "."]):
        done = subprocess.run(pip + args, cwd=src, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"installing the conformance runner failed: {done.stderr[-2000:]}"
    return venv / "bin" / "openapi-test-runner"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppThread]:
    db = tmp_path_factory.mktemp("conformance") / "tjg.db"
    # The runner cannot pass backend_parameters: each tenant's default backend picks the vendor.
    # Its tasks stage s3://my-object-store files. ModelArts mounts OBS and NFS only, so there such a task is
    # refused (400, see tests/test_tes.py) unless the deployment says where that bucket's data is for ModelArts,
    # as one using S3 data there must: here, mirrored in OBS.
    mirror = {"storage_rules": [{"from": "s3://my-object-store/", "to": "obs://my-object-store-mirror/"}]}
    cfg = gateway_config(f"sqlite+aiosqlite:///{db}", tenant_extra={"alpha": {"default_backend": "runai"},
                                                                     "beta": {"default_backend": "modelarts"}},
                         per_backend={"modelarts": mirror})
    with AppThread(lambda: create_app(cfg)) as gw:
        yield gw


def _cases(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [(ph["phase_name"], t["test_name"], c["status"], c.get("message") or "")
            for ph in report["phases"] for t in ph["tests"] for c in t["cases"]]


@pytest.mark.parametrize(("backend", "key"), [("runai", "alpha-key-123"), ("modelarts", "beta-key-456")])
def test_the_ga4gh_conformance_runner_passes_all_but_what_needs_a_real_run(runner: Path, live: AppThread,
                                                                          tmp_path: Path, backend: str,
                                                                          key: str) -> None:
    host = live.url.removeprefix("http://")
    # The runner appends v1/... to the server it is given; credentials in the URL are its only way to log in.
    server = f"http://tes-user:{key}@{host}/ga4gh/tes/"
    done = subprocess.run([str(runner), "report", "--server", server, "--version", "1.1.0",
                           "--output_path", str(tmp_path)], cwd=runner.parent.parent.parent / "openapi-test-runner",
                          capture_output=True, text=True, timeout=600)
    assert (tmp_path / "report.json").exists(), done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    print(f"conformance on {backend}: {report['summary']}")  # (shown with -s)
    cases = _cases(report)
    failed = [(p, t, m) for p, t, s, m in cases if s != "PASS" and (p, t) not in NEEDS_A_REAL_RUN]
    assert not failed, failed
    # It ran (a runner that skipped everything passes nothing): every test file, on this backend.
    assert report["summary"]["passed"] >= 170 and report["summary"]["skipped"] == 0, report["summary"]
    assert {p for p, _, _, _ in cases} >= {"tests/create_task_functional.yml", "tests/filter_task_by_tag.yml",
                                           "tests/cancel_task_functional.yml", "tests/service_info.yml"}
    excused = {(p, t) for p, t, s, _ in cases if s != "PASS"}
    assert excused <= set(NEEDS_A_REAL_RUN)
    # The tasks it made ran where its tenant's default sends them.
    import requests

    jobs = requests.get(f"{live.url}/v1/jobs", params={"limit": 500}, headers={"Authorization": f"Bearer {key}"},
                        timeout=30).json()["jobs"]
    assert jobs and {j["backend"] for j in jobs} == {backend}
