"""What a new user trips over, each checked with the real `tjg` in a subprocess against a real
`tjg serve` running the shipped default config (ports and store moved into a temporary folder)."""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.procs import ROOT, free_port
from tests.conftest import FAST_SYNC

pytestmark = pytest.mark.slow

KEY = "demo-key"


def tjg(*args: str, url: str | None = None, env: dict[str, str] | None = None, timeout: float = 60,
        key: str | None = KEY) -> subprocess.CompletedProcess[str]:
    """Run the real CLI; --url and --api-key go after the command, as a user types them."""
    full = [sys.executable, "-m", "gateway", *args]
    if url is not None:
        full += ["--url", url]
    if key is not None:
        full += ["--api-key", key]
    e = {k: v for k, v in os.environ.items() if not k.startswith("TJG_")}
    e.update(env or {})
    return subprocess.run(full, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=e)


def one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    """stderr must be one plain line, no traceback."""
    assert "Traceback" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    return lines[0]


def default_config(tmp: Path, **server: Any) -> tuple[Path, str, dict[str, Any]]:
    """config/gateway.yaml as shipped, on free ports, with its store (and so the simulators' state)
    in `tmp`."""
    cfg = yaml.safe_load((ROOT / "config" / "gateway.yaml").read_text())
    port = free_port()
    cfg["server"]["port"] = port
    cfg["server"].update(server)
    cfg["store"]["url"] = f"sqlite+aiosqlite:///{tmp}/var/tjg.db"
    for b in cfg["backends"]:
        b["url"] = f"http://127.0.0.1:{free_port()}"
        b["sync_interval"] = 0.5
        b.update(FAST_SYNC)
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, f"http://127.0.0.1:{port}", cfg


class Serve:
    """`tjg serve --config` as a process."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.p: subprocess.Popen[bytes] | None = None

    def start(self, url: str) -> Serve:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TJG_")}
        self.p = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(self.config)],
                                  cwd=ROOT, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.p.poll() is None, self.log.read_text()
            if "listening on" in self.log.read_text():
                return self
            time.sleep(0.1)
        raise AssertionError(self.log.read_text())

    def stop(self) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[Serve, str, Path]]:
    cfg, url, _ = default_config(tmp_path)
    s = Serve(cfg, tmp_path / "serve.log").start(url)
    yield s, url, cfg
    s.stop()


def submit(url: str, tmp: Path, name: str, backend: str = "runai", **env: str) -> str:
    spec = {"name": name, "backend": backend, "image": "python:3.11", "command": ["python", "-c", "print(1)"],
            "env": {"SIM_RUN_SECONDS": "1", **env}}
    f = tmp / f"{name}.yaml"
    f.write_text(yaml.safe_dump(spec))
    p = tjg("submit", str(f), "-o", "json", url=url)
    assert p.returncode == 0, p.stderr
    return str(json.loads(p.stdout)["id"])


def wait_phase(url: str, job_id: str, phases: set[str], within: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        job = json.loads(tjg("get", job_id, "-o", "json", url=url).stdout)
        if job["status"]["phase"] in phases or time.monotonic() > deadline:
            return dict(job)
        time.sleep(0.3)


# 1 -------------------------------------------------------------------------------------------
def _open_streams(url: str) -> float:
    """The gateway's own count of open watch streams (GET /metrics)."""
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("tjg_watch_streams "))


