"""Jobs made outside the gateway (vendor UI, CLI, SDK), imported for the unified list."""

from __future__ import annotations

import time
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError

from gateway.core.adapter import Adapter, VendorJob
from gateway.core.ids import new_job_id
from gateway.store import Store

log = structlog.get_logger(__name__)


async def import_job(store: Store, adapter: Adapter[Any], vj: VendorJob) -> int:
    """Store a vendor job the gateway did not submit, as `origin: external`. Returns 1 if imported."""
    if vj.job_id_hint and await store.jobs.get(vj.job_id_hint) is not None:
        return 0  # ours after all (e.g. adopted in another replica a moment ago)
    vj = await adapter.describe(vj)
    if vj.job_id_hint and await store.jobs.get(vj.job_id_hint) is not None:
        return 0
    now = time.time()
    spec: dict[str, Any] = dict(vj.spec)
    row: dict[str, Any] = {
        "id": new_job_id(), "tenant": None, "name": str(spec.get("name") or vj.handle.vendor_name)[:80],
        "backend": adapter.name, "project": vj.project, "vendor_name": vj.handle.vendor_name,
        "vendor_kind": vj.handle.vendor_kind, "backend_job_id": vj.handle.backend_job_id, "spec": spec,
        "report": [], "labels": spec.get("labels") or {}, "phase": vj.status.phase.value,
        "terminal": vj.status.terminal, "status": vj.status.model_dump(mode="json"), "origin": "external",
        "submit_state": "submitted", "submit_error": None, "cancel_requested": False, "created_at": now,
        "updated_at": now, "deleted_at": None, "migrated_from": None, "migrated_to": None,
    }
    try:
        await store.jobs.create(row)
    except IntegrityError:
        return 0  # another replica imported it first
    log.info("external_job_imported", backend=adapter.name, vendor_id=vj.handle.backend_job_id,
             vendor_name=vj.handle.vendor_name)
    return 1
