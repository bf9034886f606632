"""The CLI a user of SkyPilot or dstack expects: shell completion, colour only on a terminal, -o on every
read command, and the typed client it shares with scripts."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gateway.api.app import create_app
from gateway.client import AsyncClient, Client
from gateway.core.errors import NotFound, ValidationError
from gateway.core.models import Job
from tests.conftest import AppThread, gateway_config

ROOT = Path(__file__).resolve().parent.parent
KEY = "alpha-key-123"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppThread]:
    db = tmp_path_factory.mktemp("cli") / "tjg.db"
    with AppThread(lambda: create_app(gateway_config(f"sqlite+aiosqlite:///{db}"))) as gw:
        yield gw


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("TJG_") and k != "NO_COLOR"}
    return {**e, **extra}


def tjg(live: AppThread, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args, "--url", live.url, "--api-key", KEY],
                          capture_output=True, text=True, cwd=ROOT, env=env(**extra), timeout=60)


def on_a_terminal(live: AppThread, *args: str, **extra: str) -> str:
    """Run tjg with stdout on a pseudo-terminal; what it wrote."""
    leader, follower = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "gateway", *args, "--url", live.url, "--api-key", KEY],
                         stdout=follower, stderr=subprocess.DEVNULL, cwd=ROOT, env=env(TERM="xterm", **extra))
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    p.wait(30)
    os.close(leader)
    return out.decode()


def test_colour_only_on_a_terminal_and_never_with_no_color(live: AppThread) -> None:
    job = Client(live.url, KEY).submit({"name": "colourful", "backend": "runai", "image": "x",
                                        "env": {"SIM_OUTCOME": "hang"}})
    for _ in range(100):
        if Client(live.url, KEY).get(job.id).status.phase.value == "RUNNING":
            break
        time.sleep(0.1)
    assert "\x1b[32m" in on_a_terminal(live, "list")  # RUNNING in green
    assert "\x1b[" not in on_a_terminal(live, "list", NO_COLOR="1")
    piped = tjg(live, "list")
    assert piped.returncode == 0 and "colourful" in piped.stdout and "\x1b[" not in piped.stdout


@pytest.mark.parametrize("command", [["list"], ["get", "{id}"], ["events", "{id}"], ["backends"], ["metrics", "{id}"],
                                     ["usage"]])
def test_every_read_command_speaks_all_four_formats(live: AppThread, command: list[str]) -> None:
    job = Client(live.url, KEY).submit({"name": "formats", "backend": "modelarts", "image": "x"})
    args = [a.replace("{id}", job.id) for a in command]
    for fmt, parse in (("json", json.loads), ("yaml", yaml.safe_load)):
        p = tjg(live, *args, "-o", fmt)
        assert p.returncode == 0, p.stderr
        assert parse(p.stdout) is not None
    for fmt in ("table", "wide"):
        p = tjg(live, *args, "-o", fmt)
        assert p.returncode == 0 and p.stdout.strip() and not p.stdout.lstrip().startswith("{"), p.stdout


def test_bash_completion_completes_commands_flags_choices_and_spec_paths() -> None:
    script = subprocess.run([sys.executable, "-m", "gateway", "completion", "bash"], capture_output=True, text=True,
                            cwd=ROOT, timeout=60).stdout
    fn = re.search(r"^complete .*-F (\S+) tjg$", script, re.M)
    assert fn, script[-300:]
    probe = script + f"""
