"""A store made before alembic (by release e9da23a, with tests/fixtures/make_old_store.py) upgrades at
start-up with everything intact, on SQLite and on PostgreSQL: every job, label, event, idempotency key and
webhook outbox row, read back through the API of the new gateway."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, inspect, select

from gateway.store import Store
from gateway.store.schema import idempotency_keys, job_labels, jobs, metadata, outbox, transitions
from tests.conftest import fresh_pg_database, gateway_config, require_postgres
from tests.gwkit import ALPHA, BETA, OPS, start_gateway

FIXTURES = Path(__file__).parent / "fixtures"
# What the old store holds (counted in it before any upgrade).
COUNTS = {"jobs": 11, "job_labels": 4, "transitions": 25, "idempotency_keys": 2, "webhook_outbox": 23}
TABLES = {"jobs": jobs, "job_labels": job_labels, "transitions": transitions,
          "idempotency_keys": idempotency_keys, "webhook_outbox": outbox}


async def _check(url: str, made: dict[str, str]) -> None:
    store = Store(url)
    assert await store.migrate() == "0007"
    assert await store.migrate() == "0007"  # a second start changes nothing
    counts = await store.db.run(lambda conn: {name: conn.execute(select(func.count()).select_from(t)).scalar()
                                              for name, t in TABLES.items()}, write=False)
    assert counts == COUNTS

    def shape(conn: Any) -> dict[str, tuple[set[str], set[str]]]:
        insp = inspect(conn)
        return {t: ({c["name"] for c in insp.get_columns(t)}, {i["name"] for i in insp.get_indexes(t)})
                for t in metadata.tables}

    # The upgraded schema is the one the queries expect: every table's columns and indexes, no fewer.
    got = await store.db.run(shape, write=False)
    for name, table in metadata.tables.items():
        assert got[name][0] == {c.name for c in table.columns}, name
        assert got[name][1] >= {i.name for i in table.indexes}, name
    await store.close()
    # Backends that do not answer: the upgraded store is read, nothing on it is synced away.
    gw = await start_gateway(gateway_config(url, simulate=False))
    try:
        expected = {"runai_succeeded": "SUCCEEDED", "runai_failed": "FAILED", "runai_cancelled": "CANCELLED",
                    "modelarts_training": "SUCCEEDED", "tes_task": "SUCCEEDED"}
        for key, phase in expected.items():
            status, job = await gw.call("GET", f"/v1/jobs/{made[key]}", headers=OPS)
            assert status == 200 and job["status"]["phase"] == phase, (key, job)
        _, ok = await gw.call("GET", f"/v1/jobs/{made['runai_succeeded']}")
        assert ok["labels"] == {"team": "vision", "run": "1"}
        _, dist = await gw.call("GET", f"/v1/jobs/{made['runai_distributed']}", headers=BETA)
        assert dist["spec"]["resources"]["nodes"] == 2
        _, gone = await gw.call("GET", f"/v1/jobs/{made['modelarts_deleted']}")
        assert gone["deleted"] is True
        _, source = await gw.call("GET", f"/v1/jobs/{made['migrated_source']}")
        assert source["migrated_to"] == made["migrated_target"]
        _, evs = await gw.call("GET", f"/v1/jobs/{made['runai_succeeded']}/events?vendor=false")
        assert next(e["to_phase"] for e in evs["events"]) == "QUEUED"
        assert [e["to_phase"] for e in evs["events"]][-1] == "SUCCEEDED"
        _, listed = await gw.call("GET", "/v1/jobs?label=team=vision")
        assert [j["id"] for j in listed["jobs"]] == [made["runai_succeeded"]]
        _, task = await gw.call("GET", f"/ga4gh/tes/v1/tasks/{made['tes_task']}?view=FULL")
        assert task["state"] == "COMPLETE" and task["tags"] == {"workflow": "w1"}
        # The idempotency key of the old store still replays its job (same body), and refuses another body.
        body = {"name": "ok", "backend": "runai", "image": "python:3.11", "command": ["python", "t.py"],
                "env": {"SIM_RUN_SECONDS": "1"}, "labels": {"team": "vision", "run": "1"}}
        status, replay = await gw.call("POST", "/v1/jobs", headers={**ALPHA, "Idempotency-Key": "key-ok"},
                                       json=body)
        assert status == 201 and replay["id"] == made["runai_succeeded"], replay
        status, _ = await gw.call("POST", "/v1/jobs", headers={**ALPHA, "Idempotency-Key": "key-ok"},
                                  json={**body, "name": "other"})
        assert status == 409
        # The outbox rows are still owed, with their payloads.
        store2 = Store(url)
        payloads = await store2.db.run(lambda conn: [r[0] for r in conn.execute(select(outbox.c.payload))],
                                       write=False)
        await store2.close()
        assert {p["job_id"] for p in payloads} >= {made["runai_succeeded"], made["runai_cancelled"]}
    finally:
        await gw.c.close()


async def test_an_old_sqlite_store_upgrades_intact(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    shutil.copy(FIXTURES / "store-e9da23a.sqlite", db)
    await _check(f"sqlite+aiosqlite:///{db}", json.loads((FIXTURES / "store-e9da23a.sqlite.json").read_text()))


@pytest.mark.postgres
async def test_an_old_postgres_store_upgrades_intact() -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    db_url, drop = await fresh_pg_database(require_postgres())
    u = make_url(db_url)
    conn: Any = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username, database=u.database)
    try:
        await conn.execute((FIXTURES / "store-e9da23a.pg.sql").read_text())  # pg_dump --inserts of the old store
    finally:
        await conn.close()
    try:
        await _check(db_url, json.loads((FIXTURES / "store-e9da23a.pg.json").read_text()))
    finally:
        await drop()
