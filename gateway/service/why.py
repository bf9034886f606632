"""Why a job waits or why it ended, and what the backends have free: `GET /v1/jobs/{id}/why`,
`GET /v1/backends/{name}/capacity`, `tjg why`, `tjg backends --capacity`.

Everything here reads the store (statuses and the capacity the sync loops last read); no vendor is called
on a request's path, so the answer is as fresh as the sync and says how old its figures are.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.core.capacity import Capacity
from gateway.core.models import Phase, Reason
from gateway.service.principal import Principal
from gateway.store import Store
from gateway.store.visibility import sees

PRIORITY_RANK = {"low": 0, "normal": 1, None: 1, "high": 2}

# What to try, by reason of an ended job.
AFTER_END: dict[str, str] = {
    Reason.IMAGE_PULL: "check the image name and tag, and that the backend's registry credentials can pull it",
    Reason.OOM: "ask for more memory (resources.memory) or a larger flavor; the container was killed at its limit",
    Reason.NODE_FAILURE: "the vendor's node failed, not your job: submit it again (or migrate it)",
    Reason.USER_ERROR: "the job's own process failed: read `tjg logs ID` for its last lines",
    Reason.RUNTIME_LIMIT: "it reached its run-time limit: raise max_runtime_seconds, or checkpoint and resume",
    Reason.PREEMPTED: "it was preempted: submit it non-preemptible (preemptible: false), with a higher priority, "
                      "or to a backend with free GPUs",
    Reason.VENDOR_ERROR: "the backend reported an abnormal end: see `tjg events ID` for the vendor's words",
}


async def capacity_of(store: Store, backend: str) -> Capacity:
    """The capacity last read from a backend, its age, and this gateway's jobs queued there."""
    got = await store.capacity.get(backend)
    cap = Capacity.model_validate(got["snapshot"]) if got and got["snapshot"] else Capacity(backend=backend)
    if got:
        cap.age_seconds = None if got["age_seconds"] is None else round(got["age_seconds"], 1)
        cap.error = got["error"]
    cap.queued_jobs = await store.jobs.count_in_phase(backend, Phase.QUEUED.value)
    return cap


def _asks(spec: dict[str, Any]) -> dict[str, Any]:
    res = spec.get("resources") or {}
    nodes = int(res.get("nodes") or 1)
    per_node = float(res.get("gpus") or 0)
    return {"gpus_per_node": per_node, "nodes": nodes, "gpus": per_node * nodes, "gpu_type": res.get("gpu_type"),
            "priority": spec.get("priority") or "normal", "preemptible": spec.get("preemptible")}


def _seen(cap: Capacity, asks: dict[str, Any]) -> dict[str, Any]:
    gpu_type, per_node = asks["gpu_type"], asks["gpus_per_node"] or None
    pools = cap.pools_for(gpu_type, per_node)
    totals = [p.total_gpus for p in pools if p.total_gpus is not None]
    return {"backend": cap.backend, "gpu_type": gpu_type, "free_gpus": cap.free_for(gpu_type, per_node),
            "total_gpus": sum(totals) if totals else None, "pools": [p.pool for p in pools],
            "queued_jobs": cap.queued_jobs, "age_seconds": cap.age_seconds, "error": cap.error}


