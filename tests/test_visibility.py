"""Which jobs a caller sees is one rule: the row test and the SQL condition every read path adds agree on
every caller and every job (hypothesis), evaluated by SQLite itself against the real table."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.service.principal import Principal
from gateway.store.schema import jobs
from gateway.store.visibility import sees, visible_to

TENANTS = st.sampled_from(["alpha", "beta", "ops"])
PROJECTS = st.sampled_from(["1", "2", "p-3"])

viewers = st.builds(Principal, tenant=TENANTS, role=st.sampled_from(["user", "admin"]),
                    projects=st.lists(PROJECTS, max_size=2, unique=True).map(tuple))
rows = st.lists(st.fixed_dictionaries({
    "tenant": st.one_of(st.none(), TENANTS), "origin": st.sampled_from(["gateway", "external"]),
    "project": st.one_of(st.none(), PROJECTS)}), min_size=1, max_size=12)


def _job(i: int, row: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"{i:032d}", "name": "j", "backend": "b", "vendor_name": f"v{i}", "spec": {}, "report": [], "labels": {},
            "phase": "QUEUED", "status": {}, "submit_state": "pending", "created_at": 0.0, "updated_at": 0.0, **row}


@settings(max_examples=200, deadline=None)
@given(viewer=viewers, table=rows)
def test_the_row_rule_and_the_sql_condition_agree(viewer: Principal, table: list[dict[str, Any]]) -> None:
    engine = sa.create_engine("sqlite://")
    jobs.metadata.create_all(engine, tables=[jobs])
    with engine.begin() as conn:
        conn.execute(sa.insert(jobs), [_job(i, r) for i, r in enumerate(table)])
        cond = visible_to(viewer)
        q = sa.select(jobs.c.id) if cond is None else sa.select(jobs.c.id).where(cond)
        by_sql = {r.id for r in conn.execute(q)}
    by_row = {f"{i:032d}" for i, r in enumerate(table) if sees(viewer, r)}
    assert by_sql == by_row


def test_the_rule_itself() -> None:
    alpha = Principal("alpha", projects=("1",))
    assert sees(alpha, {"tenant": "alpha", "origin": "gateway", "project": "9"})
    assert not sees(alpha, {"tenant": "beta", "origin": "gateway", "project": "1"})  # only external jobs by project
    assert sees(alpha, {"tenant": None, "origin": "external", "project": "1"})
    assert not sees(alpha, {"tenant": None, "origin": "external", "project": "2"})
    assert sees(Principal("ops", role="admin"), {"tenant": "beta", "origin": "gateway", "project": None})
    assert visible_to(None) is None and visible_to(Principal("ops", role="admin")) is None
