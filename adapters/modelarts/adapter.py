"""The ModelArts adapter: neutral operations on ModelArts v2 training jobs."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog

from adapters.modelarts import translate as tr
from adapters.modelarts.client import ModelArtsClient
from adapters.modelarts.config import ModelArtsConfig
from adapters.modelarts.metrics import flavor_memory_bytes, modelarts_metrics, place
from adapters.modelarts.records import Service, TrainingJob
from gateway.core.adapter import (
    POLL_ATTEMPTS,
    REGISTRY,
    Adapter,
    Capability,
    Delta,
    Handle,
    Known,
    LogChunk,
    VendorJob,
)
from gateway.core.capacity import Capacity, PoolCapacity
from gateway.core.census import census
from gateway.core.errors import (
    BackendConflict,
    BackendNotFound,
    BackendRejected,
    BadRequest,
    GatewayError,
    UnsupportedByBackend,
)
from gateway.core.models import JobSpec
from gateway.core.telemetry import JobMetrics
from gateway.core.translation import Translation
from mappings import flavor_by_id, prices

log = structlog.get_logger(__name__)

JOB_ID_IN_DESCRIPTION = re.compile(r"trainjob-gateway job ([0-9a-f]{32})")
# The phases a delta counts, the short-lived first: a job found to have moved on (say Pending -> Running) is
# counted in its new phase in the same delta, not taken for a stranger there.
CENSUS_PHASES = ("Creating", "Pending", "Terminating", "Running")
SEARCH_PAGE = 50


@REGISTRY.register
class ModelArtsAdapter(Adapter[ModelArtsConfig]):
    """Huawei Cloud ModelArts."""

    kind = tr.KIND
    config_model = ModelArtsConfig
    simulator = "simulators.modelarts.app:create_simulator"
    storage = ("obs", "nfs")
    unsupported = {
        Capability.SUSPEND: "ModelArts training jobs cannot be paused; cancel and resubmit instead",
        Capability.RESUME: "ModelArts training jobs cannot be paused, so there is nothing to resume",
        Capability.FRACTIONAL_GPUS: "ModelArts flavors allocate whole GPUs; a fraction is rounded up to one",
    }
    unsupported_inference = {  # real-time services: stop/start is their suspend/resume
        Capability.LOGS: "the gateway reads training-job logs only; see the service's logs in the ModelArts console",
        Capability.EVENTS: "the gateway reads training-job events only",
        Capability.METRICS: "the gateway reads training-task metrics only",
        Capability.FRACTIONAL_GPUS: "ModelArts flavors allocate whole GPUs; a fraction is rounded up to one",
        Capability.MULTI_NODE: "an inference workload scales by replicas",
    }

    def __init__(self, config: ModelArtsConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(config, session)
        self.client = ModelArtsClient(config, session)
        self._paging = "pages"  # how this control plane reads JobSearches.offset (see _search_from)
        self._last_page: tuple[int, set[str]] | None = None  # (offset after it, its ids)
        # Each training job's creation ms (the search's create_time filter) and phase, from the last record
        # read of it; the whole-list read's set replaces it (jobs long gone are forgotten).
        self._last: dict[str, tuple[int, str | None]] = {}
        self._last_next: dict[str, tuple[int, str | None]] = {}
        self._strangers: dict[str, dict[str, int]] = {}  # phase -> other clients' jobs in it: id -> born
        self._reconciled = False

    @classmethod
    def phase_table(cls) -> dict[str, Any]:
        """ModelArts' training-job phases (and secondary phases) and what each becomes."""
        return tr.phase_table().as_json()

    @classmethod
    def describe_flavor(cls, flavor: str) -> tuple[dict[str, Any], str] | None:
        """A ModelArts flavor stands for its GPUs, GPU type, cores and memory (mappings/flavors.yaml)."""
        f = flavor_by_id(flavor)
        if f is None:
            return None
        res: dict[str, Any] = {"gpus": f.gpus, "cpu": f.cpu, "memory": f"{f.memory_gi:g}Gi"}
        if f.gpu_type:
            res["gpu_type"] = f.gpu_type
        return res, f"flavor {flavor} = {f.gpus} x {f.gpu_type or 'CPU'}, {f.cpu:g} cores, {f.memory_gi:g}Gi"

    @classmethod
    def translate_for(cls, spec: JobSpec, config: ModelArtsConfig, job_id: str) -> Translation:
        """The create request for `spec` (no I/O)."""
        return tr.translate(spec, config, job_id)

    def _job(self, record: TrainingJob) -> VendorJob:
        meta, st = record.metadata, record.status
        tasks = st.task_statuses or []
        failed = [t for t in tasks if t.exit_code]
        codes = [t.exit_code for t in tasks if t.exit_code is not None]
        said = [t.message for t in tasks if t.message]  # a task that never ran has words but no exit code
        runs = st.running_records or []
        # It has waited since its last run ended (a job queuing again), or since it was created.
        since = (runs[-1].end_at if runs else None) or meta.create_time
        status = tr.normalize_phase(st.phase, st.secondary_phase,
                                    failed[0].message if failed else (said[0] if said else None),
                                    failed[0].exit_code if failed else (0 if codes else None),
                                    runs[-1].end_reason if runs else None, since)
        m = JOB_ID_IN_DESCRIPTION.search(meta.description or "")
        if meta.create_time is not None:
            self._last[str(meta.id)] = self._last_next[str(meta.id)] = (int(meta.create_time), st.phase)
        return VendorJob(handle=Handle(str(meta.id), str(meta.name), "training"), status=status,
                         project=meta.workspace_id or "0", raw=record, job_id_hint=m.group(1) if m else None)

    async def describe(self, job: VendorJob) -> VendorJob:
        # The spec is only rebuilt for jobs being imported (the page's records carry only the status part).
        try:
            record = await self.client.show(job.handle.backend_job_id)
        except BackendNotFound:
            return job
        job.spec = tr.spec_from_vendor(record, self.name)
        return job

    def _service(self, record: Service) -> VendorJob:
        status = tr.normalize_service(record.status, record.failure_reason or None)
        urls = [u for p in record.predict_url or [] for u in p.urls or []]
        groups = (record.version.instance_groups or []) if record.version else []
        status = status.model_copy(update={
            "endpoint": urls[0] if urls else None,
            "ready_replicas": sum(g.running_count or 0 for g in groups) if groups else None,
            "desired_replicas": sum(g.count or 0 for g in groups) if groups else None})
        m = JOB_ID_IN_DESCRIPTION.search(record.description or "")
        return VendorJob(handle=Handle(str(record.id), str(record.name), "service"), status=status,
                         project=record.workspace_id or "0", raw=record, job_id_hint=m.group(1) if m else None)

    async def _create(self, translation: Translation) -> VendorJob:
        if translation.kind == "service":
            r = await self.client.create_service(translation.body)
            return self._service(r.decode(Service))
        r = await self.client.create(translation.body)
        return self._job(r.decode(TrainingJob))

    async def _find_service(self, vendor_name: str) -> VendorJob | None:
        res = await self.client.services(name=vendor_name)
        for item in res.get("data") or []:
            if item.get("name") == vendor_name:
                return self._service(await self.client.service(str(item.get("id"))))
        return None

    async def find_by_name(self, vendor_name: str, project: str | None = None,
                           kind: str | None = None) -> VendorJob | None:
        if kind == "service":
            return await self._find_service(vendor_name)
        res = await self.client.search(0, 50, [{"key": "name", "operator": "like", "value": [vendor_name]}])
        for item in res.items:
            if item.metadata.name == vendor_name:
                return self._job(item)
        return None

    async def get(self, handle: Handle) -> VendorJob | None:
        try:
            if handle.vendor_kind == "service":
                return self._service(await self.client.service(handle.backend_job_id, attempts=POLL_ATTEMPTS))
            return self._job(await self.client.job(handle.backend_job_id, attempts=POLL_ATTEMPTS))
        except BackendNotFound:
            return None

    async def list_page(self, offset: int, limit: int, active_only: bool = False,
                        since: float | None = None) -> tuple[list[VendorJob], bool]:
        filters: list[dict[str, Any]] = []
        if active_only:
            filters.append({"key": "phase", "operator": "in",
                            "value": ["Creating", "Pending", "Running", "Terminating"]})
        if since is not None:
            filters.append({"key": "create_time", "operator": "between",
                            "value": [int(since * 1000), int((time.time() + 86400) * 1000)]})
        size = min(limit, SEARCH_PAGE)
        if offset == 0:
            self._last_next = {}
        res = await self._search_from(offset, size, filters or None)
        return [self._job(i) for i in res.items], offset + len(res.items) < res.total

    def reconciled(self, started: float) -> None:
        self._last, self._last_next = self._last_next, {}
        self._strangers = {}
        self._reconciled = True

    async def delta(self, known: list[Known]) -> Delta | None:
        """The live training jobs that left the phase the gateway holds, found by counting
        (gateway.core.census): one search per phase when nothing changed, about log2(N / 50) + 1 more per
        job that did. Inference services are read one by one."""
        if not self._reconciled:
            return None
        groups: dict[str, list[tuple[int, str]]] = {p: [] for p in CENSUS_PHASES}
        ours: set[str] = set()
        unsure: list[str] = []
        for k in known:
            if k.vendor_kind != "training":
                # A real-time service: its own API, no counts; read one by one (the sync paces the requests
                # to the budget), as the whole-list read does.
                unsure.append(k.backend_job_id)
                continue
            # The phase it had when last read: what the sync stored, as every read of it went to the sync.
            last = self._last.get(k.backend_job_id)
            ours.add(k.backend_job_id)
            if last is None or last[1] not in groups:
                unsure.append(k.backend_job_id)
            else:
                groups[str(last[1])].append((last[0], k.backend_job_id))
        delta = Delta()
        cap = max(10, int(self.config.request_budget * 4))  # one delta's searches (the sync paces the rest)
        for phase in CENSUS_PHASES:
            strangers = self._strangers.setdefault(phase, {})
            members = groups[phase] + [(b, i) for i, b in strangers.items() if i not in ours]
            if not members:
                continue

            async def query(lo: int, hi: int, phase: str = phase) -> tuple[int, list[tuple[str, int, VendorJob]]]:
                res = await self.client.search(0, SEARCH_PAGE, [
                    {"key": "phase", "operator": "in", "value": [phase]},
                    {"key": "create_time", "operator": "between", "value": [lo, hi]}], attempts=POLL_ATTEMPTS)
                return res.total, [(str(i.metadata.id), int(i.metadata.create_time or 0), self._job(i))
                                   for i in res.items]

            found = await census(members, query, SEARCH_PAGE, max_requests=max(1, cap - delta.requests))
            delta.requests += found.requests
            delta.jobs.extend(j for i, j in found.seen.items() if i in ours)
            strangers.update({i: born for i, (born, _) in found.strangers.items() if i not in ours})
            for vid in found.left:
                if vid not in ours:
                    strangers.pop(vid, None)
                    continue
                got = await self.get(Handle(vid, vid, "training"))
                delta.requests += 1
                if got is None:
                    delta.moved.append(vid)  # gone: the sync's own read records it
                    continue
                delta.jobs.append(got)
                now = got.status.vendor_phase
                if now in groups and now != phase and vid in self._last:
                    groups[str(now)].append((self._last[vid][0], vid))
            unsure.extend(found.unsure)
        delta.moved.extend(unsure)
        return delta

    async def _search_from(self, offset: int, size: int, filters: list[dict[str, Any]] | None) -> Any:
        """The jobs from item `offset` on. JobSearches.offset is a page number (the SDK's documentation); a
        control plane that reads it as an item offset is noticed (the next page repeats ids of the last one)
        and asked in its own terms from then on, said once in the log."""
        items_mode = self._paging == "items"
        if not items_mode and offset % size:
            items_mode = True  # (not on a page boundary: only an item offset can say it)
        ask = offset if items_mode else offset // size
        res = await self.client.search(ask, size, filters, attempts=POLL_ATTEMPTS)
        ids = [str(i.metadata.id) for i in res.items]
        last = self._last_page
        if not items_mode and offset and last is not None and last[0] == offset and set(ids) & last[1]:
            log.warning("modelarts_paging_is_by_items", backend=self.name, detail=(
                "training-job-searches repeated jobs of the previous page for the next page number: this "
                "control plane reads offset as an item offset; paging by items from now on"))
            self._paging = "items"
            res = await self.client.search(offset, size, filters, attempts=POLL_ATTEMPTS)
            ids = [str(i.metadata.id) for i in res.items]
        self._last_page = (offset + len(ids), set(ids))
        return res

    async def cancel(self, handle: Handle) -> None:
        if handle.vendor_kind == "service":  # a service stopped for good is a deleted one
            await self.delete(handle)
            return
        try:
            await self.client.terminate(handle.backend_job_id)
        except BackendConflict as err:
            if err.vendor_code != "ModelArts.2796":  # 2796: already past the point of stopping
                raise

    async def delete(self, handle: Handle) -> None:
        if handle.vendor_kind == "service":
            answers = await self.client.delete_services([handle.backend_job_id])
            failed = [a for a in answers if a.get("status") == "FAILED" and "not found" not in
                      str(a.get("failure_reason")).lower()]
            if failed:
                raise BackendRejected(f"{self.name}: could not delete service {handle.backend_job_id}: "
                                      f"{failed[0].get('failure_reason')}", backend=self.name)
            return
        try:
            await self.client.delete(handle.backend_job_id)
        except BackendNotFound:
            return

    async def suspend(self, handle: Handle) -> None:
        self.require(Capability.SUSPEND, "inference" if handle.vendor_kind == "service" else "training")
        await self.client.service_action(handle.backend_job_id, "stop")

    async def resume(self, handle: Handle) -> None:
        self.require(Capability.RESUME, "inference" if handle.vendor_kind == "service" else "training")
        await self.client.service_action(handle.backend_job_id, "start")

    async def scale(self, handle: Handle, replicas: int) -> None:
        if replicas < 1:
            raise UnsupportedByBackend(f"backend {self.name} (modelarts) cannot scale a real-time service to 0 "
                                       "instances: stop it (tjg suspend) instead",
                                       extra={"backend": self.name, "capability": "scale"})
        await self.client.update_service(handle.backend_job_id, {"group_configs": [{"count": replicas}]})

    async def logs(self, handle: Handle, task: str | None = None, tail: int | None = None) -> LogChunk:
        tasks = [str(t) for t in ((await self.client.show(handle.backend_job_id)).get("status") or {}).get("tasks")
                 or ["worker-0"]]
        task = task or tasks[0]
        if task not in tasks:  # only the job's own tasks reach the vendor's URL
            raise BadRequest(f"job has no task {task!r}; its tasks: {', '.join(tasks)}",
                             errors=[{"loc": ["query", "task"], "msg": "not one of the job's tasks"}])
        res = await self.client.log_preview(handle.backend_job_id, task)
        content = str(res.get("content") or "")
        if tail is not None:
            lines = content.splitlines()[-tail:] if tail > 0 else []
            content = "".join(line + "\n" for line in lines)
        return LogChunk(task=task, content=content, full_size=int(res.get("full_size") or len(content)))

    async def events(self, handle: Handle) -> list[dict[str, Any]]:
        try:
            evs = await self.client.events(handle.backend_job_id)
        except BackendNotFound:
            return []
        return [{"time": e.get("time"), "type": e.get("level"), "reason": None, "message": e.get("message"),
                 "source": "modelarts"} for e in evs]

    async def capacity(self) -> Capacity:
        """The public pool's GPU flavors: how many GPUs of each can be had now (max_num nodes x GPUs per node).
        ModelArts says nothing of a flavor's total or of its queue."""
        pools: list[PoolCapacity] = []
        for f in await self.client.job_flavors():
            fid = str(f.get("flavor_id"))
            known = flavor_by_id(fid)
            per_node = float(((f.get("flavor_info") or {}).get("gpu") or {}).get("unit_num") or
                             (known.gpus if known else 0))
            nodes = f.get("max_num")
            pools.append(PoolCapacity(pool=fid, gpu_type=known.gpu_type if known else None, gpus_per_node=per_node,
                                      free_gpus=None if nodes is None else float(nodes) * per_node))
        return Capacity(backend=self.name, observed_at=datetime.now(UTC), pools=pools)

    def gpu_hour_price(self, spec: dict[str, Any]) -> tuple[str, float] | None:
        try:
            body = self.translate(JobSpec.model_validate({**spec, "backend": self.name}), "0" * 32).body
        except (ValueError, GatewayError):  # an imported job's spec may not translate: no price, no guess
            return None
        if "group_configs" in body:  # a real-time service: the flavor of its (one) unit
            flavor = str(((body["group_configs"][0].get("unit_configs") or [{}])[0]).get("flavor"))
        else:  # a training job
            flavor = str(((body.get("spec") or {}).get("resource") or {}).get("flavor_id"))
        price = prices()[1].get(self.kind, {}).get(flavor)
        return None if price is None else (flavor, price)

    async def metrics(self, handle: Handle, names: list[str], since: float, until: float) -> JobMetrics:
        try:
            record = await self.client.show(handle.backend_job_id)
        except BackendNotFound:
            out = JobMetrics()
            for n in names:
                out.add(n, "unavailable", "the backend no longer has the job")
            return out
        st = record.get("status") or {}
        start = float(st.get("start_time") or 0) / 1000
        per_task: list[dict[str, list[tuple[float, float]]]] = []
        if start:
            answers = await asyncio.gather(*(self.client.metrics(handle.backend_job_id, str(t))
                                             for t in st.get("tasks") or ["worker-0"]))
            step = self.config.metrics_sample_seconds
            per_task = [{str(m.get("metric")): place(list(m.get("value") or []), start, step) for m in task}
                        for task in answers]
        out = modelarts_metrics(names, per_task, flavor_memory_bytes(record))
        return out.since(since)

    def health(self) -> dict[str, Any]:
        return {"circuit": self.client.transport.breaker.snapshot()}
