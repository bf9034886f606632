"""The mapping tables are validated when they load: a malformed or incomplete table is refused with its file
and the place named, never a KeyError at first use; the shipped tables all load."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import mappings

LOADERS = (mappings.gpu_types, mappings.flavors, mappings.prices, mappings.priorities, mappings.storage_rules,
           mappings.image_rules)


def _clear() -> None:
    for f in LOADERS:
        f.cache_clear()


@pytest.fixture
def tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the shipped tables that a test may break."""
    for p in mappings.HERE.glob("*.yaml"):
        shutil.copy(p, tmp_path / p.name)
    monkeypatch.setattr(mappings, "HERE", tmp_path)
    _clear()
    yield tmp_path
    monkeypatch.undo()
    _clear()


def test_the_shipped_tables_load() -> None:
    _clear()
    assert mappings.flavors() and mappings.gpu_types() and mappings.prices()[1]
    assert set(mappings.priorities()) >= {"runai", "modelarts"}
    assert all(set(v) == {"low", "normal", "high"} for v in mappings.priorities().values())


@pytest.mark.parametrize(("name", "text", "where"), [
    ("priorities.yaml", "runai: {low: low, normal: medium}\n", "priorities.yaml:runai.high: Field required"),
    ("flavors.yaml", "flavors:\n  - {id: f1, gpus: 1, gpu_type: T4, cpu: 8}\n", "flavors.yaml:flavors.0.memory_gi"),
    ("flavors.yaml", "flavors:\n  - {id: f1, gpus: 1, gpu_type: null, cpu: 8, memory_gi: 8}\n",
     "gpu_type is set exactly when gpus > 0"),
    ("flavors.yaml", "flavors:\n  - {id: f1, gpus: 1, gpu_type: Z9, cpu: 8, memory_gi: 8}\n",
     "GPU types not in gpus.yaml: Z9"),
    ("prices.yaml", "currency: USD\nrunai: {default: -1}\n", "prices.yaml:(top)"),
    ("storage.yaml", "rules:\n  - {target: runai, from: 'obs://b/'}\n", "storage.yaml:rules.0.to: Field required"),
    ("gpus.yaml", "gpu_types: {A100: {runai_node_pools: a100}}\n", "gpus.yaml:gpu_types.A100.runai_node_pools"),
])
def test_a_bad_table_is_refused_at_load_naming_the_place(tables: Path, name: str, text: str, where: str) -> None:
    (tables / name).write_text(text)
    with pytest.raises(mappings.MappingError, match=None) as err:
        for load in LOADERS:
            load()
    assert where in str(err.value)


def test_a_phase_row_that_contradicts_itself_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("phases:\n  Done: {phase: SUCCEEDED, terminal: false}\n")
    with pytest.raises(mappings.MappingError, match=r"p\.yaml:phases\.Done: Value error, terminal=False contradicts"):
        mappings.load_phase_table(bad, ("Done",))
