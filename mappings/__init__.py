"""Declarative mapping tables (phases, GPU types, flavors, priorities, prices, storage, images) and their
loaders. Each file is validated by a pydantic model when it is first read, so a malformed or incomplete table
fails at load with the file and the place named, never as a KeyError at first use."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

HERE = Path(__file__).parent

NEUTRAL_PHASES = ("QUEUED", "STARTING", "RUNNING", "SUSPENDING", "SUSPENDED", "SUCCEEDED",
                  "FAILED", "CANCELLING", "CANCELLED", "UNKNOWN")
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
NeutralPhase = Literal["QUEUED", "STARTING", "RUNNING", "SUSPENDING", "SUSPENDED", "SUCCEEDED",
                       "FAILED", "CANCELLING", "CANCELLED", "UNKNOWN"]


class MappingError(ValueError):
    """A mapping table is malformed or incomplete."""


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


M = TypeVar("M", bound=BaseModel)


def _load(model: type[M], path: Path) -> M:
    """Read a YAML table and validate it, or a MappingError naming the file and the first bad place."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise MappingError(f"{path.name}: not valid YAML: {err}") from err
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top)"
        raise MappingError(f"{path.name}:{where}: {first['msg']}") from err


# -- phases ---------------------------------------------------------------------------------------------------
class PhaseRule(_Table):
    """One row of a phase table: the neutral phase a vendor phase becomes."""

    phase: NeutralPhase
    terminal: bool = False
    degraded: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> PhaseRule:
        if self.terminal != (self.phase in TERMINAL):
            raise ValueError(f"terminal={self.terminal} contradicts neutral phase {self.phase}")
        return self


class _PhaseFile(_Table):
    vendor: str | None = None
    phases: dict[str, PhaseRule]
    secondary: dict[str, PhaseRule] | None = None


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


@cache
def load_phase_table(path: Path, required: tuple[str, ...],
                     required_secondary: tuple[str, ...] = ()) -> PhaseTable:
    """Load and check a phase table file (once per file): every vendor phase in `required` must have a row."""
    table = _load(_PhaseFile, path)
    secondary = table.secondary or {}
    if required_secondary and table.secondary is None:
        raise MappingError(f"{path.name}:secondary: missing (the vendor has secondary phases)")
    for where, rows, want in (("phases", table.phases, required), ("secondary", secondary, required_secondary)):
        missing = [p for p in want if p not in rows]
        if missing:
            raise MappingError(f"{path.name}:{where}: missing vendor phases {', '.join(missing)}")
    return PhaseTable(table.vendor or path.stem, dict(table.phases), dict(secondary))


# -- reasons --------------------------------------------------------------------------------------------------
NEUTRAL_REASONS = ("no-capacity", "quota-exceeded", "preempted", "image-pull", "oom", "node-failure", "user-error",
                   "runtime-limit", "vendor-error", "cancelled", "recovering")
NeutralReason = Literal["no-capacity", "quota-exceeded", "preempted", "image-pull", "oom", "node-failure",
                        "user-error", "runtime-limit", "vendor-error", "cancelled", "recovering"]


class _ReasonFile(_Table):
    vendor: str
    # signal kind (e.g. condition, end_reason) -> the vendor's word -> neutral reason
    signals: dict[str, dict[str, NeutralReason]] = Field(..., min_length=1)


@cache
def load_reason_table(path: Path, required: tuple[tuple[str, tuple[str, ...]], ...] = ()
                      ) -> dict[str, dict[str, str]]:
    """Load a vendor's reason table (once per file); `required` lists, per signal kind, vendor words that
    must have a row (e.g. every value of an enum in the vendor's OpenAPI)."""
    table = _load(_ReasonFile, path)
    for kind, words in required:
        rows = table.signals.get(kind)
        if rows is None:
            raise MappingError(f"{path.name}:signals.{kind}: missing")
        missing = [w for w in words if w not in rows]
        if missing:
            raise MappingError(f"{path.name}:signals.{kind}: missing vendor values {', '.join(missing)}")
    return {k: dict(v) for k, v in table.signals.items()}


# -- GPU types and flavors -------------------------------------------------------------------------------------
class _GpuFile(_Table):
    # GPU type -> per-vendor lists (e.g. the Run:ai node pools that carry it)
    gpu_types: dict[str, dict[str, list[str]]] = Field(..., min_length=1)


@cache
def gpu_types() -> dict[str, dict[str, Any]]:
    """GPU type -> {runai_node_pools: [...]}; keys are matched case-insensitively."""
    return {k: dict(v) for k, v in _load(_GpuFile, HERE / "gpus.yaml").gpu_types.items()}


def canonical_gpu_type(name: str) -> str | None:
    """The table's spelling of a GPU type, or None when unknown."""
    for k in gpu_types():
        if k.lower() == name.lower():
            return k
    return None


