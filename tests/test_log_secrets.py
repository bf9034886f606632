"""No secret in any log line (issue 29): a request head aiohttp cannot parse, with the API key in it, and a
webhook URL with a password, against a real `tjg serve`; scrubbing by shape catches what no one registered."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp
import yaml

from gateway.core.logs import scrub_text
from tests.conftest import eventually, free_port, leaked_lines
from tests.procs import Proc, wait_http


async def test_a_bad_request_head_and_a_webhook_password_never_reach_the_log(tmp_path: Path) -> None:
    port = free_port()
    cfg = {"server": {"host": "127.0.0.1", "port": port},
           "store": {"url": f"sqlite+aiosqlite:///{tmp_path}/t.db"}, "log_level": "info",
           "tenants": [{"name": "alpha", "api_keys": ["alpha-key-123"], "webhooks": [
               {"url": f"http://hookuser:hook-pass-9876@127.0.0.1:{free_port()}/hook", "secret": "hook-secret-123"}]}],
           "backends": [{"name": "modelarts", "kind": "modelarts", "url": f"http://127.0.0.1:{free_port()}",
                         "simulate": True, "simulate_speed": 20, "project_id": "0123456789abcdef0123456789abcdef",
                         "credentials": {"ak": "MAAK", "sk": "modelarts-sk-secret"}}]}
    (tmp_path / "gw.yaml").write_text(yaml.safe_dump(cfg))
    log = tmp_path / "gw.log"
    gw = Proc(["serve", "--config", str(tmp_path / "gw.yaml")], log).start()
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_http(url + "/healthz")
        # A bare LF after the Authorization header: aiohttp refuses the head and logs it.
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer alpha-key-123\nX-Bad: \x01\r\n\r\n")
            s.settimeout(5)
            assert s.recv(100).startswith(b"HTTP/1.") and True
        # A job's events go to the webhook, which nobody answers: each failed delivery is logged with its URL.
        async with aiohttp.ClientSession() as c, c.post(url + "/v1/jobs", headers={
                "Authorization": "Bearer alpha-key-123"}, json={"name": "w", "backend": "modelarts", "image": "x",
                                                               "env": {"SIM_RUN_SECONDS": "1"}}) as r:
            assert r.status == 201, await r.text()

        def logged() -> bool:
            text = log.read_text(errors="replace")
            return "webhook_delivery_failed" in text and "Error handling request" in text
        assert await eventually(lambda: asyncio.sleep(0, logged()), within=30)
    finally:
        gw.stop()
    text = log.read_text(errors="replace")
    assert "Bearer ***" in text and "hookuser:***@" in text  # what was there, scrubbed
    assert leaked_lines(text) == [], leaked_lines(text)
    for secret in ("alpha-key-123", "hook-pass-9876", "hook-secret-123", "modelarts-sk-secret"):
        assert secret not in text


def test_secret_shapes_are_scrubbed_whoever_logs_them() -> None:
    assert scrub_text("GET https://u:p%40ss@host/x") == "GET https://u:***@host/x"
    assert scrub_text("b'Authorization: Bearer abc.def\\nX'") == "b'Authorization: Bearer ***\\nX'"
    assert scrub_text("{'authorization': 'Basic dXNlcjpw'}") == "{'authorization': 'Basic ***'}"
    assert scrub_text('{"api_key": "k-1"}') == '{"api_key": "***"}'
    assert scrub_text("x-api-key: k123, next") == "x-api-key: ***, next"
    assert scrub_text("see http://host/path and s3://bucket/key") == "see http://host/path and s3://bucket/key"
