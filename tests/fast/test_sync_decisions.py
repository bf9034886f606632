"""What a sync cycle decides (gateway/background/sync.py), driven cycle by cycle over a fake vendor: phase
changes are stored once with their history, a failed poll changes no phase but marks jobs stale, a job the
vendor no longer has ends CANCELLED with the reason, and a terminal job is never changed again."""

from __future__ import annotations

from tests.fast.conftest import World


async def _running(world: World) -> str:
    res = await world.submit()
    world.vendor.jobs[(await world.row(res.job.id))["backend_job_id"]]["phase"] = "running"
    return str(res.job.id)


async def test_a_vendor_change_is_stored_once_with_its_transition(world: World) -> None:
    job_id = await _running(world)
    stats = await world.sync.cycle()
    assert stats.updated == 1 and stats.list_requests == 1
    assert (await world.row(job_id))["phase"] == "RUNNING"
    again = await world.sync.cycle()  # nothing new: nothing written
    assert again.updated == 0
    assert await world.history(job_id) == ["QUEUED", "RUNNING"]


async def test_the_end_of_a_job_is_stored_and_the_job_leaves_the_live_set(world: World) -> None:
    job_id = await _running(world)
    await world.sync.cycle()
    vid = (await world.row(job_id))["backend_job_id"]
    world.vendor.jobs[vid]["phase"] = "done"
    await world.sync.cycle()
    row = await world.row(job_id)
    assert row["phase"] == "SUCCEEDED" and row["terminal"]
    world.vendor.jobs[vid]["phase"] = "running"  # a vendor that changes its mind cannot revive it
    calls = len(world.vendor.calls)
    stats = await world.sync.cycle()
    assert stats.list_requests == 0 and len(world.vendor.calls) == calls  # no live job: no vendor call
    assert (await world.row(job_id))["phase"] == "SUCCEEDED"
    assert await world.history(job_id) == ["QUEUED", "RUNNING", "SUCCEEDED"]


async def test_a_failed_poll_changes_no_phase_and_marks_the_jobs_stale_until_it_recovers(world: World) -> None:
    job_id = await _running(world)
    world.vendor.down = True
    world.sync._last_start = 0.0
    await world.sync.step()
    row = await world.row(job_id)
    assert row["phase"] == "QUEUED" and row["status"].get("stale") is True and world.sync.failing
    world.vendor.down = False
    world.sync._last_start = 0.0  # the loop's minimum gap between cycles has passed
    await world.sync.step()
    row = await world.row(job_id)
    assert row["phase"] == "RUNNING" and not row["status"].get("stale") and not world.sync.failing


async def test_a_job_gone_from_the_vendor_ends_cancelled_with_the_reason(world: World) -> None:
    job_id = await _running(world)
    world.vendor.jobs.clear()
    stats = await world.sync.cycle()
    assert stats.get_requests == 1
    row = await world.row(job_id)
    assert row["phase"] == "CANCELLED" and row["status"]["message"] == "deleted on the backend outside the gateway"
    assert row["status"]["vendor_phase"] is None


async def test_what_one_get_at_a_time_learnt_is_kept_when_a_later_get_fails(world: World) -> None:
    """Jobs the list no longer shows get a GET each; a vendor that fails on the third keeps the first two's
    news (a cycle that wrote nothing until its last GET never got anywhere with a flaky vendor)."""
    ids = [await _running(world) for _ in range(4)]
    await world.sync.cycle()
    for job_id in ids:
        vid = (await world.row(job_id))["backend_job_id"]
        world.vendor.jobs[vid]["phase"] = "done"
        world.vendor.unlisted.add(vid)
    world.vendor.gets_left = 2
    world.sync._last_start = 0.0
    await world.sync.step()
    assert world.sync.failing
    phases = [(await world.row(j))["phase"] for j in ids]
    assert phases.count("SUCCEEDED") == 2, phases
    world.vendor.gets_left = None
    world.sync._last_start = 0.0
    await world.sync.step()
    assert [(await world.row(j))["phase"] for j in ids] == ["SUCCEEDED"] * 4