COMP_WORDS=(tjg mi); COMP_CWORD=1; {fn[1]}; echo "1:${{COMPREPLY[*]}}"
COMP_WORDS=(tjg list --ki); COMP_CWORD=2; {fn[1]}; echo "2:${{COMPREPLY[*]}}"
COMP_WORDS=(tjg get ID -o ""); COMP_CWORD=4; {fn[1]}; echo "3:${{COMPREPLY[*]}}"
COMP_WORDS=(tjg submit examples/single); COMP_CWORD=2; {fn[1]}; echo "4:${{COMPREPLY[*]}}"
COMP_WORDS=(tjg phases ""); COMP_CWORD=2; {fn[1]}; echo "5:${{COMPREPLY[*]}}"
"""
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30, cwd=ROOT).stdout
    assert "1:migrate" in out and "2:--kind" in out and "3:table wide json yaml" in out
    assert "4:examples/single-gpu.yaml" in out  # a spec path completes into the folder, not only to it
    assert "5:modelarts runai" in out


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed here (apt-get install zsh)")
def test_zsh_completion_is_valid_zsh(tmp_path: Path) -> None:
    script = subprocess.run([sys.executable, "-m", "gateway", "completion", "zsh"], capture_output=True, text=True,
                            cwd=ROOT, timeout=60).stdout
    path = tmp_path / "_tjg"
    path.write_text(script)
    check = subprocess.run(["zsh", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    assert script.startswith("#compdef tjg") and "migrate:'move a job to another backend" in script


def test_the_typed_client_returns_models_and_raises_the_error_tree(live: AppThread) -> None:
    tjg_ = Client(live.url, KEY)
    job = tjg_.submit({"name": "typed", "backend": "runai", "image": "x", "env": {"SIM_RUN_SECONDS": "1"}},
                      idempotency_key="typed-1")
    assert isinstance(job, Job) and tjg_.submit({"name": "typed", "backend": "runai", "image": "x",
                                                 "env": {"SIM_RUN_SECONDS": "1"}}, idempotency_key="typed-1").id == job.id
    assert tjg_.wait(job.id).status.phase.value == "SUCCEEDED"
    assert job.id in [j.id for j in tjg_.list_jobs(backend="runai")]
    with pytest.raises(NotFound):
        tjg_.get("0" * 32)
    with pytest.raises(ValidationError) as err:
        tjg_.submit({"name": "Bad Name", "backend": "runai", "image": "x"})
    assert err.value.status == 422 and err.value.errors and err.value.errors[0]["loc"] == ["name"]
    dry = tjg_.dry_run({"name": "dry", "backend": "modelarts", "image": "x"})
    assert dry.request.path.endswith("/training-jobs")

    import asyncio

    async def run() -> list[str]:
        async with AsyncClient(live.url, KEY) as a:
            return [b["name"] for b in await a.backends()]

    assert asyncio.run(run()) == ["runai", "modelarts"]


def test_tjg_scale_changes_replicas_and_says_why_it_cannot(live: AppThread) -> None:
    served = Client(live.url, KEY).submit({"name": "cli-serve", "backend": "modelarts", "kind": "inference",
                                           "image": "swr/s:1", "serving": {"port": 8080}})
    for _ in range(100):
        if Client(live.url, KEY).get(served.id).status.phase.value == "RUNNING":
            break
        time.sleep(0.1)
    ok = tjg(live, "scale", served.id, "--replicas", "3")
    assert ok.returncode == 0 and "scaling to 3 replica(s)" in ok.stdout, ok.stderr
    refused = tjg(live, "scale", served.id, "--replicas", "0")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "stop it" in refused.stderr


def test_a_closed_pipe_ends_quietly(live: AppThread) -> None:
    c = Client(live.url, KEY)
    for i in range(120):  # more JSON than a pipe holds, so tjg is still writing when head has gone
        c.submit({"name": f"piped-{i}", "backend": "runai", "image": "x", "labels": {"bulk": "yes"}})
    p = subprocess.run(f"{sys.executable} -m gateway list --all --limit 500 -o json --url {live.url} "
                       f"--api-key {KEY} | head -1",
                       shell=True, capture_output=True, text=True, cwd=ROOT, env=env(), timeout=60)
    assert p.stdout.strip() == "{" and "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr



def test_list_shows_deleted_jobs_on_request_and_wide_shows_reason_exit_gpu_and_attempt(live: AppThread) -> None:
    """Issue 30: deleted jobs vanished from every list though their records stay; the CLI never showed the
    reason, exit code, GPU utilization or idleness but in JSON."""
    c = Client(live.url, KEY)
    gone = c.submit({"name": "gone-later", "backend": "modelarts", "image": "x", "env": {"SIM_RUN_SECONDS": "1"}})
    failed = c.submit({"name": "fails-wide", "backend": "modelarts", "image": "x",
                       "env": {"SIM_OUTCOME": "failed", "SIM_EXIT_CODE": "3", "SIM_RUN_SECONDS": "1"}})
    c.delete(gone.id)
    for _ in range(200):
        if c.get(failed.id).status.terminal:
            break
        time.sleep(0.1)
    plain = tjg(live, "list", "--name-prefix", "gone-later")
    assert plain.returncode == 0 and gone.id not in plain.stdout
    shown = tjg(live, "list", "--name-prefix", "gone-later", "--deleted")
    assert shown.returncode == 0 and gone.id in shown.stdout and "(deleted)" in shown.stdout, shown.stdout
    wide = tjg(live, "list", "--name-prefix", "fails-wide", "-o", "wide")
    header, row = wide.stdout.splitlines()[:2]
    for col in ("REASON", "EXIT", "GPU%", "IDLE", "ATTEMPT"):
        assert col in header, header
    assert "user-error" in row and " 3 " in f" {row} ", row


def test_backends_says_what_each_cannot_do_per_kind_of_workload(live: AppThread) -> None:
    """Issue 30: `tjg backends` showed trainings' capabilities only (scaling nowhere, no suspend on ModelArts),
    though both work for inferences."""
    p = tjg(live, "backends")
    assert p.returncode == 0, p.stderr
    header, *rows = p.stdout.splitlines()
    assert "TRAININGS CANNOT" in header and "INFERENCES CANNOT" in header
    ma = next(r for r in rows if r.startswith("modelarts"))
    trainings, inferences = ma[header.index("TRAININGS CANNOT"):header.index("INFERENCES CANNOT")], \
        ma[header.index("INFERENCES CANNOT"):]
    assert "suspend" in trainings and "scale" in trainings, ma
    assert "scale" not in inferences and "suspend" not in inferences, ma


def test_a_job_is_addressed_by_a_unique_id_prefix_or_a_unique_name(live: AppThread) -> None:
    """Issue 30: `tjg get r50`, as docker and sky take ids; an ambiguous one names the candidates."""
    c = Client(live.url, KEY)
    one = c.submit({"name": "addressed-once", "backend": "modelarts", "image": "x"})
    twice = [c.submit({"name": "addressed-twice", "backend": "modelarts", "image": "x"}) for _ in range(2)]
    for ref in (one.id[:20], "addressed-once"):
        p = tjg(live, "get", ref, "-o", "json")
        assert p.returncode == 0 and json.loads(p.stdout)["id"] == one.id, (ref, p.stderr)
    p = tjg(live, "get", "addressed-twice")
    assert p.returncode == 2 and twice[0].id in p.stderr and twice[1].id in p.stderr, p.stderr
    p = tjg(live, "get", "nothing-by-this-name")
    assert p.returncode == 1 and "not found" in p.stderr, p.stderr


def test_logs_follow_prints_each_line_once_until_the_job_ends(live: AppThread) -> None:
    tjg_ = Client(live.url, KEY)
    job = tjg_.submit({"name": "follow-me", "backend": "modelarts", "image": "x",
                       "env": {"SIM_RUN_SECONDS": "40", "SIM_OUTCOME": "completed"}})
    p = tjg(live, "logs", "-f", job.id, "--interval", "0.2")
    assert p.returncode == 0, p.stderr
    assert f"-- {job.id}: SUCCEEDED" in p.stderr
    whole = tjg(live, "logs", job.id).stdout.splitlines()
    followed = p.stdout.splitlines()
    # Everything the log holds, in order, each line once (the polls overlapped: no line twice).
    assert followed == whole and len(whole) > 3
    assert any("job phase Running" in line for line in followed)
    assert "job phase Completed" in followed[-1] or any("Completed" in line for line in followed[-3:])
    # A job whose backend has no log endpoint: the same one-line error as without -f.
    other = tjg_.submit({"name": "no-logs", "backend": "runai", "image": "x", "env": {"SIM_RUN_SECONDS": "1"}})
    q = tjg(live, "logs", "-f", other.id)
    assert q.returncode == 1 and "cannot show logs" in q.stderr
