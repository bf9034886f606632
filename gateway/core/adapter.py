"""The adapter contract every vendor implements, its capabilities, and the kind -> adapter registry."""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar

import aiohttp
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_before_delay

from gateway.core.capacity import Capacity
from gateway.core.config import BACKEND_MODELS, BackendConfig
from gateway.core.errors import (
    AmbiguousCreate,
    BackendConflict,
    BackendUnavailable,
    UnsupportedByBackend,
)
from gateway.core.models import JobSpec, JobStatus
from gateway.core.retrying import full_jitter, run
from gateway.core.telemetry import JobMetrics
from gateway.core.translation import Translation

log = structlog.get_logger(__name__)


class Capability(StrEnum):
    """Things a backend may or may not be able to do."""

    @property
    def doing(self) -> str:
        """The capability as words after "cannot" ("cannot show logs")."""
        return _DOING.get(self.value, self.value)

    SUSPEND = "suspend"
    RESUME = "resume"
    CANCEL = "cancel"
    DELETE = "delete"
    LOGS = "logs"
    EVENTS = "events"
    FRACTIONAL_GPUS = "fractional_gpus"
    MULTI_NODE = "multi_node"
    LIST = "list"
    METRICS = "metrics"
    SCALE = "scale"
    CAPACITY = "capacity"


_DOING = {"suspend": "suspend jobs", "resume": "resume jobs", "cancel": "cancel jobs", "delete": "delete jobs",
          "logs": "show logs", "events": "list vendor events", "fractional_gpus": "run fractional GPUs",
          "multi_node": "run multi-node jobs", "list": "list jobs",
          "metrics": "report job metrics", "scale": "scale replicas", "capacity": "report its capacity"}


@dataclass(frozen=True)
class Handle:
    """All the gateway needs to find a vendor job again (Flyte-style resource meta)."""

    backend_job_id: str
    vendor_name: str
    vendor_kind: str = "training"


@dataclass
class VendorJob:
    """A vendor job read back and normalized."""

    handle: Handle
    status: JobStatus
    project: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)  # filled by Adapter.describe (imports only)
    raw: Any = None  # the vendor's record as read (a typed record of the adapter's own)
    job_id_hint: str | None = None  # the gateway job id the vendor record carries, if any


@dataclass(frozen=True)
class Known:
    """A live job of the gateway's, for a delta query."""

    backend_job_id: str
    vendor_kind: str


@dataclass
class Delta:
    """What a delta query learnt: records that may have changed (the sync compares them with the store),
    ids that left the phase the gateway holds without showing where they went (one GET each), and the
    vendor requests it cost."""

    jobs: list[VendorJob] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    requests: int = 0


@dataclass
class LogChunk:
    """A piece of a job's log."""

    task: str
    content: str
    full_size: int


# Status polls are repeated by the sync loop anyway: a poll gives up sooner than other reads, so a
# backend outage shows as `stale` within seconds rather than after a full retry budget.
POLL_ATTEMPTS = 2


C = TypeVar("C", bound=BackendConfig)