class Flavor(_Table):
    """A ModelArts resource flavor."""

    id: str = Field(..., min_length=1)
    gpus: int = Field(..., ge=0)
    gpu_type: str | None
    cpu: float = Field(..., gt=0)
    memory_gi: float = Field(..., gt=0)

    @model_validator(mode="after")
    def _gpus_have_a_type(self) -> Flavor:
        if (self.gpus > 0) != (self.gpu_type is not None):
            raise ValueError("gpu_type is set exactly when gpus > 0")
        return self


class _FlavorFile(_Table):
    flavors: list[Flavor] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _known(self) -> _FlavorFile:
        ids = [f.id for f in self.flavors]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate flavor ids: {sorted({i for i in ids if ids.count(i) > 1})}")
        return self


@cache
def flavors() -> tuple[Flavor, ...]:
    """The ModelArts flavor table, smallest first; every GPU type in it is one of gpus.yaml."""
    out = _load(_FlavorFile, HERE / "flavors.yaml").flavors
    unknown = sorted({f.gpu_type for f in out if f.gpu_type and canonical_gpu_type(f.gpu_type) is None})
    if unknown:
        raise MappingError(f"flavors.yaml: GPU types not in gpus.yaml: {', '.join(unknown)}")
    return tuple(sorted(out, key=lambda f: (f.gpus, f.cpu, f.memory_gi)))


def flavor_by_id(flavor_id: str) -> Flavor | None:
    """A ModelArts flavor of the table by id."""
    return next((f for f in flavors() if f.id == flavor_id), None)


# -- prices and priorities ---------------------------------------------------------------------------------------
class _PriceFile(_Table):
    model_config = ConfigDict(extra="allow", frozen=True)  # one mapping per backend kind beside the currency

    currency: str = "USD"

    @model_validator(mode="after")
    def _rows(self) -> _PriceFile:
        for kind, rows in (self.model_extra or {}).items():
            if not isinstance(rows, dict) or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in rows.values()):
                raise ValueError(f"{kind}: expected a mapping of name to a price >= 0")
        return self


@cache
def prices() -> tuple[str, dict[str, dict[str, float]]]:
    """(currency, vendor kind -> node pool or flavor -> price of one GPU-hour)."""
    table = _load(_PriceFile, HERE / "prices.yaml")
    rows = {str(kind): {str(k): float(v) for k, v in (r or {}).items()} for kind, r in (table.model_extra or {}).items()}
    return table.currency, rows


class PriorityValues(_Table):
    """A vendor's value for each neutral priority; all three are required."""

    low: str | int
    normal: str | int
    high: str | int


class _PriorityFile(RootModel[dict[str, PriorityValues]]):
    pass


@cache
def priorities() -> dict[str, dict[str, Any]]:
    """Neutral priority -> vendor value, per vendor kind."""
    return {k: v.model_dump() for k, v in _load(_PriorityFile, HERE / "priorities.yaml").root.items()}


# -- storage and images ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StorageRule:
    """Rewrite a URI prefix when going to a backend of kind `target`."""

    target: str
    source: str
    dest: str
    origin: str = "mappings/storage.yaml"  # where the rule is written (a report names it)


class _Rule(_Table):
    target: str = Field(..., min_length=1)
    source: str = Field(..., alias="from", min_length=1)
    dest: str = Field(..., alias="to", min_length=1)


class _RuleFile(_Table):
    rules: list[_Rule] = Field(default_factory=list)


def _rule_file(name: str) -> tuple[StorageRule, ...]:
    path = HERE / name
    if not (yaml.safe_load(path.read_text()) or {}):
        return ()
    return tuple(StorageRule(r.target, r.source, r.dest) for r in _load(_RuleFile, path).rules)


@cache
def storage_rules() -> tuple[StorageRule, ...]:
    """The storage rewrite table."""
    return _rule_file("storage.yaml")


def rewrite_uri(uri: str, target: str, extra: Sequence[tuple[str, str]] = ()
                ) -> tuple[str, StorageRule] | None:
    """Apply the first storage rule for `target` matching `uri` (the backend's own `extra` (from, to) rules
    first, then mappings/storage.yaml); None when no rule matches."""
    probe = uri if uri.endswith("/") else uri + "/"
    def folder(p: str) -> str:
        return p if p.endswith("/") else p + "/"

    own = tuple(StorageRule(target, folder(a), folder(b), "the backend's storage_rules") for a, b in extra)
    for rule in own + storage_rules():
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
    return _rule_file("images.yaml")


def rewrite_image(image: str, target: str) -> str | None:
    """The image as the `target` kind pulls it, or None when no rule applies."""
    for rule in image_rules():
        if rule.target == target and image.startswith(rule.source):
            return rule.dest + image[len(rule.source):]
    return None
