"""Declarative mapping tables (phases, GPU types, flavors, priorities, storage) and their loaders."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent

NEUTRAL_PHASES = ("QUEUED", "STARTING", "RUNNING", "SUSPENDING", "SUSPENDED", "SUCCEEDED",
                  "FAILED", "CANCELLING", "CANCELLED", "UNKNOWN")
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})

class MappingError(ValueError):
    """A mapping table is malformed or incomplete."""


@dataclass(frozen=True)
class PhaseRule:
    """One row of a phase table."""

    phase: str
    terminal: bool
    degraded: bool = False


@dataclass(frozen=True)
class PhaseTable:
    """A vendor's phase table (primary and, for ModelArts, secondary phases)."""

    vendor: str
    phases: dict[str, PhaseRule]
    secondary: dict[str, PhaseRule]

    def as_json(self) -> dict[str, Any]:
        """The shape `tjg phases` prints."""
        out: dict[str, Any] = {k: {"phase": r.phase, "terminal": r.terminal} for k, r in self.phases.items()}
        if self.secondary:
            out["secondary"] = {k: {"phase": r.phase, "terminal": r.terminal}
                                for k, r in self.secondary.items()}
        return out


def _rules(raw: Any, where: str, required: tuple[str, ...]) -> dict[str, PhaseRule]:
    if not isinstance(raw, dict):
        raise MappingError(f"{where}: expected a mapping of vendor phase to rule")
    rules: dict[str, PhaseRule] = {}
    for name, row in raw.items():
        if not isinstance(row, dict) or row.get("phase") not in NEUTRAL_PHASES:
            raise MappingError(f"{where}.{name}: 'phase' must be one of {', '.join(NEUTRAL_PHASES)}")
        terminal = bool(row.get("terminal", False))
        if terminal != (row["phase"] in TERMINAL):
            raise MappingError(f"{where}.{name}: terminal={terminal} contradicts neutral phase {row['phase']}")
        rules[str(name)] = PhaseRule(row["phase"], terminal, bool(row.get("degraded", False)))
    missing = [p for p in required if p not in rules]
    if missing:
        raise MappingError(f"{where}: missing vendor phases {', '.join(missing)}")
    return rules


@cache
def load_phase_table(path: Path, required: tuple[str, ...],
                     required_secondary: tuple[str, ...] = ()) -> PhaseTable:
    """Load and check a phase table file (once per file): every vendor phase in `required` must have a row."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise MappingError(f"{path.name}: not a mapping")
    phases = _rules(data.get("phases"), f"{path.name}:phases", required)
    secondary = _rules(data["secondary"], f"{path.name}:secondary", required_secondary) \
        if required_secondary or "secondary" in data else {}
    return PhaseTable(str(data.get("vendor", path.stem)), phases, secondary)


@dataclass(frozen=True)
class Flavor:
    """A ModelArts resource flavor."""

    id: str
    gpus: int
    gpu_type: str | None
    cpu: float
    memory_gi: float


@cache
def flavors() -> tuple[Flavor, ...]:
    """The ModelArts flavor table, smallest first."""
    data = yaml.safe_load((HERE / "flavors.yaml").read_text())
    out = [Flavor(str(f["id"]), int(f["gpus"]), f.get("gpu_type"), float(f["cpu"]), float(f["memory_gi"]))
           for f in data["flavors"]]
    return tuple(sorted(out, key=lambda f: (f.gpus, f.cpu, f.memory_gi)))


@cache
def gpu_types() -> dict[str, dict[str, Any]]:
    """GPU type -> {runai_node_pools: [...]}; keys are matched case-insensitively."""
    data = yaml.safe_load((HERE / "gpus.yaml").read_text())
    return {str(k): dict(v or {}) for k, v in data["gpu_types"].items()}


def canonical_gpu_type(name: str) -> str | None:
    """The table's spelling of a GPU type, or None when unknown."""
    for k in gpu_types():
        if k.lower() == name.lower():
            return k
    return None


@cache
def prices() -> tuple[str, dict[str, dict[str, float]]]:
    """(currency, vendor kind -> node pool or flavor -> price of one GPU-hour)."""
    data = yaml.safe_load((HERE / "prices.yaml").read_text())
    if not isinstance(data, dict):
        raise MappingError("prices.yaml: not a mapping")
    table: dict[str, dict[str, float]] = {}
    for vendor in (k for k in data if k != "currency"):
        rows = data.get(vendor) or {}
        if not isinstance(rows, dict) or not all(isinstance(v, int | float) and v >= 0 for v in rows.values()):
            raise MappingError(f"prices.yaml:{vendor}: expected a mapping of name to a price >= 0")
        table[vendor] = {str(k): float(v) for k, v in rows.items()}
    return str(data.get("currency") or "USD"), table


@cache
def priorities() -> dict[str, dict[str, Any]]:
    """Neutral priority -> vendor value, per vendor."""
    data: dict[str, dict[str, Any]] = yaml.safe_load((HERE / "priorities.yaml").read_text())
    return data


@dataclass(frozen=True)
class StorageRule:
    """Rewrite a URI prefix when going to a backend of kind `target`."""

    target: str
    source: str
    dest: str


@cache
def storage_rules() -> tuple[StorageRule, ...]:
    """The storage rewrite table."""
    data = yaml.safe_load((HERE / "storage.yaml").read_text()) or {}
    return tuple(StorageRule(str(r["target"]), str(r["from"]), str(r["to"])) for r in data.get("rules") or [])


def rewrite_uri(uri: str, target: str) -> tuple[str, StorageRule] | None:
    """Apply the first storage rule for `target` matching `uri`; None when no rule matches."""
    probe = uri if uri.endswith("/") else uri + "/"
    for rule in storage_rules():
        if rule.target == target and probe.startswith(rule.source):
            rest = probe[len(rule.source):]
            new = rule.dest + rest
            if not uri.endswith("/") and new.endswith("/"):
                new = new[:-1]
            return new, rule
    return None


@cache
def image_rules() -> tuple[StorageRule, ...]:
    """The image registry rewrite table (same shape as the storage rules)."""
    data = yaml.safe_load((HERE / "images.yaml").read_text()) or {}
    return tuple(StorageRule(str(r["target"]), str(r["from"]), str(r["to"])) for r in data.get("rules") or [])


def rewrite_image(image: str, target: str) -> str | None:
    """The image as the `target` kind pulls it, or None when no rule applies."""
    for rule in image_rules():
        if rule.target == target and image.startswith(rule.source):
            return rule.dest + image[len(rule.source):]
    return None


def flavor_by_id(flavor_id: str) -> Flavor | None:
    """A ModelArts flavor of the table by id."""
    return next((f for f in flavors() if f.id == flavor_id), None)
