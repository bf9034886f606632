"""No reason mapping is a guess: the reason tables hold exactly the words the simulators report (each to
the neutral reason the vendor's meaning gives), the neutral words are the core's, and a word the tables do
not know gives no reason, with the vendor's words kept."""

from __future__ import annotations

import adapters.modelarts.translate as ma
import adapters.runai.translate as ra
from gateway.core.models import Reason
from mappings import NEUTRAL_REASONS
from simulators.modelarts import app as ma_sim
from simulators.runai import app as runai_sim
from tests.oracles import runai_document


def test_the_tables_speak_the_cores_words() -> None:
    assert set(NEUTRAL_REASONS) == {r.value for r in Reason}
    for table in (ra.reason_table(), ma.reason_table()):
        for rows in table.values():
            assert set(rows.values()) <= set(NEUTRAL_REASONS)


def test_runai_table_has_every_phase_reason_of_the_openapi_and_every_condition_the_simulator_reports() -> None:
    table = ra.reason_table()
    enum = runai_document()["components"]["schemas"]["PhaseReason"]["enum"]
    assert set(table["phase_reason"]) == set(enum) == set(runai_sim.PHASE_REASON.values())
    assert set(table["condition"]) == set(runai_sim.CONDITION_REASONS)  # no row the simulator never says
    expect = {"Unschedulable": "no-capacity", "Preempted": "preempted", "ErrImagePull": "image-pull",
              "ImagePullBackOff": "image-pull", "OOMKilled": "oom", "NodeLost": "node-failure",
              "Error": "user-error"}
    assert table["condition"] == expect
    # Each simulated failure ends with the reason its SIM_OUTCOME names.
    outcome_reason = {o: table["condition"][f[0]] for o, f in runai_sim.FAILURES.items()}
    assert outcome_reason == {"image-pull": "image-pull", "oom": "oom", "node-failure": "node-failure",
                              "failed": "user-error"}


def test_modelarts_table_has_every_end_reason_the_simulator_reports() -> None:
    table = ma.reason_table()
    reported = {e[4] for e in ma_sim.ENDS.values()}
    assert set(table["end_reason"]) == reported - {"Completed"}  # a success has no reason
    outcome_reason = {o: table["end_reason"].get(e[4]) for o, e in ma_sim.ENDS.items()}
    assert outcome_reason == {"completed": None, "failed": "user-error", "abnormal": "vendor-error",
                              "preempted": "preempted", "image-pull": "image-pull", "oom": "oom",
                              "node-failure": "node-failure", "runtime-limit": "runtime-limit",
                              "terminated": "cancelled"}
    assert table["secondary_phase"] == {ma_sim.WAIT[-1][1][1]: "no-capacity"}  # Pending / Queuing


def test_an_unknown_word_gives_no_reason_and_keeps_the_vendors_words() -> None:
    st = ra.normalize_phase("Failed", "Pod exited with code 2", None, [("SomethingNew", "the node caught fire")])
    assert st.reason is None and st.phase == "FAILED" and st.message == "Pod exited with code 2"
    assert st.exit_code == 2
    st = ra.normalize_phase("Pending", "waiting", "SomeFuturePhaseReason", [])
    assert st.reason is None and st.reason_message == "waiting" and st.phase == "QUEUED"
    st = ma.normalize_phase("Failed", "Failed", "exited strangely", 9, "ANewEndReason")
    assert st.reason is None and st.message == "exited strangely" and st.exit_code == 9
    st = ma.normalize_phase("Pending", "Lost")
    assert st.reason is None


def test_reasons_only_describe_waiting_and_ended_jobs() -> None:
    running = ra.normalize_phase("Running", "", None, [("OOMKilled", "an old condition")])
    assert running.reason is None
    queued = ra.normalize_phase("Pending", "m", None, [("Unschedulable", "no room")], "2026-01-01T00:00:00.000Z")
    assert queued.reason == Reason.NO_CAPACITY and queued.reason_message == "no room"
    assert queued.pending_since is not None and queued.pending_since.year == 2026
