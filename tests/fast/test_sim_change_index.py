"""The simulators' change index answers "which jobs changed phase since T" exactly as reading every job's
timeline would (hypothesis over schedules, cuts and query times), so a delta sync against the simulator
sees what it would see against a vendor's full scan."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.kit import ChangeIndex, Timeline

steps = st.lists(st.tuples(st.floats(0, 50, allow_nan=False), st.sampled_from("ABCD")), min_size=1, max_size=4)
jobs = st.lists(st.tuples(st.floats(0, 50, allow_nan=False), steps.map(sorted)), min_size=1, max_size=12)
cuts = st.lists(st.tuples(st.integers(0, 11), st.floats(0, 100, allow_nan=False), steps.map(sorted)), max_size=8)
queries = st.lists(st.tuples(st.floats(0, 150, allow_nan=False), st.floats(0, 150, allow_nan=False)),
                   min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(jobs, cuts, queries)
def test_the_change_index_lists_exactly_the_jobs_a_full_scan_finds(made: list[tuple[float, list[tuple[float, str]]]],
                                                                   cut: list[tuple[int, float, list[tuple[float, str]]]],
                                                                   asked: list[tuple[float, float]]) -> None:
    index = ChangeIndex()
    lines: list[Timeline] = []
    for start, sched in made:
        line = Timeline(start, sched)
        index.watch(len(lines), line)
        lines.append(line)
    events = sorted([(c[1], "cut", c) for c in cut] + [(now, "ask", (now, lo)) for now, lo in asked],
                    key=lambda e: e[0])
    for _, kind, what in events:
        if kind == "cut":
            i, when, sched = what  # type: ignore[misc]
            if i < len(lines):
                lines[i].cut(when, sched)
            continue
        now, lo = what  # type: ignore[misc]
        truth = {i for i, line in enumerate(lines) if line.at[0] <= now and lo <= line.since(now)}
        found = {i for i in index.since(lo, now) if lines[i].at[0] <= now and lo <= lines[i].since(now)}
        assert found == truth
        assert index.next_due(now) <= min((t for line in lines for t in line.at if t > now), default=float("inf"))


def test_a_restored_timeline_keeps_its_phases_and_drops_the_watch() -> None:
    import pickle

    index = ChangeIndex()
    line = Timeline(1.0, [(0.0, "Pending"), (2.0, "Running")])
    index.watch("job", line)
    back = pickle.loads(pickle.dumps(line))
    assert (back.at, back.phases, back.watch) == ([1.0, 3.0], ["Pending", "Running"], None)
    assert index.since(0.0, 5.0) == ["job"]
