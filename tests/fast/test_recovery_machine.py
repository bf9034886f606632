"""Managed recovery on the fast tier: the retry rules as a pure function (hypothesis), and the attempt state
machine over a real SQLite store and a fake vendor: one vendor job per attempt, whatever is lost, repeated
or raced (two recovery loops, a restart between the failure and the next attempt, a cancel between them)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.background.recovery import recovery_step
from gateway.cli.client_cmds import show_job
from gateway.core.models import JobSpec, Reason, RetrySpec
from gateway.core.recovery import Failure, attempt_name, decide
from gateway.core.translation import vendor_name
from gateway.service.attempts import attempt_spec
from gateway.service.jobs import JobService
from tests.fast.conftest import ALPHA, World

REASONS = [None, *Reason]
ON = ["preempted", "no-capacity", "node-failure", "oom", "image-pull", "user-error", "vendor-error"]


@given(on=st.lists(st.sampled_from(ON), unique=True), codes=st.lists(st.integers(0, 255), max_size=4),
       reason=st.sampled_from(REASONS), code=st.none() | st.integers(0, 255), attempt=st.integers(1, 12),
       most=st.integers(1, 10), within=st.none() | st.floats(1, 1000), age=st.floats(0, 2000),
       cancelled=st.booleans())
def test_the_rules_retry_exactly_a_listed_failure_within_the_limits(
        on: list[str], codes: list[int], reason: Reason | None, code: int | None, attempt: int, most: int,
        within: float | None, age: float, cancelled: bool) -> None:
    policy = RetrySpec.model_validate({"on": on, "exit_codes": codes, "max_attempts": most, "within": within})
    d = decide(policy, Failure(reason, code), attempt, 1000.0, 1000.0 + age, cancelled)
    listed = (reason is not None and reason.value in on) or (code is not None and code in codes)
    in_time = within is None or (1000.0 + age) - 1000.0 < within  # (the time since acceptance, as decide sees it)
    assert d.retry == (not cancelled and listed and attempt < most and in_time)
    if not d.retry:  # the reason it stops, in the order the rules are read
        expected = "cancelled" if cancelled else "not-retryable" if not listed else \
            "max-attempts" if attempt >= most else "within"
        assert d.outcome == expected and d.message
    else:
        assert d.outcome is None and f"attempt {attempt + 1} follows" in d.message


@given(name=st.from_regex(r"\A[a-z]([-a-z0-9]{0,61}[a-z0-9])?\Z"), n=st.integers(1, 100))
def test_each_attempt_has_its_own_vendor_name_within_the_limit(name: str, n: int) -> None:
    job = "01a236bb6396389176fdf58e94828990"
    mine = vendor_name(attempt_name(name, n), job)
    assert len(mine) <= 63 and mine != vendor_name(attempt_name(name, n + 1), job)
    assert (n == 1) == (mine == vendor_name(name, job))
    if n > 1:
        assert f"-a{n}-" in mine


def test_an_attempt_spec_carries_its_number_the_checkpoint_in_the_vendors_terms_and_no_vendor_restarts() -> None:
    spec = JobSpec.model_validate({"name": "t", "backend": "runai", "image": "i", "env": {"A": "1"},
                                   "retry": {"on": ["preempted"]}, "checkpoint": {"uri": "pvc://ckpt/run1"}})
    on_ma, notes = attempt_spec(spec, 2, "modelarts")
    assert on_ma.env == {"A": "1", "TJG_ATTEMPT": "2", "TJG_CHECKPOINT_URI": "obs://ckpt-bucket/run1",
                         "TJG_CHECKPOINT_DIR": "/mnt/checkpoint"}
    assert on_ma.name == "t-a2" and on_ma.max_retries == 0
    assert [m.name for m in on_ma.outputs or []] == ["tjg-checkpoint"]
    words = {e.field: e.detail for e in notes}
    assert "max_retries 0 sent" in words["retry"] and "rewritten from pvc://ckpt/run1" in words["checkpoint"]
    on_runai, _ = attempt_spec(spec, 1, "runai")
    assert on_runai.env and on_runai.env["TJG_CHECKPOINT_URI"] == "pvc://ckpt/run1" and on_runai.name == "t"
    both, notes = attempt_spec(spec.model_copy(update={"max_retries": 2}), 1, "runai")
    assert both.max_retries == 2 and "up to 9 runs in all" in {e.field: e.detail for e in notes}["retry"]
    plain = JobSpec.model_validate({"name": "t", "backend": "runai", "image": "i"})
    assert attempt_spec(plain, 1, "runai") == (plain, [])


RULES = {"on": ["node-failure"], "max_attempts": 3}


async def fail_current(world: World, job_id: str, reason: str = "node-failure", code: int | None = None) -> None:
    row = await world.row(job_id)
    rec = world.vendor.jobs[row["backend_job_id"]]
    rec.update(phase="failed", reason=reason, exit_code=code)
    await world.sync.cycle()


def named(world: World, prefix: str) -> list[str]:
    return sorted(j["name"] for j in world.vendor.jobs.values() if j["name"].startswith(prefix))


async def test_each_failure_within_the_rules_makes_one_next_attempt_until_max_attempts(world: World) -> None:
    job_id = (await world.submit("flaky", retry=RULES)).job.id
    step = recovery_step(world.svc)
    for n in (1, 2):
        await fail_current(world, job_id)
        row = await world.row(job_id)
        assert (row["submit_state"], row["attempt"], row["phase"]) == ("recovering", n + 1, "QUEUED")
        assert row["status"]["reason"] == "recovering"
        await step()
        await step()  # a second pass finds nothing to do
        row = await world.row(job_id)
        assert (row["submit_state"], row["attempt"]) == ("submitted", n + 1)
    await fail_current(world, job_id)
    row = await world.row(job_id)
    assert row["phase"] == "FAILED" and row["status"]["retry_outcome"] == "max-attempts"
    await step()
    assert len(named(world, "flaky")) == 3, named(world, "flaky")  # one vendor job per attempt
    job = await world.svc.get(ALPHA, job_id)
    assert [(a.n, a.phase, a.reason) for a in job.attempts] == [
        (1, "FAILED", "node-failure"), (2, "FAILED", "node-failure"), (3, "FAILED", "node-failure")]
    shown = show_job(job.model_dump(mode="json"))  # `tjg get`
    assert "attempts:     3 (no more: max-attempts)" in shown and "#2 fake flaky-a2-" in shown, shown
    # A sync that reads the first attempt's failure again (an old page) changes nothing.
    assert await world.store.jobs.apply_statuses(
        [(job_id, {"phase": "FAILED", "terminal": True, "reason": "node-failure"}, None)], "sync") == 0
    assert (await world.row(job_id))["attempt"] == 3


async def test_a_failure_the_rules_do_not_list_ends_the_job_at_once(world: World) -> None:
    job_id = (await world.submit("bug", retry={**RULES, "exit_codes": [3]})).job.id
    await fail_current(world, job_id, "user-error", 1)
    row = await world.row(job_id)
    assert row["phase"] == "FAILED" and row["status"]["retry_outcome"] == "not-retryable"
    assert row["status"]["reason"] == "user-error"
    listed = (await world.submit("resume", retry={**RULES, "exit_codes": [3]})).job.id
    await fail_current(world, listed, "user-error", 3)
    assert (await world.row(listed))["submit_state"] == "recovering"


async def test_a_lost_create_of_the_next_attempt_is_settled_by_its_name_not_doubled(world: World) -> None:
    job_id = (await world.submit("lossy", retry=RULES)).job.id
    await fail_current(world, job_id)
    world.vendor.creates = ["lost"]
    world.vendor.lookups_down = 1000  # and the lookup after it fails too: the attempt stays pending
    await recovery_step(world.svc)()
    row = await world.row(job_id)
    assert row["submit_state"] == "pending" and row["vendor_name"].startswith("lossy-a2-")
    world.vendor.lookups_down = 0
    assert await world.svc.resolve_pending(job_id)
    assert (await world.row(job_id))["submit_state"] == "submitted"
    assert named(world, "lossy") == sorted([vendor_name("lossy", job_id), row["vendor_name"]])


async def test_two_recovery_loops_and_a_restart_make_one_next_attempt(world: World) -> None:
    job_id = (await world.submit("raced", retry=RULES)).job.id
    await fail_current(world, job_id)  # ... and the process that saw it dies here: a new one takes over
    other = JobService(world.svc.config, world.store, world.svc.adapters)
    try:
        import asyncio
        await asyncio.gather(recovery_step(world.svc)(), recovery_step(other)(), other.recover())
        await other.recover()
        await world.svc.resolve_pending(job_id)
    finally:
        await other.close()
    assert len(named(world, "raced")) == 2, named(world, "raced")
    assert (await world.row(job_id))["attempt"] == 2


async def test_a_cancel_between_attempts_ends_it_and_no_attempt_is_made_after(world: World) -> None:
    job_id = (await world.submit("stop", retry=RULES)).job.id
    await fail_current(world, job_id)
    calls = len(world.vendor.calls)
    job = await world.svc.cancel(ALPHA, job_id)
    assert job.status.phase == "CANCELLED" and job.status.retry_outcome == "cancelled"
    await recovery_step(world.svc)()
    await world.svc.recover()
    assert "create" not in world.vendor.calls[calls:]
    assert named(world, "stop") == [vendor_name("stop", job_id)]


async def test_a_cancel_after_the_next_attempt_was_stored_stops_it(world: World) -> None:
    job_id = (await world.submit("late", retry=RULES)).job.id
    await fail_current(world, job_id)
    world.vendor.creates = ["lost"]  # stored, sent, and no answer: pending when the cancel comes
    world.vendor.lookups_down = 1000
    await recovery_step(world.svc)()
    assert (await world.row(job_id))["submit_state"] == "pending"
    world.vendor.lookups_down = 0
    await world.svc.cancel(ALPHA, job_id)
    assert await world.svc.resolve_pending(job_id)
    await world.sync.cycle()
    row = await world.row(job_id)
    assert row["phase"] == "CANCELLED" and row["terminal"]
    live = [j for j in world.vendor.jobs.values() if j["name"].startswith("late") and j["phase"] != "failed"]
    assert all(j["phase"] == "stopped" for j in live), live



async def test_an_attempt_found_failed_when_its_lost_create_is_settled_keeps_its_vendor_id(world: World) -> None:
    world.vendor.creates = ["lost"]
    world.vendor.lookups_down = 1000
    job_id = (await world.submit("found", retry=RULES)).job.id
    assert (await world.row(job_id))["submit_state"] == "pending"
    (rec,) = world.vendor.named(vendor_name("found", job_id))
    rec.update(phase="failed", reason="node-failure")  # it ran and failed while nobody knew it existed
    world.vendor.lookups_down = 0
    assert await world.svc.resolve_pending(job_id)
    job = await world.svc.get(ALPHA, job_id)
    assert job.attempt == 2 and job.attempts[0].backend_job_id == rec["id"], job.attempts


def test_the_example_spec_parses_from_yaml_with_its_on_key() -> None:
    import yaml

    from gateway.core.models import parse_spec

    raw = yaml.safe_load(open("examples/recovery/resumable.yaml").read())
    assert True in raw["retry"]  # YAML 1.1 reads `on:` as the boolean true ...
    spec = parse_spec(raw)
    assert spec.retry is not None and spec.retry.on == ["preempted", "node-failure"]  # ... taken as `on`
    assert spec.retry.within == 86400 and spec.checkpoint is not None
    import json

    as_json = json.loads(json.dumps(raw))  # what tjg submit sends of it: the key is now "true"
    assert "true" in as_json["retry"] and parse_spec(as_json).retry == spec.retry