class _CreateAgain(Exception):
    """A create that certainly did not happen (not sent, or looked up and absent): the submit loop may send it
    again after `retry_after` seconds at least."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__("create again")
        self.retry_after = retry_after


class Adapter(abc.ABC, Generic[C]):
    """One vendor behind the neutral model: everything the gateway knows of a vendor is reached through its
    registered subclass. Subclasses declare what they cannot do, with a reason."""

    kind: ClassVar[str]
    # The vendor's backend config model (its own fields beside BackendConfig's).
    config_model: ClassVar[type[BackendConfig]]
    # "module:function" making the vendor's fake (an aiohttp app), or None; named, not imported, so that
    # the adapters never import the simulators.
    simulator: ClassVar[str | None] = None
    # What this backend cannot do for a training workload (scaling never applies: see unsupported_for).
    unsupported: ClassVar[dict[Capability, str]] = {}
    # What this backend cannot do for an inference workload (kind: inference), when it differs.
    unsupported_inference: ClassVar[dict[Capability, str]] = {}
    # The storage URI schemes it mounts (beside what mappings/storage.yaml rewrites for it).
    storage: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: C, session: aiohttp.ClientSession) -> None:
        self.config: C = config
        self.session = session

    @classmethod
    def phase_table(cls) -> dict[str, Any]:
        """The vendor's phase table as `tjg phases` prints it."""
        return {}

    @classmethod
    def describe_flavor(cls, flavor: str) -> tuple[dict[str, Any], str] | None:
        """What an explicit vendor flavor (`resources.flavor`) stands for in neutral resources, with words for
        a migration's report; None when the tables do not know it."""
        return None

    @property
    def name(self) -> str:
        """The backend's configured name."""
        return self.config.name

    def unsupported_for(self, kind: str = "training") -> dict[Capability, str]:
        """What this backend cannot do for a workload of `kind` (training or inference), with the reasons."""
        # A vendor's adapter that does not read capacity cannot report it, whatever its tables say.
        silent = {} if type(self).capacity is not Adapter.capacity else \
            {Capability.CAPACITY: "its adapter does not read the vendor's capacity"}
        if kind != "training":
            return {**silent, **self.unsupported_inference}
        return {**silent, **self.unsupported, Capability.SCALE: "only an inference workload has replicas"}

    def capabilities(self, kind: str = "training") -> dict[str, Any]:
        """{capability: true | {supported: false, reason}} for GET /v1/backends."""
        out: dict[str, Any] = {}
        cannot = self.unsupported_for(kind)
        for cap in Capability:
            reason = cannot.get(cap)
            out[cap.value] = True if reason is None else {"supported": False, "reason": reason}
        return out

    def require(self, cap: Capability, kind: str = "training") -> None:
        """Refuse, before any vendor call, what this backend cannot do for this kind of workload."""
        reason = self.unsupported_for(kind).get(cap)
        if reason is not None:
            what = "" if kind == "training" else " for an inference workload"
            raise UnsupportedByBackend(f"backend {self.name} ({self.kind}) cannot {cap.doing}{what}: {reason}",
                                       extra={"backend": self.name, "capability": cap.value})

    @classmethod
    @abc.abstractmethod
    def translate_for(cls, spec: JobSpec, config: C, job_id: str) -> Translation:
        """The vendor request for `spec` on a backend of this kind (no I/O, no instance: `tjg translate`)."""

    def translate(self, spec: JobSpec, job_id: str) -> Translation:
        """The vendor request for `spec` on this backend (no I/O)."""
        return self.translate_for(spec, self.config, job_id)

    @abc.abstractmethod
    async def _create(self, translation: Translation) -> VendorJob:
        """One create call (the transport never retries it when the outcome is unknown)."""

    async def submit(self, translation: Translation, deadline_seconds: float | None = None) -> VendorJob:
        """Create the job exactly once. After an ambiguous failure the vendor name is looked up and an
        existing job adopted; the create is repeated only when the job is certainly absent. A
        duplicate-name answer means an earlier attempt succeeded: adopt it."""
        limit = deadline_seconds or self.config.submit_deadline
        deadline = time.monotonic() + limit

        async def once() -> VendorJob:
            try:
                return await self._create(translation)
            except BackendConflict:
                found = await self._lookup(translation, deadline)
                if found is not None:
                    log.info("create_adopted_duplicate", backend=self.name, vendor_name=translation.vendor_name)
                    return found
                raise
            except AmbiguousCreate as err:
                found = await self._lookup(translation, deadline)
                if found is not None:
                    log.info("create_adopted_after_ambiguity", backend=self.name,
                             vendor_name=translation.vendor_name, cause=err.detail)
                    return found
                raise _CreateAgain(err.retry_after) from err  # certainly absent: safe to create again
            except BackendUnavailable as err:  # rate limited, not sent, circuit open: not applied
                raise _CreateAgain(err.retry_after) from err

        def give_up(_: RetryCallState) -> VendorJob:
            raise AmbiguousCreate(f"{self.name}: could not confirm the create of {translation.vendor_name} "
                                  "before the deadline; it will be reconciled", backend=self.name)

        retrying = AsyncRetrying(retry=retry_if_exception_type(_CreateAgain), wait=full_jitter(0.05, 2.0),
                                 stop=stop_before_delay(limit), retry_error_callback=give_up)
        result: VendorJob = await run(retrying, once)
        return result

    async def _lookup(self, translation: Translation, deadline: float) -> VendorJob | None:
        """find_by_name until it gives a definite answer or the deadline passes."""
        def give_up(_: RetryCallState) -> VendorJob | None:
            raise AmbiguousCreate(f"{self.name}: cannot tell whether {translation.vendor_name} was "
                                  "created; it will be reconciled", backend=self.name) from None

        retrying = AsyncRetrying(retry=retry_if_exception_type(BackendUnavailable), wait=full_jitter(0.05, 2.0),
                                 stop=stop_before_delay(max(0.0, deadline - time.monotonic())),
                                 retry_error_callback=give_up)
        found: VendorJob | None = await run(retrying, self.find_by_name, translation.vendor_name,
                                            translation.project, translation.kind)
        return found

    @abc.abstractmethod
    async def find_by_name(self, vendor_name: str, project: str | None = None,
                           kind: str | None = None) -> VendorJob | None:
        """The job with this vendor name (of this vendor kind when given), or None when it certainly does not
        exist."""

    @abc.abstractmethod
    async def get(self, handle: Handle) -> VendorJob | None:
        """Current state; None when the vendor no longer has the job."""

    @abc.abstractmethod
    async def list_page(self, offset: int, limit: int, active_only: bool = False,
                        since: float | None = None) -> tuple[list[VendorJob], bool]:
        """One page of the vendor's job list (oldest first; only jobs created at or after `since`, epoch
        seconds, when given) and whether more pages follow."""

    # Whether `delta` needs the live jobs (`known`); without, the sync looks up only the jobs a delta names.
    delta_needs_known: ClassVar[bool] = True

    async def delta(self, known: list[Known]) -> Delta | None:
        """What changed since the last look, for a cheaper sync cycle than reading every page; None when
        this adapter cannot say (no delta query, or nothing to compare with yet): the sync then reads the
        whole list. The whole list is read on a slower period anyway (deletions, non-phase changes)."""
        return None

    def reconciled(self, started: float) -> None:
        """Told that a whole-list read which began at `started` (epoch seconds, this host's clock) has
        completed: a delta adapter's starting point."""

    @abc.abstractmethod
    async def cancel(self, handle: Handle) -> None:
        """Stop the job for good (the gateway keeps its record)."""

    @abc.abstractmethod
    async def delete(self, handle: Handle) -> None:
        """Remove the job from the vendor; a job already gone is not an error."""

    async def describe(self, job: VendorJob) -> VendorJob:
        """Fill in what a list record lacks (e.g. the spec) before a job is imported."""
        return job

    async def suspend(self, handle: Handle) -> None:
        """Pause the job so it can be resumed."""
        self.require(Capability.SUSPEND)
        raise NotImplementedError

    async def resume(self, handle: Handle) -> None:
        """Resume a suspended job."""
        self.require(Capability.RESUME)
        raise NotImplementedError

    async def scale(self, handle: Handle, replicas: int) -> None:
        """Set an inference workload's replicas."""
        self.require(Capability.SCALE, "inference")
        raise NotImplementedError

    async def logs(self, handle: Handle, task: str | None = None, tail: int | None = None) -> LogChunk:
        """A preview of the job's log."""
        self.require(Capability.LOGS)
        raise NotImplementedError

    async def events(self, handle: Handle) -> list[dict[str, Any]]:
        """The vendor's events for the job, oldest first."""
        self.require(Capability.EVENTS)
        raise NotImplementedError

    def gpu_hour_price(self, spec: dict[str, Any]) -> tuple[str, float] | None:
        """(price-table entry, price of one GPU-hour) for a job's neutral spec; None when not priced."""
        return None

    async def metrics(self, handle: Handle, names: list[str], since: float, until: float) -> JobMetrics:
        """The job's resource metrics (neutral names, see gateway.core.telemetry) between two epoch times."""
        self.require(Capability.METRICS)
        raise NotImplementedError

    async def capacity(self) -> Capacity:
        """Free and total GPUs by pool and type, queues and quotas, read from the vendor's own APIs."""
        self.require(Capability.CAPACITY)
        raise NotImplementedError

    def health(self) -> dict[str, Any]:
        """Transport health (circuit breaker state) for GET /v1/backends."""
        return {}


