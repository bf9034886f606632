"""The submit state machine (gateway/service/submit.py) against a scripted fake vendor: every path from
stored to confirmed, rejected or unknown, and how an unknown one is settled, creating the vendor job once."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.errors import BackendRejected, Conflict, NotFound
from tests.fast.conftest import BETA, World


async def test_a_plain_submit_is_stored_sent_and_confirmed(world: World) -> None:
    res = await world.submit()
    row = await world.row(res.job.id)
    assert row["submit_state"] == "submitted" and row["backend_job_id"] == "v1"
    assert res.job.status.phase.value == "QUEUED" and res.job.status.vendor_phase == "queued"
    assert [j["name"] for j in world.vendor.jobs.values()] == [row["vendor_name"]]
    assert world.vendor.calls == ["create"]


async def test_a_lost_answer_is_settled_by_a_lookup_not_a_second_create(world: World) -> None:
    world.vendor.creates = ["lost"]
    res = await world.submit()
    assert (await world.row(res.job.id))["submit_state"] == "submitted"
    assert len(world.vendor.jobs) == 1 and world.vendor.calls == ["create", "lookup"]


async def test_a_create_that_certainly_did_not_happen_is_sent_again(world: World) -> None:
    world.vendor.creates = ["absent"]
    res = await world.submit()
    assert (await world.row(res.job.id))["submit_state"] == "submitted"
    assert len(world.vendor.jobs) == 1 and world.vendor.calls == ["create", "lookup", "create"]


async def test_a_rejection_fails_the_job_with_the_vendors_words(world: World) -> None:
    world.vendor.creates = ["reject"]
    with pytest.raises(BackendRejected) as err:
        await world.submit()
    job_id = err.value.extra["job_id"]
    row = await world.row(job_id)
    assert row["submit_state"] == "rejected" and row["phase"] == "FAILED"
    assert "image not allowed" in row["status"]["message"]
    assert world.vendor.jobs == {}
    assert await world.history(job_id) == ["QUEUED", "FAILED"]


async def test_an_unknown_outcome_stays_pending_and_settles_once_when_the_vendor_answers(world: World) -> None:
    res = await _unknown(world, "lost")
    assert (await world.row(res.job.id))["submit_state"] == "pending"
    assert not await world.svc.resolve_pending(res.job.id)  # still cannot tell
    world.vendor.lookups_down = 0
    later(world, 60)  # (the failed lookup made it wait)
    assert await world.svc.resolve_pending(res.job.id)
    assert (await world.row(res.job.id))["submit_state"] == "submitted"
    assert await world.svc.resolve_pending(res.job.id)  # settled is settled: no second create
    assert len(world.vendor.jobs) == 1 and world.vendor.calls.count("create") == 1


async def test_an_unknown_create_that_never_happened_is_created_exactly_once(world: World) -> None:
    res = await _unknown(world, "absent")
    world.vendor.lookups_down = 0
    assert await world.svc.resolve_pending(res.job.id)
    assert await world.svc.resolve_pending(res.job.id)
    assert len(world.vendor.jobs) == 1 and world.vendor.calls.count("create") == 2  # the lost one and this one


async def test_a_cancel_before_the_vendor_had_it_means_it_is_never_created(world: World) -> None:
    res = await _unknown(world, "absent")
    from tests.fast.conftest import ALPHA

    await world.svc.cancel(ALPHA, res.job.id)
    world.vendor.lookups_down = 0
    assert await world.svc.resolve_pending(res.job.id)
    row = await world.row(res.job.id)
    assert row["phase"] == "CANCELLED" and world.vendor.jobs == {}


async def test_an_idempotency_key_replays_the_same_job_and_refuses_another_body(world: World) -> None:
    first = await world.submit(key="k1")
    again = await world.submit(key="k1")
    assert again.replayed and again.job.id == first.job.id
    with pytest.raises(Conflict):
        await world.submit("other-name", key="k1")
    other_tenant = await world.submit(key="k1", who=BETA)  # keys are per tenant
    assert other_tenant.job.id != first.job.id
    assert len(world.vendor.jobs) == 2


async def test_another_tenants_job_is_not_found(world: World) -> None:
    res = await world.submit()
    with pytest.raises(NotFound):
        await world.svc.get(BETA, res.job.id)


async def _unknown(world: World, create: str) -> Any:
    """A submit whose create ends as `create` and whose every lookup fails until the deadline: the job is left
    pending, and only the test settles it (the background settle loop would retry on its own clock)."""
    world.vendor.creates = [create]  # type: ignore[list-item]
    world.vendor.lookups_down = 10_000
    world.svc.config.server.submit_wait_seconds = 0.05
    world.svc.submissions._settle_until_done = _never  # type: ignore[method-assign]
    return await world.submit()


async def _never(job_id: str, delay: float = 1.0) -> None:
    """Stands in for the background settle loop, which would retry on its own clock."""


async def test_one_pending_jobs_failing_lookups_back_off_whoever_settles_it(world: World) -> None:
    """A job whose lookups keep failing is asked about less and less often by every path that settles it
    (its 5xx storm opened the backend's breaker for every tenant): twenty settles in a row make one lookup."""
    world.vendor.creates = ["lost"]
    world.vendor.lookups_down = 10_000
    job_id = (await world.submit("stuck")).job.id
    before = world.vendor.calls.count("lookup")
    for _ in range(20):
        assert await world.svc.resolve_pending(job_id) is False
    assert world.vendor.calls.count("lookup") - before == 1
    world.vendor.lookups_down = 0
    later(world, 61)  # its wait is over
    assert await world.svc.resolve_pending(job_id) is True
    assert world.vendor.calls.count("lookup") - before == 2


def later(world: World, seconds: float) -> None:
    """Move the submissions' clock on."""
    now = world.svc.submissions.clock()
    world.svc.submissions.clock = lambda: now + seconds
