"""What every translator shares: the report builder, the vendor name, deep merge, strict mode."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from gateway.core.errors import ValidationError
from gateway.core.models import DryRun, JobSpec, Outcome, ReportEntry, VendorRequest


@dataclass
class Translation:
    """A vendor request built from a JobSpec, with its report."""

    method: str
    path: str
    body: dict[str, Any]
    report: list[ReportEntry]
    vendor_name: str
    kind: str = "training"
    project: str | None = None

    def dry_run(self, backend: str) -> DryRun:
        """The contract's dry-run shape."""
        return DryRun(backend=backend, request=VendorRequest(method=self.method, path=self.path, body=self.body),
                      report=self.report)


def spec_fields(spec: JobSpec) -> list[str]:
    """Paths of every field the user set, in the granularity the report uses."""
    data = spec.model_dump(exclude_unset=True, exclude_none=True)
    out: list[str] = []
    for key, value in data.items():
        if key in ("placement", "retry", "checkpoint"):  # the gateway's own, reported by it (service.attempts)
            continue
        if key in ("resources", "distributed", "extensions", "serving"):
            out.extend(f"{key}.{sub}" for sub in value)
        elif key in ("inputs", "outputs"):
            out.extend(f"{key}[{i}]" for i in range(len(value)))
        else:
            out.append(key)
    return out


class ReportBuilder:
    """Collects one outcome per spec field and refuses to finish with a field unaccounted for."""

    def __init__(self, spec: JobSpec) -> None:
        self._expected = spec_fields(spec)
        self._entries: dict[str, ReportEntry] = {}
        self._defaulted: list[ReportEntry] = []

    def add(self, field: str, outcome: Outcome, detail: str = "") -> None:
        """Record the outcome of a field the user set; for unset fields only `defaulted` is kept."""
        if field not in self._expected:
            if outcome == "defaulted":
                self._defaulted.append(ReportEntry(field=field, outcome=outcome, detail=detail))
            return
        if field in self._entries:
            raise RuntimeError(f"translator reported {field} twice")
        self._entries[field] = ReportEntry(field=field, outcome=outcome, detail=detail)

    def finish(self) -> list[ReportEntry]:
        """The report in spec order; a field without an outcome is a translator bug."""
        missing = [f for f in self._expected if f not in self._entries]
        if missing:
            raise RuntimeError(f"translator gave no outcome for {', '.join(missing)}")
        return [self._entries[f] for f in self._expected] + self._defaulted


def vendor_extension(spec: JobSpec, kind: str, rep: ReportBuilder, into: str) -> dict[str, Any] | None:
    """The spec's raw fields for backends of `kind` (reported as merged into `into`); any other kind's
    extensions are reported as dropped."""
    for other in spec.extensions or {}:
        if other != kind:
            rep.add(f"extensions.{other}", "dropped", f"applies to {other} backends only")
    mine = (spec.extensions or {}).get(kind)
    if mine is not None:
        rep.add(f"extensions.{kind}", "passthrough", f"deep-merged into {into}")
    return mine


def vendor_name(spec_name: str, job_id: str, limit: int = 63) -> str:
    """Deterministic vendor-side name: the spec name plus a short id from the gateway job id."""
    short = job_id.replace("-", "")[-8:].lower()
    head = spec_name[: limit - len(short) - 1].rstrip("-")
    return f"{head}-{short}"


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Merge `extra` into a copy of `base`; dicts merge recursively, anything else replaces."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def field_loc(field: str) -> list[str]:
    """A report's field path as an error's loc: inputs[0].uri -> ["inputs", "0", "uri"]."""
    return field.replace("]", "").replace("[", ".").split(".")


def enforce_strict(report: list[ReportEntry]) -> None:
    """Under strict mode any dropped field is a 422 naming it."""
    dropped = [e for e in report if e.outcome == "dropped"]
    if dropped:
        raise ValidationError(
            "strict mode: the target cannot express " + ", ".join(e.field for e in dropped),
            errors=[{"loc": field_loc(e.field), "msg": e.detail}
                    for e in dropped],
            extra={"report": [e.model_dump() for e in report]},
        )


def shell_join(argv: list[str]) -> str:
    """Quote an argv for a vendor field that holds one shell string."""
    import shlex

    return shlex.join(argv)


def parse_memory_gi(mem: str) -> float:
    """'64Gi' -> 64.0 (GiB); decimal units are converted too."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9,
             "T": 10**12, "": 1}
    for suffix in ("Ki", "Mi", "Gi", "Ti", "K", "M", "G", "T", ""):
        if mem.endswith(suffix) and (suffix or mem[-1:].isdigit()):
            num = mem[: len(mem) - len(suffix)] if suffix else mem
            return float(num) * units[suffix] / 2**30
    raise ValueError(f"bad memory quantity {mem!r}")


def mount_path(kind: str, name: str, path: str | None) -> str:
    """The container path of an input/output, defaulted when unset."""
    return path or f"/mnt/{kind}/{name}"


@dataclass
class MountInfo:
    """A data mount with defaults resolved."""

    kind: str  # inputs | outputs
    index: int
    name: str
    uri: str
    path: str
    read_only: bool
    defaults: list[str] = field(default_factory=list)


def subpath_env(mount: str) -> str:
    """The environment variable a backend that mounts a whole bucket or claim sets to the sub-path where the
    mount's URI lies under its mount path (so a program, or a TES entry script, finds the data there)."""
    return "TJG_SUBPATH_" + re.sub(r"[^A-Za-z0-9]", "_", mount).upper()


def mounts(spec: JobSpec) -> list[MountInfo]:
    """Inputs then outputs with path and read_only defaulted."""
    out: list[MountInfo] = []
    for kind, items in (("inputs", spec.inputs or []), ("outputs", spec.outputs or [])):
        for i, m in enumerate(items):
            defaults = []
            if m.path is None:
                defaults.append(f"path={mount_path(kind, m.name, None)}")
            ro = m.read_only if m.read_only is not None else kind == "inputs"
            out.append(MountInfo(kind, i, m.name, m.uri, mount_path(kind, m.name, m.path), ro, defaults))
    return out