A = TypeVar("A", bound=Adapter[Any])


class Registry:
    """Maps a backend `kind` to its adapter class; a second registration of a kind is refused."""

    def __init__(self, config_models: dict[str, type[BackendConfig]] | None = None) -> None:
        self._kinds: dict[str, type[Adapter[Any]]] = {}
        # Where the kinds' config models go: the config parser's table for the gateway's REGISTRY.
        self._models: dict[str, type[BackendConfig]] = {} if config_models is None else config_models

    def register(self, cls: type[A]) -> type[A]:
        """Add an adapter class and its config model (usable as a decorator)."""
        if cls.kind in self._kinds:
            raise ValueError(f"adapter kind {cls.kind!r} is already registered by {self._kinds[cls.kind].__name__}")
        self._kinds[cls.kind] = cls
        self._models[cls.kind] = cls.config_model
        return cls

    def get(self, kind: str) -> type[Adapter[Any]]:
        """The adapter class for `kind`."""
        try:
            return self._kinds[kind]
        except KeyError:
            raise ValueError(f"no adapter for kind {kind!r} (known: {', '.join(sorted(self._kinds))})") from None

    def kinds(self) -> list[str]:
        """Registered kinds."""
        return sorted(self._kinds)

    def translate(self, spec: JobSpec, backend: BackendConfig, job_id: str) -> Translation:
        """Translate `spec` for `backend` with its kind's translator (no adapter instance needed)."""
        return self.get(backend.kind).translate_for(spec, backend, job_id)

    def create(self, config: BackendConfig, session: aiohttp.ClientSession) -> Adapter[Any]:
        """An adapter instance for a backend config."""
        return self.get(config.kind)(config, session)


REGISTRY = Registry(BACKEND_MODELS)
