"""The Run:ai adapter: neutral operations on Run:ai trainings and distributed workloads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgspec

from adapters.runai import translate as tr
from adapters.runai.client import RunaiClient, filter_expr
from adapters.runai.config import RunaiConfig
from adapters.runai.metrics import RUNAI_METRICS, runai_metrics
from adapters.runai.metrics import epoch as _epoch
from adapters.runai.records import Workload
from gateway.core.adapter import (
    POLL_ATTEMPTS,
    REGISTRY,
    Adapter,
    Capability,
    Delta,
    Handle,
    Known,
    VendorJob,
)
from gateway.core.capacity import Capacity, PoolCapacity, QuotaUse
from gateway.core.delta import ChangeCursor
from gateway.core.errors import BackendNotFound, GatewayError
from gateway.core.models import JobSpec
from gateway.core.slices import Slices
from gateway.core.telemetry import JobMetrics
from gateway.core.translation import Translation
from mappings import gpu_types, prices

POOL_METRICS = ["TOTAL_GPU", "ALLOCATED_GPU", "UNALLOCATED_GPU"]
LISTED_TYPES = ("Training", "Distributed", "Inference")
DELTA_PAGE = 500


def _filter_stamp(epoch: float) -> str:
    """An epoch as Run:ai writes dates in filterBy (ISO 8601, milliseconds, UTC), rounded down."""
    return datetime.fromtimestamp(int(epoch * 1000) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@REGISTRY.register
class RunaiAdapter(Adapter[RunaiConfig]):
    """NVIDIA Run:ai."""

    kind = tr.KIND
    config_model = RunaiConfig
    simulator = "simulators.runai.app:create_simulator"
    storage = ("s3", "obs", "pvc", "nfs")  # (obs through its S3-compatible endpoint)
    unsupported = {
        Capability.LOGS: "Run:ai's control-plane API has no log endpoint for trainings; use kubectl or the UI",
    }
    unsupported_inference = {
        Capability.LOGS: "Run:ai's control-plane API has no log endpoint for workloads; use kubectl or the UI",
        Capability.SUSPEND: "Run:ai inference workloads cannot be suspended; scale them to 0 replicas instead",
        Capability.RESUME: "Run:ai inference workloads cannot be suspended, so there is nothing to resume",
        Capability.MULTI_NODE: "an inference workload scales by replicas",
    }

    def __init__(self, config: RunaiConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(config, session)
        self.client = RunaiClient(config, session)
        self.cursor: ChangeCursor[VendorJob | None] = ChangeCursor(config.delta_overlap, config.clock_skew)

    @classmethod
    def phase_table(cls) -> dict[str, Any]:
        """Run:ai's workload phases and what each becomes."""
        return tr.phase_table().as_json()

    @classmethod
    def describe_flavor(cls, flavor: str) -> tuple[dict[str, Any], str] | None:
        """A Run:ai node pool stands for the GPU type it carries (mappings/gpus.yaml)."""
        gpu = tr.gpu_type_of_node_pool(flavor)
        if gpu is None:
            return None
        return {"gpu_type": gpu}, f"Run:ai node pool {flavor} carries {gpu}: resources.gpu_type={gpu}"

    @classmethod
    def translate_for(cls, spec: JobSpec, config: RunaiConfig, job_id: str) -> Translation:
        """The create request for `spec` (no I/O)."""
        return tr.translate(spec, config, job_id)

    def _job(self, record: Workload, kind: str | None = None) -> VendorJob:
        wid = str(record.workloadId or record.id)
        vkind = kind or {"Distributed": "distributed", "Inference": "inference"}.get(record.type or "", "training")
        status = tr.normalize_phase(record.phase or record.actualPhase or None, record.phaseMessage or None,
                                    record.phaseReason, [(c.reason, c.message) for c in record.conditions or []],
                                    record.phaseUpdatedAt)
        if vkind == "inference":
            urls = [u for u in record.urls or [] if isinstance(u, str)]
            pods = record.requestedPods
            status = status.model_copy(update={
                "endpoint": urls[0] if urls else None,
                "ready_replicas": record.runningPods,
                "desired_replicas": pods.number if pods is not None else None})
        hint = None
        for a in (record.spec.annotations or []) if record.spec else []:
            if a.name == tr.JOB_ID_ANNOTATION:
                hint = a.value
        return VendorJob(handle=Handle(wid, str(record.name), vkind), status=status,
                         project=str(record.projectId) if record.projectId is not None else None,
                         raw=record, job_id_hint=hint)

    async def _create(self, translation: Translation) -> VendorJob:
        r = await self.client.create(translation.kind, translation.body)
        return self._job(r.decode(Workload), translation.kind)

    async def find_by_name(self, vendor_name: str, project: str | None = None,
                           kind: str | None = None) -> VendorJob | None:
        filters = [filter_expr("name", "==", vendor_name)] + \
            ([filter_expr("projectId", "==", project)] if project else [])
        page = await self.client.list_workloads(0, 10, filters)
        for w in page.workloads:
            if w.name == vendor_name and (project is None or str(w.projectId) == project):
                return self._job(w)
        return None

    async def get(self, handle: Handle) -> VendorJob | None:
        try:
            return self._job(await self.client.workload(handle.backend_job_id, attempts=POLL_ATTEMPTS),
                             handle.vendor_kind)
        except BackendNotFound:
            return None

    async def list_page(self, offset: int, limit: int, active_only: bool = False,
                        since: float | None = None) -> tuple[list[VendorJob], bool]:
        filters = ["phase!=Completed", "phase!=Failed"] if active_only else []
        if since is not None:
            stamp = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            filters.append(f"createdAt>={stamp}")
        page = await self.client.list_workloads(offset, min(limit, 500), filters or None, sort_by="createdAt",
                                                attempts=POLL_ATTEMPTS)
        jobs = []
        slices = Slices()  # normalizing a 500-record page takes a few ms: requests go on meanwhile
        for w in page.workloads:
            if w.type in LISTED_TYPES:
                jobs.append(self._job(w))
            await slices.turn()
        return jobs, page.next is not None

    delta_needs_known = False  # the changed-since query names what changed, ours or not

    def reconciled(self, started: float) -> None:
        self.cursor.reconciled(started)

    async def delta(self, known: list[Known]) -> Delta | None:
        """The workloads whose phase changed since the last look: one request, sorted by phaseUpdatedAt and
        filtered from the mark (gateway.core.delta), whatever the number of live jobs."""
        slices = Slices()

        async def fetch(since: float, offset: int) -> list[tuple[float, str, VendorJob | None]]:
            page = await self.client.list_workloads(offset, DELTA_PAGE, [f"phaseUpdatedAt>={_filter_stamp(since)}"],
                                                    sort_by="phaseUpdatedAt", attempts=POLL_ATTEMPTS)
            out: list[tuple[float, str, VendorJob | None]] = []
            for w in page.workloads:
                at = _epoch(w.phaseUpdatedAt) if w.phaseUpdatedAt else since
                out.append((at, str(w.id or w.workloadId), self._job(w) if w.type in LISTED_TYPES else None))
                await slices.turn()
            return out

        try:
            got = await self.cursor.changes(fetch, DELTA_PAGE)
        except GatewayError:
            self.cursor.forget()  # pages read so far moved nothing; read all next time, to be sure
            raise
        if got is None:
            return None
        found, requests = got
        return Delta(jobs=[j for j in found.values() if j is not None], requests=requests)

    async def describe(self, job: VendorJob) -> VendorJob:
        # The workloads list has no spec; the trainings/distributed GET has it.
        try:
            record = await self.client.training(job.handle.vendor_kind, job.handle.backend_job_id)
        except BackendNotFound:
            return job
        full = self._job(msgspec.convert(record, Workload, strict=False), job.handle.vendor_kind)
        full.status = job.status
        full.spec = tr.spec_from_vendor(record, self.name)
        return full

    async def cancel(self, handle: Handle) -> None:
        # Run:ai has no terminal "stopped for good" state: cancelling deletes the workload on the
        # vendor while the gateway keeps the record (and marks it CANCELLED once it is gone).
        await self.delete(handle)

    async def delete(self, handle: Handle) -> None:
        try:
            await self.client.delete(handle.vendor_kind, handle.backend_job_id)
        except BackendNotFound:
            return

    async def scale(self, handle: Handle, replicas: int) -> None:
        # A fixed count: both bounds of the autoscaler (0 scales to zero where the cluster allows it).
        await self.client.update_inference(handle.backend_job_id, {"spec": {"autoscaling": {
            "minReplicas": replicas, "maxReplicas": max(replicas, 1)}}})

    async def suspend(self, handle: Handle) -> None:
        await self.client.action(handle.vendor_kind, handle.backend_job_id, "suspend")

    async def resume(self, handle: Handle) -> None:
        await self.client.action(handle.vendor_kind, handle.backend_job_id, "resume")

    async def events(self, handle: Handle) -> list[dict[str, Any]]:
        try:
            evs = await self.client.events(handle.backend_job_id)
        except BackendNotFound:
            return []
        return [{"time": e.get("createdAt"), "type": e.get("type"), "reason": e.get("reason"),
                 "message": e.get("message"), "source": "runai"} for e in evs]

    async def capacity(self) -> Capacity:
        """Node pools with their GPU metrics, the queue (Pending workloads) and the projects' quotas."""
        carries = {p: t for t, v in gpu_types().items() for p in v.get("runai_node_pools") or []}
        pools: list[PoolCapacity] = []
        for np in await self.client.node_pools():
            name = str(np.get("name"))
            cluster = str(np.get("clusterId") or self.config.cluster_id or "")
            got = await self.client.node_pool_metrics(cluster, name, POOL_METRICS) if cluster else {}
            free = got.get("UNALLOCATED_GPU")
            if free is None and "TOTAL_GPU" in got and "ALLOCATED_GPU" in got:
                free = max(0.0, got["TOTAL_GPU"] - got["ALLOCATED_GPU"])
            pools.append(PoolCapacity(pool=name, gpu_type=carries.get(name), total_gpus=got.get("TOTAL_GPU"),
                                      free_gpus=free))
        quotas: list[QuotaUse] = []
        for pr in await self.client.projects():
            deserved = {str((r.get("nodePool") or {}).get("name")): r.get("gpu") or {} for r in pr.get("resources") or []}
            for st in (pr.get("status") or {}).get("nodePoolQuotaStatuses") or []:
                pool = str(st.get("nodePoolName"))
                gpu = deserved.get(pool, {})
                d = gpu.get("deserved")
                quotas.append(QuotaUse(project=str(pr.get("id")), pool=pool,
                                       deserved_gpus=None if d is None or d < 0 else float(d),  # -1: unlimited
                                       limit_gpus=gpu.get("limit"),
                                       used_gpus=float((st.get("allocated") or {}).get("gpu") or 0),
                                       requested_gpus=(st.get("requested") or {}).get("gpu")))
        waiting = await self.client.count_workloads(["phase==Pending"])
        if len(pools) == 1:
            pools[0].queued = waiting
        return Capacity(backend=self.name, observed_at=datetime.now(UTC), pools=pools, quotas=quotas)

    def gpu_hour_price(self, spec: dict[str, Any]) -> tuple[str, float] | None:
        try:
            body = self.translate(JobSpec.model_validate({**spec, "backend": self.name}), "0" * 32).body
        except (ValueError, GatewayError):  # an imported job's spec may not translate: no price, no guess
            return None
        pool = ((body.get("spec") or {}).get("nodePools") or ["default"])[0]
        price = prices()[1].get(self.kind, {}).get(pool)
        return None if price is None else (pool, price)

    async def metrics(self, handle: Handle, names: list[str], since: float, until: float) -> JobMetrics:
        wanted = {t for n in names for t in RUNAI_METRICS[n]}
        span = max(until - since, 1.0)
        samples = max(20, min(1000, int(span / 15)))  # one point per 15 s, at least 20
        try:
            got = await self.client.metrics(handle.backend_job_id, sorted(wanted), _stamp(since), _stamp(until),
                                            samples)
        except BackendNotFound:
            out = JobMetrics()
            for n in names:
                out.add(n, "unavailable", "the backend no longer has the job")
            return out
        series: dict[str, list[list[tuple[float, float]]]] = {}
        for m in got:
            pts = [(_epoch(v["timestamp"]), float(v["value"])) for v in m.get("values") or [] if v.get("timestamp")]
            series.setdefault(str(m.get("type")), []).append(pts)
        return runai_metrics(names, series)

    def health(self) -> dict[str, Any]:
        return {"circuit": self.client.transport.breaker.snapshot()}


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