def test_sigterm_with_watchers_attached_stops_within_5_seconds(gateway: tuple[Serve, str, Path],
                                                               tmp_path: Path) -> None:
    serve, url, _ = gateway
    job = submit(url, tmp_path, "hangs", SIM_OUTCOME="hang")
    e = {k: v for k, v in os.environ.items() if not k.startswith("TJG_")}
    watchers = [subprocess.Popen([sys.executable, "-m", "gateway", *cmd, "--url", url, "--api-key", KEY],
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
                for cmd in (["get", job, "--watch"], ["list", "--watch"])]
    deadline = time.monotonic() + 60  # both streams attached, however slowly the two CLIs start on a busy machine
    while _open_streams(url) < 2:
        assert time.monotonic() < deadline and all(w.poll() is None for w in watchers), "the watchers never attached"
        time.sleep(0.05)
    assert all(w.poll() is None for w in watchers)
    assert serve.p is not None
    started = time.monotonic()
    serve.p.send_signal(signal.SIGTERM)
    serve.p.wait(5)  # raises if it is still up after 5 s
    assert time.monotonic() - started < 5
    for w in watchers:
        _, err = w.communicate(timeout=5)
        assert w.returncode == 3, err
        assert "closed the stream" in err and "Traceback" not in err
    log = serve.log.read_text()
    assert "unhandled_error" not in log and "Traceback" not in log


# 2 -------------------------------------------------------------------------------------------
class _Html(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>not a gateway</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def odd_servers() -> Iterator[dict[str, str]]:
    html = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Html)
    threading.Thread(target=html.serve_forever, daemon=True).start()
    drop, silent = socket.socket(), socket.socket()
    for s in (drop, silent):
        s.bind(("127.0.0.1", 0))
        s.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def dropper() -> None:
        drop.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = drop.accept()
                c.recv(65536)
                c.close()
            except OSError:
                pass

    threading.Thread(target=dropper, daemon=True).start()
    yield {"html": f"http://127.0.0.1:{html.server_address[1]}", "drop": f"http://127.0.0.1:{drop.getsockname()[1]}",
           "silent": f"http://127.0.0.1:{silent.getsockname()[1]}", "none": f"http://127.0.0.1:{free_port()}"}
    stop.set()
    html.shutdown()
    for s in (drop, silent, *held):
        s.close()


@pytest.mark.parametrize(("case", "args", "code", "words"), [
    ("no scheme", ["list"], 2, "did you mean http://"),
    ("bad scheme", ["list"], 2, "not an http:// or https:// URL"),
    ("not the gateway", ["list"], 3, "not the gateway's JSON"),
    ("drops the connection", ["list"], 3, "closed before the answer"),
    ("never answers", ["list", "--timeout", "1.5"], 3, "no answer within 1.5s"),
    ("no server, get --watch", ["get", "x", "--watch"], 3, "cannot reach the gateway"),
])
def test_client_problems_are_one_line_with_the_documented_exit_code(odd_servers: dict[str, str], case: str,
                                                                   args: list[str], code: int, words: str) -> None:
    url = {"no scheme": "127.0.0.1:8080", "bad scheme": "htp://127.0.0.1:8080", "not the gateway": odd_servers["html"],
           "drops the connection": odd_servers["drop"], "never answers": odd_servers["silent"],
           "no server, get --watch": odd_servers["none"]}[case]
    started = time.monotonic()
    p = tjg(*args, url=url, timeout=30)
    assert p.returncode == code, p.stderr
    assert words in one_line_error(p)
    assert time.monotonic() - started < 20


# 3 -------------------------------------------------------------------------------------------
def test_serve_port_problems_are_one_line_and_exit_2(tmp_path: Path) -> None:
    cfg, _, raw = default_config(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = str(busy.getsockname()[1])
        p = tjg("serve", "--config", str(cfg), "--port", port, key=None)
        assert p.returncode == 2
        line = one_line_error(p)
        assert port in line and "server.port" in line
        sim_port = int(raw["backends"][1]["url"].rsplit(":", 1)[1])
        with socket.socket() as busy_sim:
            busy_sim.bind(("127.0.0.1", sim_port))
            busy_sim.listen(1)
            p = tjg("serve", "--config", str(cfg), key=None)
        assert p.returncode == 2
        line = one_line_error(p)
        assert str(sim_port) in line and "backends[1].url" in line
    p = tjg("serve", "--config", str(cfg), "--port", "99999", key=None)
    assert p.returncode == 2 and "99999 is not a port number" in p.stderr and "Traceback" not in p.stderr


# 4 -------------------------------------------------------------------------------------------
def test_restart_on_the_default_config_continues_a_running_job(gateway: tuple[Serve, str, Path],
                                                              tmp_path: Path) -> None:
    serve, url, cfg = gateway
    runai = submit(url, tmp_path, "survives", SIM_RUN_SECONDS="8")
    modelarts = submit(url, tmp_path, "survives-too", backend="modelarts", SIM_RUN_SECONDS="8")
    assert wait_phase(url, runai, {"RUNNING"})["status"]["phase"] == "RUNNING"
    assert wait_phase(url, modelarts, {"RUNNING"})["status"]["phase"] == "RUNNING"
    assert serve.p is not None
    serve.p.send_signal(signal.SIGTERM)
    serve.p.wait(10)
    Serve(cfg, tmp_path / "serve2.log").start(url)
    try:
        for job_id in (runai, modelarts):
            job = wait_phase(url, job_id, {"SUCCEEDED", "CANCELLED", "FAILED"}, within=40)
            assert job["status"]["phase"] == "SUCCEEDED", job["status"]
    finally:
        subprocess.run(["pkill", "-f", f"serve --config {cfg}"], check=False)


# 5 -------------------------------------------------------------------------------------------
def test_watch_and_wait_exit_4_when_the_job_fails_and_0_when_it_succeeds(gateway: tuple[Serve, str, Path],
                                                                        tmp_path: Path) -> None:
    _, url, _ = gateway
    bad = submit(url, tmp_path, "fails", backend="modelarts", SIM_OUTCOME="failed")
    good = submit(url, tmp_path, "works")
    p = tjg("get", bad, "--watch", url=url)
    assert p.returncode == 4 and f"{bad} ended FAILED" in p.stdout, p.stdout + p.stderr
    assert tjg("wait", bad, url=url).returncode == 4
    p = tjg("wait", good, url=url)
    assert p.returncode == 0 and f"{good} ended SUCCEEDED" in p.stdout


# 6 -------------------------------------------------------------------------------------------
def test_errors_are_one_plain_line_and_local_problems_are_not_http(gateway: tuple[Serve, str, Path],
                                                                   tmp_path: Path) -> None:
    _, url, _ = gateway
    p = tjg("submit", str(tmp_path / "missing.yaml"), url=url)
    assert p.returncode == 2 and "cannot read" in one_line_error(p) and "422" not in p.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n  image: [\n")
    p = tjg("submit", str(bad), url=url)
    assert p.returncode == 2 and f"{bad}:2:8:" in one_line_error(p)
    p = tjg("get", "nosuchjob", url=url)
    assert p.returncode == 1 and one_line_error(p) == "tjg: error: job nosuchjob not found"
    p = tjg("get", "nosuchjob", "-o", "json", url=url)
    assert p.returncode == 1 and json.loads(p.stderr)["status"] == 404
    p = tjg("submit", str(ROOT / "examples" / "single-gpu.yaml"), "--backend", "nope", url=url)
    assert p.returncode == 1 and "backend" in one_line_error(p)


# 7 -------------------------------------------------------------------------------------------
def test_a_submit_waiting_on_a_failing_vendor_shows_progress_and_says_unconfirmed(tmp_path: Path) -> None:
    cfg, url, raw = default_config(tmp_path, submit_wait_seconds=3)
    raw["backends"][0]["simulate_faults"] = {"http503": 1.0}
    cfg.write_text(yaml.safe_dump(raw))
    s = Serve(cfg, tmp_path / "serve.log").start(url)
    try:
        spec = tmp_path / "s.yaml"
        spec.write_text(yaml.safe_dump({"name": "slow", "backend": "runai", "image": "python:3.11"}))
        p = tjg("submit", str(spec), url=url)
        assert p.returncode == 0, p.stderr
        assert "handing the job to runai: waiting for the gateway" in p.stderr
        assert "has not confirmed it yet" in p.stderr and "never creates it twice" in p.stderr
    finally:
        s.stop()


# 8 -------------------------------------------------------------------------------------------
def test_list_logs_delete_backend_and_paging_say_what_is_true(gateway: tuple[Serve, str, Path],
                                                              tmp_path: Path) -> None:
    _, url, _ = gateway
    job = submit(url, tmp_path, "cancel-me", SIM_OUTCOME="hang")
    done = submit(url, tmp_path, "with-logs", backend="modelarts")
    wait_phase(url, job, {"RUNNING"})
    assert tjg("cancel", job, url=url).returncode == 0
    assert wait_phase(url, job, {"CANCELLED"})["status"]["phase"] == "CANCELLED"
    row = next(ln for ln in tjg("list", url=url).stdout.splitlines() if ln.startswith(job))
    assert "CANCELLED" in row and "Running" not in row
    wait_phase(url, done, {"SUCCEEDED"})
    assert tjg("logs", done, "--tail", "0", url=url).stdout == ""
    assert len(tjg("logs", done, "--tail", "1", url=url).stdout.strip().splitlines()) == 1
    p = tjg("logs", job, url=url)
    assert p.returncode == 1 and "cannot show logs" in one_line_error(p)
    assert "deleted" in tjg("delete", job, url=url).stdout
    again = tjg("delete", job, url=url)
    assert again.returncode == 0 and "already deleted" in again.stderr
    assert re.search(r"deleted:\s+yes", tjg("get", job, url=url).stdout)
    p = tjg("list", "--backend", "nope", url=url)
    assert p.returncode == 1 and "unknown backend 'nope'" in one_line_error(p)
    submit(url, tmp_path, "one-more")  # two listed jobs, one a page
    p = tjg("list", "--limit", "1", url=url)
    hint = re.search(r"--page-token (\S+)", p.stderr)
    assert hint is not None, p.stderr
    second = tjg("list", "--limit", "1", "--page-token", hint.group(1), url=url)
    assert second.returncode == 0 and second.stdout != p.stdout


# 9 -------------------------------------------------------------------------------------------
def test_the_demo_key_is_named_when_used_and_the_readme_commands_are_whole(gateway: tuple[Serve, str, Path]
                                                                          ) -> None:
    _, url, _ = gateway
    p = tjg("list", url=url, key=None)
    assert p.returncode == 0 and "using the demo config's key 'demo-key'" in p.stderr
    assert "demo-key" not in tjg("list", url=url).stderr  # said only when the key is not given
    readme = (ROOT / "README.md").read_text()
    for line in readme.splitlines():
        if line.lstrip().startswith("curl"):
            assert "..." not in line and "…" not in line, line
    for word in ("tjg suspend", "tjg resume", "tjg delete", "tjg wait"):
        assert word in readme
