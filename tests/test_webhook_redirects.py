"""A webhook receiver that answers with a redirect does not get the signed payload re-sent elsewhere: the
delivery fails with the status (issue 29, item 5)."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

from tests.conftest import eventually, free_port, gateway_config
from tests.gwkit import spec, start_gateway


async def test_a_redirecting_webhook_is_a_failed_delivery_and_nothing_goes_elsewhere(tmp_path: Path) -> None:
    elsewhere: list[bytes] = []
    redirected: list[int] = []
    port = free_port()

    async def redirect(request: web.Request) -> web.Response:
        await request.read()
        redirected.append(1)
        raise web.HTTPTemporaryRedirect(f"http://127.0.0.1:{port}/elsewhere")

    async def sink(request: web.Request) -> web.Response:
        elsewhere.append(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", redirect)
    app.router.add_post("/elsewhere", sink)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    gw = await start_gateway(gateway_config(f"sqlite+aiosqlite:///{tmp_path}/w.db", tenant_extra={
        "alpha": {"webhooks": [{"url": f"http://127.0.0.1:{port}/hook", "secret": "redirect-hook"}]}}))
    try:
        await gw.submit(spec("runai", "hooked"))

        async def tried_twice() -> bool:
            return len(redirected) >= 2  # retried after the failed delivery

        assert await eventually(tried_twice, within=30)
        assert elsewhere == [], [json.loads(b) for b in elsewhere]
    finally:
        await gw.c.close()
        await runner.cleanup()


async def test_every_answer_carries_the_security_headers(tmp_path: Path) -> None:
    """Issue 29, item 7: the /ui redirect, an unknown /ui path, an API error and an API answer alike."""
    gw = await start_gateway(gateway_config(f"sqlite+aiosqlite:///{tmp_path}/h.db"))
    try:
        for path in ("/ui", "/ui/nope.js", "/v1/jobs/0123", "/v1/backends", "/healthz", "/ui/"):
            async with gw.c.get(path, allow_redirects=False, headers={"Authorization": "Bearer alpha-key-123"}) as r:
                assert r.headers.get("X-Content-Type-Options") == "nosniff", (path, r.status)
                assert "default-src" in r.headers.get("Content-Security-Policy", ""), (path, r.status)
        async with gw.c.get("/ui/") as r:  # the dashboard's own policy is kept
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    finally:
        await gw.c.close()