async def why(store: Store, backends: list[str], row: dict[str, Any], who: Principal) -> dict[str, Any]:
    """The `why` answer for one job row (already checked visible to `who`)."""
    status = row["status"] or {}
    phase = row["phase"]
    spec = row["spec"] or {}
    asks = _asks(spec)
    reason = status.get("reason")
    since = status.get("pending_since") if phase == Phase.QUEUED.value else None
    out: dict[str, Any] = {
        "job_id": row["id"], "name": row["name"], "backend": row["backend"], "phase": phase,
        "terminal": bool(row["terminal"]), "reason": reason, "reason_message": status.get("reason_message"),
        "vendor_phase": status.get("vendor_phase"), "message": status.get("message"),
        "exit_code": status.get("exit_code"), "since": since, "asks": asks, "capacity": [], "suggestions": []}
    if since:
        started = datetime.fromisoformat(str(since).replace("Z", "+00:00"))
        out["waiting_seconds"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    caps = {b: await capacity_of(store, b) for b in backends}
    out["capacity"] = [_seen(c, asks) for c in caps.values()]
    hints: list[str] = out["suggestions"]
    if row["terminal"]:
        out["summary"] = _ended(row, reason)
        if reason in AFTER_END:
            hints.append(AFTER_END[reason])
        return out
    if phase != Phase.QUEUED.value:
        out["summary"] = f"not waiting: the job is {phase} on {row['backend']}"
        return out
    out["summary"] = _waiting(row, reason, asks, caps.get(row["backend"]))
    need = asks["gpus"]
    for name, cap in caps.items():
        if name == row["backend"]:
            continue
        free = cap.free_for(asks["gpu_type"], asks["gpus_per_node"] or None)
        if free is not None and free >= need > 0:
            what = f"{free:g} free {asks['gpu_type'] or ''} GPUs".replace("  ", " ")
            hints.append(f"{name} has {what} (seen {cap.age_seconds if cap.age_seconds is not None else '?'} s ago): "
                         f"tjg migrate {row['id']} --to {name}")
    own = caps.get(row["backend"])
    free_here = own.free_for(asks["gpu_type"], asks["gpus_per_node"] or None) if own else None
    if free_here is not None and 0 < free_here < need:
        hints.append(f"ask for fewer GPUs: {free_here:g} are free on {row['backend']} now, the job asks {need:g}")
    if reason in (Reason.QUOTA_EXCEEDED, Reason.NO_CAPACITY):
        rank = PRIORITY_RANK.get(asks["priority"], 1)
        # Only jobs the caller may see are named: another tenant's job is none of its business.
        holders = [j for j in await store.jobs.running(row["backend"])
                   if j["project"] == row["project"] and j["id"] != row["id"] and sees(who, j)
                   and PRIORITY_RANK.get((j["spec"] or {}).get("priority"), 1) < rank]
        for j in holders[:3]:
            hints.append(f"{j['name']} ({j['id']}) holds GPUs of project {row['project']} at a lower priority: "
                         f"suspend or cancel it to make room")
    if reason == Reason.QUOTA_EXCEEDED and asks["preemptible"] is False:
        hints.append("submit it preemptible: preemptible work may run over the project's quota")
    if not hints:
        hints.append("nothing to do but wait: no backend has the GPUs free now")
    return out


def _waiting(row: dict[str, Any], reason: str | None, asks: dict[str, Any], cap: Capacity | None) -> str:
    where = row["backend"]
    gpus = f"{asks['gpus']:g} {asks['gpu_type'] or ''} GPU(s)".replace("  ", " ")
    free = cap.free_for(asks["gpu_type"], asks["gpus_per_node"] or None) if cap else None
    seen = "" if free is None else f"; {free:g} free there when last seen"
    said: dict[str, str] = {
        Reason.NO_CAPACITY: f"waiting for {gpus} on {where}: the backend has not enough free{seen}",
        Reason.QUOTA_EXCEEDED: f"waiting on {where}: project {row['project']}'s quota does not allow {gpus}",
        Reason.PREEMPTED: f"preempted on {where} and waiting to run again ({gpus}{seen})"}
    return said.get(reason or "", f"waiting on {where} ({gpus}); the vendor gives no reason the gateway knows")


def _ended(row: dict[str, Any], reason: str | None) -> str:
    status = row["status"] or {}
    code = status.get("exit_code")
    tail = f" (exit code {code})" if code not in (None, 0) else ""
    return f"{row['phase']} on {row['backend']}: {reason or 'no reason given'}{tail}"
