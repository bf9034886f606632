"""What an attempt is sent as: the spec converted for its backend (as a migration converts it), with
TJG_ATTEMPT, the checkpoint in the vendor's terms, and the attempt's own vendor name. A pure function of the
stored row, so that a create whose answer was lost is settled by the same name it was sent under."""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime
from typing import Any

from gateway.core.adapter import REGISTRY, Adapter
from gateway.core.models import Attempt, DataMount, JobSpec, ReportEntry
from gateway.core.recovery import attempt_name
from gateway.core.telemetry import job_gpus, running_seconds
from gateway.core.translation import Translation
from gateway.store import Store
from mappings import rewrite_uri

CHECKPOINT_MOUNT = "tjg-checkpoint"


def convert_spec(spec: dict[str, Any], source_kind: str, target_kind: str,
                 target_backend: str) -> tuple[dict[str, Any], list[ReportEntry]]:
    """The source spec for the target backend: an explicit vendor flavor/node pool becomes GPU type and
    size through mappings/ (or is dropped with the reason). Storage and images are mapped by the
    target's translator."""
    out = copy.deepcopy(spec)
    out["backend"] = target_backend
    notes: list[ReportEntry] = []
    res = out.get("resources") or {}
    flavor = res.get("flavor")
    if flavor and source_kind != target_kind:
        del res["flavor"]
        known = REGISTRY.get(source_kind).describe_flavor(flavor)
        if known is None:
            notes.append(ReportEntry(field="resources.flavor", outcome="dropped",
                                     detail=f"{source_kind} flavor {flavor} is not in the mapping tables"))
        else:
            neutral, words = known
            for key, value in neutral.items():
                res.setdefault(key, value)
            notes.append(ReportEntry(field="resources.flavor", outcome="approximated", detail=words))
        out["resources"] = res
    return out, notes


def checkpoint_uri(uri: str, target_kind: str) -> str:
    """A checkpoint URI in the terms of a backend kind (mappings/storage.yaml; unchanged when no rule applies)."""
    got = rewrite_uri(uri, target_kind)
    return got[0] if got is not None else uri


def attempt_spec(spec: JobSpec, n: int, target_kind: str) -> tuple[JobSpec, list[ReportEntry]]:
    """The spec attempt `n` is translated from, and report lines for the gateway's own fields. A spec with
    neither `retry` nor `checkpoint` is sent as it is."""
    if spec.retry is None and spec.checkpoint is None:
        return spec, []
    env = dict(spec.env or {})
    env["TJG_ATTEMPT"] = str(n)
    update: dict[str, Any] = {"name": attempt_name(spec.name, n)}
    notes: list[ReportEntry] = []
    if spec.checkpoint is not None:
        vendor_uri = checkpoint_uri(spec.checkpoint.uri, target_kind)
        env["TJG_CHECKPOINT_URI"] = vendor_uri
        env["TJG_CHECKPOINT_DIR"] = spec.checkpoint.path
        mount = DataMount(name=CHECKPOINT_MOUNT, uri=spec.checkpoint.uri, path=spec.checkpoint.path,
                          read_only=False)
        update["outputs"] = [*(spec.outputs or []), mount]
        notes.append(ReportEntry(field="checkpoint", outcome="exact", detail=(
            f"TJG_CHECKPOINT_URI={vendor_uri}" + ("" if vendor_uri == spec.checkpoint.uri else
                                                   f" (rewritten from {spec.checkpoint.uri})")
            + f", mounted read-write at {spec.checkpoint.path} (TJG_CHECKPOINT_DIR)")))
    if spec.retry is not None:
        r = spec.retry
        words = f"the gateway makes up to {r.max_attempts} attempt(s) on {', '.join(r.on) or 'no reason'}" + \
            (f" or exit codes {', '.join(map(str, r.exit_codes))}" if r.exit_codes else "") + \
            (", placed again each time (failover)" if r.failover else ", on the same backend")
        if spec.max_retries is None:
            # The vendor's own restarts would multiply with the gateway's attempts: none unless asked for.
            update["max_retries"] = 0
            words += "; max_retries 0 sent: the vendor restarts nothing within an attempt"
        else:
            words += f"; each attempt may restart {spec.max_retries} time(s) on the vendor (max_retries): " \
                     f"up to {r.max_attempts * (spec.max_retries + 1)} runs in all"
        notes.append(ReportEntry(field="retry", outcome="exact", detail=words))
    update["env"] = env
    return spec.model_copy(update=update), notes


def translate_attempt(adapter: Adapter[Any], row_spec: dict[str, Any], n: int, job_id: str,
                      configured_kinds: dict[str, str]) -> Translation:
    """The translation of attempt `n` of a job for `adapter`'s backend: converted from the kind of the
    backend its spec names (when that is another kind), prepared as `attempt_spec` says."""
    named = row_spec.get("backend")
    source_kind = configured_kinds.get(named) if isinstance(named, str) else None
    data, notes = (convert_spec(row_spec, source_kind, adapter.kind, adapter.name)
                   if source_kind is not None and source_kind != adapter.kind else (row_spec, []))
    spec, own = attempt_spec(JobSpec.model_validate(data), n, adapter.kind)
    tr = adapter.translate(spec, job_id)
    tr.report = notes + tr.report + own
    return tr


def attempt_windows(row: dict[str, Any], ended: list[dict[str, Any]], now: float
                    ) -> list[tuple[dict[str, Any], float, float]]:
    """Each attempt of a job as (its record, from, until): the ended ones from the attempts table, then the
    current one (the job row; until now, or its last write once the job has ended)."""
    out = [(a, float(a["started_at"]), float(a["ended_at"])) for a in ended]
    start = float(row.get("attempt_at") or row["created_at"])
    until = float(row["updated_at"]) if row["terminal"] else now
    current = {"n": int(row.get("attempt") or 1), "backend": row["backend"], "vendor_name": row["vendor_name"],
               "backend_job_id": row["backend_job_id"], "status": row["status"] or {}, "current": True}
    return [*out, (current, start, max(start, until))]


def attempt_records(row: dict[str, Any], ended: list[dict[str, Any]], changes: list[tuple[float, str]],
                    now: float) -> list[Attempt]:
    """A job's attempts as the API shows them, with the GPU-hours of each (from its phase changes)."""
    gpus = job_gpus(row["spec"] or {}, row["status"])
    out = []
    for a, start, until in attempt_windows(row, ended, now):
        status = a["status"] or {}
        current = bool(a.get("current"))
        seconds = running_seconds(changes, start, until)
        out.append(Attempt(
            n=a["n"], backend=a["backend"], vendor_name=a["vendor_name"], backend_job_id=a["backend_job_id"],
            started_at=datetime.fromtimestamp(start, UTC),
            ended_at=None if current and not row["terminal"] else datetime.fromtimestamp(until, UTC),
            phase=status.get("phase"), reason=status.get("reason"), reason_message=status.get("reason_message"),
            exit_code=status.get("exit_code"), gpu_hours=round(seconds * gpus / 3600, 6)))
    return out


async def attempts_of(store: Store, row: dict[str, Any]) -> list[Attempt]:
    """Every attempt of one job (two small reads: its ended attempts and its phase changes)."""
    ended = (await store.attempts.of([row["id"]])).get(row["id"], [])
    changes = (await store.events.phases_of([row["id"]])).get(row["id"], [])
    return attempt_records(row, ended, changes, time.time())
