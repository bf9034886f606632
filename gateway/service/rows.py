"""Store rows as core models and back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.core.adapter import Handle
from gateway.core.models import Job, JobStatus, ReportEntry


def dt(epoch: float | None) -> datetime | None:
    """An epoch timestamp as an aware datetime."""
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def to_job(row: dict[str, Any]) -> Job:
    """A store row as the API's Job."""
    status = dict(row["status"] or {})
    for key in ("observed_at", "idle_since"):
        if status.get(key) is not None and not isinstance(status[key], str):
            status[key] = dt(status[key])
    return Job(id=row["id"], name=row["name"], kind=kind_of(row), backend=row["backend"],
               backend_job_id=row["backend_job_id"],
               vendor_name=row["vendor_name"], project=row["project"], spec=row["spec"],
               status=JobStatus.model_validate(status), labels=row["labels"] or {},
               created_at=dt(row["created_at"]) or datetime.now(UTC),
               updated_at=dt(row["updated_at"]) or datetime.now(UTC),
               report=[ReportEntry.model_validate(e) for e in row["report"] or []],
               origin=row["origin"], tenant=row["tenant"], migrated_from=row["migrated_from"],
               migrated_to=row["migrated_to"], deleted=row["deleted_at"] is not None,
               placement=row.get("placement"), attempt=int(row.get("attempt") or 1))


def status_json(status: JobStatus) -> dict[str, Any]:
    """A status as stored (JSON-safe)."""
    return status.model_dump(mode="json")


INFERENCE_VENDOR_KINDS = ("inference", "service")  # Run:ai inferences, ModelArts real-time services


def kind_of(row: dict[str, Any]) -> str:
    """The neutral kind of a job row: inference or training."""
    return "inference" if row.get("vendor_kind") in INFERENCE_VENDOR_KINDS else "training"


def handle_of(row: dict[str, Any]) -> Handle:
    """The vendor handle of a submitted job."""
    return Handle(row["backend_job_id"], row["vendor_name"], row["vendor_kind"] or "training")
