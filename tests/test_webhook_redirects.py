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
