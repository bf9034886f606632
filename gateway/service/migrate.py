"""Moving a job to another backend: spec conversion through mappings/, a side-by-side report,
submit on the target, then the source action (keep, suspend or cancel)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pydantic
import structlog
from pydantic import BaseModel, ConfigDict, Field

from gateway.core.adapter import Capability
from gateway.core.crashpoints import crash_point
from gateway.core.errors import BackendError, Conflict, ValidationError
from gateway.core.ids import new_job_id
from gateway.core.models import Job, JobSpec, Phase, ReportEntry, parse_spec
from gateway.core.placement import Placement
from gateway.core.translation import deep_merge, enforce_strict
from gateway.service.attempts import convert_spec
from gateway.service.jobs import SUSPENDABLE, JobService
from gateway.service.principal import Principal
from gateway.service.rows import to_job

log = structlog.get_logger(__name__)


class MigrateRequest(BaseModel):
    """POST /v1/jobs/{id}/migrate."""

    model_config = ConfigDict(extra="forbid")

    backend: str = Field(..., min_length=1, description="Target backend name.")
    source_action: Literal["keep", "suspend", "cancel"] = Field(
        "keep", description="What happens to the source job once the target accepted the new one.")
    strict: bool = Field(False, description="Refuse if the target would drop any field.")
    overrides: dict[str, Any] = Field(default_factory=dict,
                                      description="A partial JobSpec deep-merged into the source's spec.")


def compare(source: list[ReportEntry], target: list[ReportEntry]) -> list[dict[str, Any]]:
    """Field by field: how the source backend expressed it and how the target will."""
    src = {e.field: e for e in source}
    tgt = {e.field: e for e in target}
    fields = list(dict.fromkeys([*src, *tgt]))
    none = {"outcome": None, "detail": "not set"}
    return [{"field": f,
             "source": src[f].model_dump() if f in src else none,
             "target": tgt[f].model_dump() if f in tgt else none} for f in fields]


@dataclass
class Migration:
    """A migration's answer: the dry-run document, or the target job (replayed for a repeated key)."""

    dry_run: dict[str, Any] | None = None
    job: Job | None = None
    replayed: bool = False


async def migrate(svc: JobService, who: Principal, job_id: str, body: Any, dry_run: bool,
                  idempotency_key: str | None = None, placement: Placement | None = None) -> Migration:
    """The dry run, or the target job. Exactly once: a source gets one target
    (claimed in the target's create transaction); a repeat with the same Idempotency-Key replays it."""
    try:
        req = MigrateRequest.model_validate(body)
    except pydantic.ValidationError as err:
        errors = [{"loc": [str(x) for x in e["loc"]], "msg": "unknown field" if e["type"] == "extra_forbidden"
                   else e["msg"]} for e in err.errors()]
        raise ValidationError(f"invalid migrate request: {'.'.join(errors[0]['loc'])}: {errors[0]['msg']}",
                              errors=errors) from err
    row = await svc.row(who, job_id)
    replay_key = idempotency_key is not None and await svc.store.keys.find(who.tenant, idempotency_key) is not None
    if row["deleted_at"] is not None and not replay_key:
        raise Conflict(f"job {job_id} is deleted: nothing to migrate (submit its spec again instead)")
    source = svc.adapter(row["backend"])
    target = svc.adapter(req.backend)
    if req.backend == row["backend"]:
        raise ValidationError(f"job {job_id} is already on {req.backend}",
                              errors=[{"loc": ["backend"], "msg": "same as the source backend"}])
    replay = replay_key
    if row["migrated_to"] and not (replay and not dry_run):
        raise Conflict(f"job {job_id} was already migrated to {row['migrated_to']}",
                       extra={"job_id": row["migrated_to"]})
    spec, notes = convert_spec(row["spec"], source.kind, target.kind, req.backend)
    if req.overrides:
        spec = deep_merge(spec, req.overrides)
        spec["backend"] = req.backend
    new_id = new_job_id()
    parsed = parse_spec(spec)
    tr = target.translate(parsed, new_id)
    report = notes + tr.report
    if req.strict:
        enforce_strict(report)
    phase = Phase(row["phase"])
    if req.source_action == "suspend":
        source.require(Capability.SUSPEND)
        if phase not in SUSPENDABLE and phase not in (Phase.SUSPENDING, Phase.SUSPENDED):
            raise Conflict(f"cannot suspend job {job_id} while it is {phase.value}")
    if dry_run:
        try:
            src_tr = source.translate(JobSpec.model_validate(row["spec"]), job_id)
            src_request = {"method": src_tr.method, "path": src_tr.path, "body": src_tr.body}
            src_report = src_tr.report
        except (pydantic.ValidationError, ValidationError):  # an imported spec outside the contract
            src_request, src_report = {}, []
        return Migration(dry_run={
            "backend": req.backend, "request": {"method": tr.method, "path": tr.path, "body": tr.body},
            "report": [e.model_dump() for e in report], "source": {"backend": row["backend"], "request": src_request},
            "comparison": compare(src_report, report)})
    # The source action is written with the target's create (the transaction that claims the source), so a
    # crash between the two cannot lose it: this request, its retry or recovery does it, once.
    owed = req.source_action if req.source_action in ("cancel", "suspend") else None
    try:
        result = await svc.submit(who, spec, req.strict, idempotency_key, migrated_from=job_id, job_id=new_id,
                                  extra_report=notes, source_action=owed, placement=placement)
    except BackendError:  # refused by the target: the source may be migrated again
        await svc.store.jobs.release_migration(job_id, new_id)
        raise
    crash_point("migrate-target-stored")  # (tests: the target exists, the source action is owed)
    warning = await finish_source_action(svc, job_id)
    if result.replayed:
        return Migration(job=result.job, replayed=True)
    warnings = [warning] if warning else []
    log.info("job_migrated", source=job_id, target=result.job.id, backend=req.backend,
             source_action=req.source_action)
    job: Job = to_job(await svc.row(who, result.job.id))
    job.warnings = warnings
    return Migration(job=job)


async def finish_source_action(svc: JobService, source_id: str) -> str | None:
    """Do what a migration still owes its source (cancel or suspend), then clear it; a failure keeps it owed
    (recovery tries again) and is returned as a warning."""
    row = await svc.store.jobs.get(source_id)
    if row is None or not row.get("source_action"):
        return None
    action = str(row["source_action"])
    system = Principal(tenant=row["tenant"] or "", role="admin")
    try:
        if action == "cancel" and not row["terminal"]:
            await svc.cancel(system, source_id)
        elif action == "suspend" and Phase(row["phase"]) in SUSPENDABLE and row["submit_state"] == "submitted":
            await svc.suspend(system, source_id)
    except Conflict:  # it ended (or may no longer be suspended) meanwhile: nothing is owed
        pass
    except BackendError as err:
        log.warning("migrate_source_action_failed", job_id=source_id, action=action, error=err.detail)
        return f"the new job was created but the source {action} failed (it is tried again): {err.detail}"
    await svc.store.jobs.set_fields(source_id, source_action=None)
    log.info("migrate_source_action_done", job_id=source_id, action=action)
    return None
