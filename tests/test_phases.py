"""Phase tables: complete, consistent, and strict about what they do not know."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.modelarts import translate as ma
from adapters.modelarts.translate import normalize_phase as ma_phase
from adapters.runai import translate as runai
from adapters.runai.translate import normalize_phase as runai_phase
from gateway.core.models import TERMINAL_PHASES, Phase
from mappings import MappingError, PhaseTable, load_phase_table

RUNAI_PHASES = runai.PHASES
TABLES = {"runai": runai.phase_table, "modelarts": ma.phase_table, "modelarts_services": ma.service_table}


def phase_table(vendor: str) -> PhaseTable:
    return TABLES[vendor]()

# Copied from ../shared/VENDORS.md so a change to the tables cannot silently drop one.
VENDORS_RUNAI = ("Creating, Initializing, Resuming, Pending, Deleting, Running, Updating, Stopped, Stopping, "
                 "Degraded, Failed, Completed, Terminating, Unknown").split(", ")
VENDORS_MA = "Creating, Pending, Running, Failed, Completed, Terminating, Terminated, Abnormal".split(", ")
VENDORS_MA2 = ("Creating, Queuing, Running, Failed, Completed, Terminating, Terminated, CreateFailed, "
               "TerminatedFailed, Unknown, Lost").split(", ")


def test_every_vendor_phase_is_mapped() -> None:
    assert set(phase_table("runai").phases) == set(VENDORS_RUNAI) == set(RUNAI_PHASES)
    assert set(phase_table("modelarts").phases) == set(VENDORS_MA) == set(ma.PHASES)
    assert set(phase_table("modelarts").secondary) == set(VENDORS_MA2) == set(ma.SECONDARY)


@pytest.mark.parametrize("vendor", ["runai", "modelarts"])
def test_terminal_rows_map_to_terminal_neutral_phases(vendor: str) -> None:
    t = phase_table(vendor)
    for rule in [*t.phases.values(), *t.secondary.values()]:
        assert rule.terminal == (Phase(rule.phase) in TERMINAL_PHASES)


def test_pitfalls_from_vendors_md() -> None:
    assert runai_phase("Stopped").phase == Phase.SUSPENDED
    assert runai_phase("Stopping").phase == Phase.SUSPENDING
    degraded = runai_phase("Degraded")
    assert degraded.phase == Phase.RUNNING and degraded.degraded and not degraded.terminal
    assert runai_phase("Deleting").phase != Phase.RUNNING
    assert runai_phase("Terminating").phase != Phase.RUNNING
    assert ma_phase("Terminated").phase == Phase.CANCELLED


def test_unseen_phase_is_unknown_never_guessed() -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        s = runai_phase("Hibernating")
        assert s.phase == Phase.UNKNOWN and not s.terminal and s.vendor_phase == "Hibernating"
        assert ma_phase("Sleeping", "Dozing").phase == Phase.UNKNOWN
        assert ma_phase("Sleeping", "Queuing").phase == Phase.QUEUED  # the secondary fills in
    assert [e["event"] for e in logs] == ["unknown_vendor_phase"] * 3
    assert logs[0]["log_level"] == "warning" and logs[0]["vendor_phase"] == "Hibernating"


def test_a_table_missing_a_phase_does_not_load(tmp_path: Path) -> None:
    src = (Path(__file__).parent.parent / "mappings" / "phases_runai.yaml").read_text()
    bad = tmp_path / "t.yaml"
    bad.write_text("\n".join(line for line in src.splitlines() if not line.strip().startswith("Degraded")))
    with pytest.raises(MappingError, match="Degraded"):
        load_phase_table(bad, RUNAI_PHASES)


def test_a_terminal_row_with_a_live_phase_does_not_load(tmp_path: Path) -> None:
    bad = tmp_path / "t.yaml"
    bad.write_text("phases:\n  Completed: {phase: RUNNING, terminal: true}\n")
    with pytest.raises(MappingError, match="contradicts"):
        load_phase_table(bad, ())


@pytest.mark.parametrize("vendor", ["runai", "modelarts"])
def test_tjg_phases_prints_the_table(vendor: str) -> None:
    out = subprocess.run([sys.executable, "-m", "gateway", "phases", vendor], capture_output=True, text=True,
                         check=True).stdout
    data = json.loads(out)
    assert data["Running"] == {"phase": "RUNNING", "terminal": False}
    if vendor == "modelarts":
        assert data["Terminated"] == {"phase": "CANCELLED", "terminal": True}
        assert data["secondary"]["Lost"] == {"phase": "UNKNOWN", "terminal": False}
    else:
        assert data["Completed"] == {"phase": "SUCCEEDED", "terminal": True}
        assert "secondary" not in data
