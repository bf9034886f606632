"""The simulators' GPU scheduler, on an injected clock: capacity is never exceeded, waiting work starts at
the moment GPUs free up, priority then FIFO decides who goes first, quotas and preemption work as Run:ai
documents them (trainings may run over quota and are the first to be preempted)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.scheduler import CAPACITY, NO_POOL, OVER_LIMIT, OVER_QUOTA, Claim, Scheduler


class Jobs:
    """A scheduler whose jobs run for a set time once admitted (None: until stopped)."""

    def __init__(self, **kw: object) -> None:
        self.runs: dict[str, float | None] = {}
        self.started: dict[str, list[float]] = {}
        self.preempted: dict[str, list[float]] = {}
        self.s = Scheduler(on_start=self._start, on_preempt=self._preempt, **kw)  # type: ignore[arg-type]

    def _start(self, c: Claim, t: float) -> float | None:
        self.started.setdefault(c.key, []).append(t)
        run = self.runs[c.key]
        return None if run is None else t + run

    def _preempt(self, c: Claim, t: float, by: Claim | None) -> bool:
        self.preempted.setdefault(c.key, []).append(t)
        return True

    def submit(self, key: str, gpus: float, at: float, run: float | None = None, **kw: object) -> bool:
        self.runs[key] = run
        return self.s.submit(Claim(key=key, pools=list(kw.pop("pools", ["a100"])), gpus=gpus,  # type: ignore[arg-type]
                                   **kw), at)  # type: ignore[arg-type]


def test_unlimited_admits_everything_at_once() -> None:
    j = Jobs()
    assert all(j.submit(f"j{i}", 8, at=float(i)) for i in range(50))
    assert not j.s.waiting


def test_a_job_that_does_not_fit_waits_and_starts_when_gpus_free_up() -> None:
    j = Jobs(capacity={"a100": 4})
    assert j.submit("first", 4, at=0.0, run=10.0)
    assert not j.submit("second", 2, at=1.0)
    c = j.s.waiting["second"]
    assert (c.reason, c.detail) == (CAPACITY, "2 GPUs asked, 0 of 4 free in a100")
    j.s.advance(9.0)
    assert "second" in j.s.waiting
    j.s.advance(30.0)  # read long after: it started when the first ended, not when someone looked
    assert j.started["second"] == [10.0]
    assert j.s.running["second"].waited(30.0) == 9.0


def test_priority_first_then_submission_order() -> None:
    j = Jobs(capacity={"a100": 2})
    j.submit("holder", 2, at=0.0, run=5.0, priority=100)  # (lower would be preempted by those after it)
    j.submit("early-low", 2, at=1.0, run=5.0, priority=40)
    j.submit("late-high", 2, at=2.0, run=5.0, priority=75)
    j.submit("late-low", 2, at=3.0, run=5.0, priority=40)
    j.s.advance(100.0)
    order = sorted(j.started, key=lambda k: j.started[k][0])
    assert order == ["holder", "late-high", "early-low", "late-low"]
    assert [j.started[k][0] for k in order] == [0.0, 5.0, 10.0, 15.0]


def test_non_preemptible_work_may_not_go_over_the_projects_quota() -> None:
    j = Jobs(capacity={"a100": 8}, deserved={"p": 2})
    assert not j.submit("np", 4, at=0.0, project="p", preemptible=False)
    assert j.s.waiting["np"].reason == OVER_QUOTA
    assert j.submit("train", 4, at=0.0, project="p")  # a preemptible training may: the GPUs are free


def test_a_projects_limit_holds_everything() -> None:
    j = Jobs(capacity={"a100": 8}, limit={"p": 3})
    assert j.submit("a", 2, at=0.0, project="p")
    assert not j.submit("b", 2, at=0.0, project="p")
    assert j.s.waiting["b"].reason == OVER_LIMIT


def test_a_pool_that_does_not_exist() -> None:
    j = Jobs(capacity={"a100": 8})
    assert not j.submit("h", 1, at=0.0, pools=["h100"])
    assert j.s.waiting["h"].reason == NO_POOL
    flavors = Jobs(capacity={"a100": 8}, open_pools=True)  # ModelArts: a flavor with no count is never short
    assert flavors.submit("h", 1, at=0.0, pools=["h100"])


def test_in_quota_work_preempts_over_quota_training_which_runs_again_later() -> None:
    j = Jobs(capacity={"a100": 4}, deserved={"p1": 2, "p2": 2})
    assert j.submit("over", 4, at=0.0, run=100.0, project="p1")  # over its quota, on idle GPUs
    assert j.submit("mine", 2, at=1.0, run=10.0, project="p2")  # within p2's quota: takes them back
    assert j.preempted == {"over": [1.0]}
    assert "over" in j.s.waiting and j.s.waiting["over"].preemptions == 1
    j.s.advance(50.0)
    assert j.started["over"] == [0.0, 11.0]  # again when "mine" ended


def test_over_quota_work_does_not_preempt() -> None:
    j = Jobs(capacity={"a100": 4}, deserved={"p1": 2, "p2": 2})
    j.submit("a", 4, at=0.0, project="p1")
    assert not j.submit("b", 4, at=1.0, project="p2")  # 4 > p2's 2: it may not take p1's GPUs
    assert not j.preempted and j.s.waiting["b"].reason == CAPACITY


def test_higher_priority_work_preempts_lower_in_its_own_project() -> None:
    j = Jobs(capacity={"a100": 2})
    j.submit("low", 2, at=0.0, project="p", priority=40)
    assert j.submit("high", 2, at=1.0, project="p", priority=75)
    assert j.preempted == {"low": [1.0]}


def test_a_stopped_job_frees_its_gpus_and_a_waiting_one_leaves_the_queue() -> None:
    j = Jobs(capacity={"a100": 2})
    j.submit("a", 2, at=0.0)
    j.submit("b", 2, at=1.0)
    j.submit("c", 2, at=2.0)
    j.s.stop("b", 3.0)  # cancelled while waiting
    j.s.stop("a", 4.0)
    j.s.advance(5.0)
    assert "b" not in j.started and j.started["c"] == [4.0]


ops = st.lists(st.tuples(st.sampled_from(["submit", "stop", "advance", "preempt"]), st.integers(0, 9),
                         st.sampled_from([0.5, 1, 2, 4]), st.sampled_from(["p1", "p2"]), st.booleans(),
                         st.integers(0, 2), st.sampled_from([None, 1.0, 3.0])), max_size=40)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_capacity_is_never_exceeded_and_every_job_is_in_one_place(steps: list[tuple]) -> None:  # type: ignore[type-arg]
    j = Jobs(capacity={"a100": 4, "h100": 2}, deserved={"p1": 2, "p2": 2})
    t = 0.0
    for op, n, gpus, project, preemptible, prio, run in steps:
        t += 0.5
        key = f"j{n}"
        if op == "submit" and key not in j.runs:
            j.submit(key, gpus, at=t, run=run, project=project, preemptible=preemptible, priority=prio,
                     pools=["a100", "h100"] if n % 2 else ["a100"])
        elif op == "stop":
            j.s.stop(key, t)
        elif op == "preempt":
            j.s.preempt(key, t)
        else:
            j.s.advance(t)
        for pool, cap in j.s.capacity.items():
            assert j.s.used(pool) <= cap
        assert not set(j.s.waiting) & set(j.s.running)
        for c in j.s.waiting.values():  # nothing waits that would fit now with nobody ahead of it
            ahead = [w for w in j.s.queued() if (-w.priority, w.seq) < (-c.priority, c.seq)]
            if not ahead and c.preemptible and c.reason == CAPACITY:
                assert all(j.s.free(p) < c.gpus for p in c.pools if p in j.s.capacity)


def test_a_saved_queue_is_taken_up_on_another_clock() -> None:
    """A simulator's state file keeps the scheduler: restored with every time moved onto the new clock."""
    import pickle

    j = Jobs(capacity={"a100": 1})
    j.submit("runs", 1, at=10.0, run=5.0)
    j.submit("waits", 1, at=11.0)
    j.s.preempt("runs", 12.0, hold=3.0)
    saved = pickle.loads(pickle.dumps(j.s.export()))
    again = Jobs(capacity={"a100": 1})
    again.runs = j.runs
    again.s.restore(saved, shift=100.0)
    held = again.s.waiting["runs"]
    assert held.hold_until == 115.0 and held.queued_at == 112.0
    assert again.s.running["waits"].admitted_at == 112.0 and again.s.clock == 112.0
