"""GET /ga4gh/tes/v1/tasks answers a page in a constant number of store queries, whatever the page holds
(it made one or two per task): counted on the SQLite engine while the handler serves pages of 3 and 60."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from sqlalchemy import event

from gateway.api import tes
from gateway.api.http import CONFIG, PRINCIPAL, SERVICE
from tests.fast.conftest import ALPHA, World


async def _list(world: World, query: str) -> tuple[dict[str, Any], int]:
    app = web.Application()
    app[SERVICE], app[CONFIG] = world.svc, world.svc.config
    request = make_mocked_request("GET", f"/ga4gh/tes/v1/tasks?{query}", app=app)
    request[PRINCIPAL] = ALPHA
    statements: list[str] = []

    def count(conn: Any, cursor: Any, sql: str, *rest: Any) -> None:
        statements.append(sql)

    engine = world.store.db.sync_engine
    assert engine is not None
    event.listen(engine, "before_cursor_execute", count)
    try:
        resp = await tes.list_tasks(request)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert isinstance(resp, web.Response) and resp.text is not None
    return json.loads(resp.text), len(statements)


async def test_a_page_of_tasks_costs_the_same_queries_however_long(world: World) -> None:
    for i in range(60):
        await world.submit(f"t{i}")
    for view in ("BASIC", "FULL"):
        small, few = await _list(world, f"view={view}&page_size=3")
        large, many = await _list(world, f"view={view}&page_size=60")
        assert len(small["tasks"]) == 3 and len(large["tasks"]) == 60
        assert many == few, (view, few, many)
        assert all(t["logs"][0]["metadata"]["backend"] == "fake" for t in large["tasks"])
