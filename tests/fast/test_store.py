"""The store on its own (a real SQLite file): statuses and their history, the terminal guard, staleness,
pages of a list, the live set the sync reads, and idempotency keys."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.errors import NotFound
from gateway.store import ListFilters
from tests.fast.conftest import ALPHA, BETA, World


def status(phase: str, terminal: bool = False, **more: Any) -> dict[str, Any]:
    return {"phase": phase, "terminal": terminal, **more}


async def test_a_phase_change_adds_a_transition_and_a_same_phase_change_a_change_event(world: World) -> None:
    job_id = (await world.submit()).job.id
    jobs = world.store.jobs
    assert await jobs.apply_status(job_id, status("RUNNING", vendor_phase="running"), "sync") is True
    assert await jobs.apply_status(job_id, status("RUNNING", vendor_phase="running", message="still"),
                                   "sync") is False
    assert await jobs.apply_status(job_id, status("RUNNING", vendor_phase="running", message="still"),
                                   "sync") is False  # the same again: nothing new to announce
    row = await world.row(job_id)
    assert row["phase"] == "RUNNING" and row["status"]["message"] == "still"
    history = await world.store.events.for_job(job_id)
    assert [(t["seq"], t["kind"], t["to_phase"], t["source"]) for t in history] == [
        (1, "transition", "QUEUED", "gateway"), (2, "transition", "RUNNING", "sync"),
        (3, "change", "RUNNING", "sync")]
    assert history[2]["message"] == "message: None -> still"


async def test_a_terminal_job_keeps_its_phase_whatever_is_written_later(world: World) -> None:
    job_id = (await world.submit()).job.id
    jobs = world.store.jobs
    await jobs.apply_status(job_id, status("SUCCEEDED", terminal=True, exit_code=0), "sync")
    assert await jobs.apply_status(job_id, status("RUNNING"), "sync") is False
    assert await jobs.apply_statuses([(job_id, status("FAILED", terminal=True), None)], "sync") == 0
    row = await world.row(job_id)
    assert row["phase"] == "SUCCEEDED" and row["terminal"] and row["status"]["exit_code"] == 0
    assert await world.history(job_id) == ["QUEUED", "SUCCEEDED"]


async def test_stale_flags_live_jobs_only_and_leaves_phases(world: World) -> None:
    live = (await world.submit("live")).job.id
    ended = (await world.submit("ended")).job.id
    await world.store.jobs.apply_status(ended, status("FAILED", terminal=True), "sync")
    assert await world.store.jobs.mark_stale("fake", True) == 1
    assert (await world.row(live))["status"]["stale"] is True and (await world.row(live))["phase"] == "QUEUED"
    assert not (await world.row(ended))["status"].get("stale")
    assert await world.store.jobs.mark_stale("fake", True) == 0  # already flagged: nothing written
    assert await world.store.jobs.mark_stale("fake", False) == 1


async def test_the_live_set_is_what_the_sync_must_poll(world: World) -> None:
    a = (await world.submit("a")).job.id
    b = (await world.submit("b")).job.id
    await world.store.jobs.apply_status(b, status("CANCELLED", terminal=True), "sync")
    assert [r["id"] for r in await world.store.jobs.live("fake")] == [a]


async def test_pages_are_newest_first_without_gaps_or_repeats_and_per_tenant(world: World) -> None:
    mine = [(await world.submit(f"j{i}")).job.id for i in range(7)]
    theirs = (await world.submit("other", who=BETA)).job.id
    seen: list[str] = []
    page, token = await world.svc.list_jobs(ALPHA, ListFilters(), 3, None)
    seen += [j.id for j in page]
    while token:
        page, token = await world.svc.list_jobs(ALPHA, ListFilters(), 3, token)
        seen += [j.id for j in page]
    # Ids begin with the millisecond, so newest first is the ids' order (two jobs of one millisecond in either).
    assert seen == sorted(mine, reverse=True) and len(set(seen)) == len(mine) and theirs not in seen
    page, _ = await world.svc.list_jobs(ALPHA, ListFilters(name_prefix="j6"), 10, None)
    assert [j.id for j in page] == [mine[6]]


async def test_an_idempotency_key_is_per_tenant_and_remembers_its_job(world: World) -> None:
    job_id = (await world.submit(key="k")).job.id
    found = await world.store.keys.find("alpha", "k")
    assert found is not None and found[1] == job_id and len(found[0]) == 64  # with the body's SHA-256
    assert await world.store.keys.find("beta", "k") is None


async def test_a_kept_get_answer_never_outlives_a_write_to_its_row(world: World) -> None:
    import json

    job_id = (await world.submit()).job.id
    first = json.loads(await world.svc.get_json(ALPHA, job_id))
    assert await world.svc.get_json(ALPHA, job_id) is await world.svc.get_json(ALPHA, job_id)  # kept
    await world.store.jobs.apply_status(job_id, status("RUNNING", vendor_phase="running"), "sync")
    assert json.loads(await world.svc.get_json(ALPHA, job_id))["status"]["phase"] == "RUNNING" != \
        first["status"]["phase"]
    await world.store.jobs.mark_stale("fake", True)
    assert json.loads(await world.svc.get_json(ALPHA, job_id))["status"]["stale"] is True
    await world.store.jobs.set_fields(job_id, deleted_at=1.0)
    assert json.loads(await world.svc.get_json(ALPHA, job_id))["deleted"] is True
    with pytest.raises(NotFound):  # another tenant never gets the kept answer
        await world.svc.get_json(BETA, job_id)


async def test_confirmations_in_one_loop_turn_share_one_commit_and_each_gets_its_own_answer(world: World) -> None:
    import asyncio

    from sqlalchemy import event

    jobs = world.store.jobs
    rows = []
    for i in range(5):
        row = {"id": f"{i:032x}", "tenant": "alpha", "name": f"g{i}", "backend": "fake", "project": None,
               "vendor_name": f"g{i}", "vendor_kind": "training", "backend_job_id": None, "spec": {}, "report": [],
               "labels": {}, "phase": "QUEUED", "terminal": False, "status": status("QUEUED"), "origin": "gateway",
               "submit_state": "pending", "submit_error": None, "cancel_requested": i == 2, "created_at": 1.0,
               "updated_at": 1.0, "deleted_at": None, "migrated_from": None, "migrated_to": None, "tes_task": None}
        await jobs.create(row)
        rows.append(row)
    commits: list[int] = []
    engine = world.store.db.sync_engine
    assert engine is not None
    event.listen(engine, "commit", lambda _conn: commits.append(1))
    got = await asyncio.gather(*(jobs.confirm(r["id"], status("RUNNING", vendor_phase="running"), {
        "backend_job_id": f"v-{r['id']}", "vendor_kind": "training", "submit_state": "submitted"}) for r in rows))
    assert len(commits) == 1  # one transaction for the five
    assert [cancel for cancel, _ in got] == [False, False, True, False, False]
    assert all(w is not None and w["backend_job_id"] == f"v-{r['id']}" and w["phase"] == "RUNNING"
               for (_, w), r in zip(got, rows, strict=True))
    for r in rows:
        stored = await world.row(r["id"])
        assert stored["submit_state"] == "submitted" and stored["backend_job_id"] == f"v-{r['id']}"
    # A row that cannot be written (its vendor id taken) fails alone; the other confirmation still lands.
    await jobs.create({**rows[0], "id": "f" * 32, "vendor_name": "dup", "backend_job_id": None})
    await jobs.create({**rows[0], "id": "e" * 32, "vendor_name": "fine", "backend_job_id": None})
    results = await asyncio.gather(
        jobs.confirm("f" * 32, status("RUNNING"), {"backend_job_id": f"v-{rows[1]['id']}", "vendor_kind": "training",
                                                   "submit_state": "submitted"}),
        jobs.confirm("e" * 32, status("RUNNING"), {"backend_job_id": "v-fine", "vendor_kind": "training",
                                                   "submit_state": "submitted"}), return_exceptions=True)
    assert isinstance(results[0], Exception) and not isinstance(results[1], Exception)
    assert (await world.row("e" * 32))["backend_job_id"] == "v-fine"
