"""The neutral job model: what users send (JobSpec) and what the gateway answers (Job)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from gateway.core.placement import Placement

NAME_RE = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# \Z, not $: `$` also matches before a trailing newline, so "A\n" passed as a name.
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*\Z")
LABEL_KEY_RE = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")
MEMORY_RE = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$"
URI_SCHEMES = ("pvc", "nfs", "s3", "obs")
# What one job may hold (README "Limits"): legal requests of one tenant must not hold up the others.
LIMITS = {"spec_bytes": 256 * 1024, "labels": 64, "env": 256, "command": 256, "args": 1024, "mounts": 64,
          "tes_executors": 32, "tes_inputs": 64, "tes_outputs": 64, "tes_volumes": 64}


class Phase(StrEnum):
    """Neutral job phase."""

    QUEUED = "QUEUED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    SUSPENDING = "SUSPENDING"
    SUSPENDED = "SUSPENDED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})


class Reason(StrEnum):
    """Why a job waits or why it ended, the same words for every vendor (tables in mappings/)."""

    NO_CAPACITY = "no-capacity"
    QUOTA_EXCEEDED = "quota-exceeded"
    PREEMPTED = "preempted"
    IMAGE_PULL = "image-pull"
    OOM = "oom"
    NODE_FAILURE = "node-failure"
    USER_ERROR = "user-error"
    RUNTIME_LIMIT = "runtime-limit"
    VENDOR_ERROR = "vendor-error"
    CANCELLED = "cancelled"
    RECOVERING = "recovering"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # "Infinity", "nan", 1e999 in any spelling


class Resources(_Strict):
    """Compute per node."""

    gpus: float | None = Field(None, ge=0, description="GPUs per node; a fraction below 1 is a GPU portion.")
    gpu_type: str | None = Field(None, min_length=1, max_length=64,
                                 description="GPU model such as A100; mapped to node pools or flavors.")
    cpu: float | None = Field(None, gt=0, description="CPU cores per node.")
    memory: str | None = Field(None, pattern=MEMORY_RE, description="Memory per node, e.g. 64Gi.")
    nodes: int = Field(1, ge=1, le=1024, description="Number of nodes; more than 1 makes a distributed job.")
    flavor: str | None = Field(None, min_length=1, max_length=128,
                               description="Explicit vendor flavor or node pool; overrides the mapping.")

    @field_validator("gpus")
    @classmethod
    def _whole_above_one(cls, v: float | None) -> float | None:
        if v is not None and v > 1 and not float(v).is_integer():
            raise ValueError("more than one GPU must be a whole number; a fraction is only allowed below 1")
        return v


class Distributed(_Strict):
    """How the nodes of a multi-node job cooperate."""

    framework: Literal["pytorch", "tf", "mpi", "xgboost", "jax"] = Field(
        ..., description="Distributed framework for nodes > 1.")


def check_uri(v: str) -> str:
    """A storage URI the translators know (its scheme, and a claim, server or bucket), or a ValueError."""
    parts = urlsplit(v)
    if parts.scheme not in URI_SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(s + '://' for s in URI_SCHEMES)}")
    if not parts.netloc:
        raise ValueError("needs a claim, server or bucket after the scheme")
    if parts.scheme == "nfs" and not parts.path.startswith("/"):
        raise ValueError("nfs:// needs an export path, e.g. nfs://server/export")
    return v


class DataMount(_Strict):
    """A data location mounted into the job."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Channel name.")
    uri: str = Field(..., min_length=6, max_length=1024,
                     description="pvc://claim/sub, nfs://server/export, s3://bucket/prefix or obs://bucket/prefix.")
    path: str | None = Field(None, pattern=r"^/[^\x00]*$", max_length=1024,
                             description="Mount path in the container (default /mnt/<inputs|outputs>/<name>).")
    read_only: bool | None = Field(None, description="Mount read-only (default: true for inputs, false for outputs).")

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        return check_uri(v)


class Autoscaling(_Strict):
    """How a served model scales between min_replicas and max_replicas."""

    metric: Literal["concurrency", "throughput", "latency"] = Field(
        ..., description="concurrency (requests in flight per replica), throughput (requests/s) or latency (ms).")
    target: float = Field(..., gt=0, description="The metric's target value per replica.")


class Readiness(_Strict):
    """An HTTP readiness probe."""

    path: str = Field("/", pattern=r"^/[A-Za-z0-9\-_./]*$", max_length=256, description="HTTP path probed.")
    port: int | None = Field(None, ge=1, le=65535, description="Port probed (default: serving.port).")
    initial_delay_seconds: int = Field(0, ge=0, le=3600)
    period_seconds: int = Field(10, ge=1, le=3600)


class Serving(_Strict):
    """How an inference workload serves requests."""

    port: int = Field(..., ge=1, le=65535, description="Container port the model server listens on.")
    path: str = Field("/", pattern=r"^/[A-Za-z0-9\-_./]*$", max_length=256, description="URL path prefix served.")
    protocol: Literal["http", "grpc"] = Field("http", description="http or grpc.")
    min_replicas: int = Field(1, ge=0, le=1000, description="Fewest replicas (0: scale to zero where allowed).")
    max_replicas: int | None = Field(None, ge=1, le=1000, description="Most replicas (default: min_replicas).")
    autoscaling: Autoscaling | None = Field(None, description="Scale on a metric between min and max replicas.")
    readiness: Readiness | None = Field(None, description="Readiness probe.")

    @model_validator(mode="after")
    def _bounds(self) -> Serving:
        if self.max_replicas is not None and self.max_replicas < max(self.min_replicas, 1):
            raise ValueError("max_replicas must be at least min_replicas (and at least 1)")
        return self


# Raw vendor fields, keyed by backend kind ({runai: {...}}), deep-merged into that vendor's payload last.
Extensions = dict[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,63}$")], dict[str, Any]]


BackendName = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class PlacementSpec(_Strict):
    """How the gateway chooses among candidate backends (`backend: auto` or a list)."""

    policy: Literal["ordered", "soonest", "cheapest"] | None = Field(
        None, description="ordered: the first candidate with free GPUs, else the first that can run it; soonest: "
        "free GPUs now, else the shortest queue; cheapest: the lowest price per GPU-hour, then soonest. "
        "Default: the config's placement.policy.")
    max_wait: float | None = Field(None, gt=0, le=30 * 86400, description="Seconds a job may wait QUEUED for "
                                   "capacity before it moves to another candidate with free GPUs (default: the "
                                   "config's, off for a job that names one backend).")
    max_moves: int = Field(2, ge=0, le=10, description="Most moves to another backend while waiting.")


RetryOn = Literal["preempted", "no-capacity", "node-failure", "oom", "image-pull", "user-error", "vendor-error"]
DEFAULT_RETRY_ON: tuple[RetryOn, ...] = ("preempted", "node-failure")
_DURATION_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smhd])\Z")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class RetrySpec(_Strict):
    """Managed recovery: when an attempt fails, the gateway makes another (a new vendor job) while the rules match."""

    on: list[RetryOn] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_ON), max_length=7,
        description="The reasons an ended attempt is retried for (default: preempted, node-failure: the "
        "platform's fault, not the job's). no-capacity retries an attempt the vendor ended for want of GPUs; "
        "with failover it also moves an attempt a vendor keeps requeued after a preemption.")
    exit_codes: list[Annotated[int, Field(ge=0, le=255)]] | None = Field(
        None, max_length=64, description="Exit codes retried whatever the reason (e.g. a training's own "
        "'resume me' code).")
    max_attempts: int = Field(3, ge=1, le=100, description="Most attempts in all, the first included.")
    within: float | str | None = Field(
        None, description="No new attempt once this long has passed since the job was accepted: seconds, or "
        "a duration such as 30m, 6h, 2d.")
    failover: bool = Field(False, description="Place each new attempt again (every configured backend that can "
                           "run the spec, or the job's candidates): it may land on another vendor, the spec "
                           "converted through mappings/ as a migration is.")

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        # YAML 1.1 (PyYAML, most YAML tools) reads the key `on` as the boolean true, which JSON then writes as
        # "true" (tjg submit of a YAML file, yq -o json): both mean `on` here, where no other key could.
        if isinstance(data, dict) and "on" not in data:
            data = {("on" if k is True or k == "true" else k): v for k, v in data.items()}
        return data

    @field_validator("within")
    @classmethod
    def _duration(cls, v: float | str | None) -> float | None:
        if v is None:
            return None
        if isinstance(v, str):
            m = _DURATION_RE.match(v.strip())
            if m is None:
                raise ValueError("a number of seconds or a duration such as 90s, 30m, 6h, 2d")
            v = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        if not 0 < float(v) <= 365 * 86400:
            raise ValueError("between 0 and 365 days")
        return float(v)

    @field_validator("on")
    @classmethod
    def _once_each(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each reason once")
        return v


class CheckpointSpec(_Strict):
    """Where a training keeps its checkpoints: every attempt gets the URI in its vendor's terms."""

    uri: str = Field(..., min_length=6, max_length=1024, description="pvc://, nfs://, s3:// or obs:// location; "
                     "rewritten per vendor through mappings/storage.yaml and passed as TJG_CHECKPOINT_URI.")
    path: str = Field("/mnt/checkpoint", pattern=r"^/[^\x00]*$", max_length=1024,
                      description="Where it is mounted in the container (TJG_CHECKPOINT_DIR).")

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        return check_uri(v)


class JobSpec(_Strict):
    """A training job, independent of the vendor that runs it."""

    name: str = Field(..., min_length=1, max_length=63, pattern=NAME_RE,
                      description="Job name, valid on both vendors.")
    kind: Literal["training", "inference"] = Field("training", description="training (runs to an end) or "
                                                   "inference (a served model, with `serving`).")
    backend: BackendName | list[BackendName] = Field(
        ..., description="A configured backend's name; `auto` (every configured backend that can run the spec); "
        "or a list of candidates in order of preference. The gateway places an `auto` or list job.")
    placement: PlacementSpec | None = Field(None, description="How an `auto` or list job is placed.")
    project: str | None = Field(None, min_length=1, max_length=128,
                                description="Run:ai project id or ModelArts workspace id (default \"0\").")
    image: str = Field(..., min_length=1, max_length=1024, description="Container image.")
    command: list[str] | None = Field(None, max_length=LIMITS["command"], description="Entry point argv.")
    args: list[str] | None = Field(None, max_length=LIMITS["args"], description="Extra argv.")
    working_dir: str | None = Field(None, min_length=1, max_length=1024, description="Working directory.")
    env: dict[str, str] | None = Field(None, max_length=LIMITS["env"], description="Plain environment variables.")
    resources: Resources = Field(default_factory=Resources, description="Compute per node.")
    distributed: Distributed | None = Field(None, description="Distributed settings for nodes > 1.")
    inputs: list[DataMount] | None = Field(None, max_length=64, description="Data read by the job.")
    outputs: list[DataMount] | None = Field(None, max_length=64, description="Data written by the job.")
    labels: dict[str, str] | None = Field(None, max_length=LIMITS["labels"],
                                          description="Labels for filtering and bookkeeping.")
    priority: Literal["low", "normal", "high"] | None = Field(None, description="Scheduling priority.")
    preemptible: bool | None = Field(None, description="May the scheduler preempt this job.")
    max_retries: int | None = Field(None, ge=0, le=100, description="Retries before the job is failed.")
    max_runtime_seconds: int | None = Field(None, gt=0, description="Hard limit on run time.")
    extensions: Extensions | None = Field(None, description="Raw vendor fields by backend kind ({runai: {...}}), "
                                          "deep-merged into that vendor's payload last.")
    serving: Serving | None = Field(None, description="Inference only: port, path, replicas, autoscaling.")
    retry: RetrySpec | None = Field(None, description="Managed recovery across attempts (default: none; "
                                    "max_retries is the vendor's own restarts within one attempt).")
    checkpoint: CheckpointSpec | None = Field(None, description="Checkpoint location handed to every attempt.")

    @field_validator("backend")
    @classmethod
    def _candidates(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list):
            if not 1 <= len(v) <= 16:
                raise ValueError("a list of 1 to 16 backend names")
            if len(set(v)) != len(v) or "auto" in v:
                raise ValueError("each backend once, and `auto` only on its own")
        return v

    @property
    def placed(self) -> bool:
        """Whether the gateway chooses the backend (`auto` or a list)."""
        return isinstance(self.backend, list) or self.backend == "auto"

    @field_validator("command", "args")
    @classmethod
    def _argv(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and any("\0" in a for a in v):
            raise ValueError("arguments cannot contain NUL bytes")
        return v

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for k in v or {}:
            if not ENV_NAME_RE.match(k):
                raise ValueError(f"invalid environment variable name {k!r}")
        return v

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for k, val in (v or {}).items():
            if len(k) > 63 or not LABEL_KEY_RE.match(k):
                raise ValueError(f"invalid label key {k!r} (1-63 chars: letters, digits, '-', '_', '.')")
            if len(val) > 63:
                raise ValueError(f"label {k!r}: value longer than 63 characters")
        return v

    def kind_problems(self) -> list[tuple[list[str], str]]:
        """Fields that make no sense for this kind, as (location, reason)."""
        if self.kind == "training":
            return [(["serving"], "only an inference workload has serving settings")] if self.serving else []
        out: list[tuple[list[str], str]] = []
        if self.serving is None:
            out.append((["serving"], "an inference workload needs serving settings (at least serving.port)"))
        for name in ("distributed", "max_retries", "max_runtime_seconds", "outputs", "retry", "checkpoint"):
            if getattr(self, name) is not None:
                out.append(([name], "does not apply to an inference workload (it serves until deleted)"))
        if self.resources.nodes != 1:
            out.append((["resources", "nodes"], "an inference workload scales by serving.min_replicas and "
                                                "max_replicas, not nodes"))
        return out

    @model_validator(mode="after")
    def _distributed_needs_nodes(self) -> JobSpec:
        if self.resources.nodes > 1 and self.distributed is None:
            raise ValueError("distributed.framework is required when resources.nodes > 1")
        names = [m.name for m in (self.inputs or []) + (self.outputs or [])]
        if len(names) != len(set(names)):
            raise ValueError("input and output names must be unique")
        return self


class JobStatus(BaseModel):
    """Normalized status of a job."""

    phase: Phase = Field(Phase.QUEUED, description="Neutral phase.")
    terminal: bool = Field(False, description="True once the job can no longer change phase.")
    vendor_phase: str | None = Field(None, description="The vendor's own phase.")
    vendor_secondary_phase: str | None = Field(None, description="ModelArts secondary phase.")
    message: str | None = Field(None, description="Human-readable detail from the vendor.")
    degraded: bool = Field(False, description="Running with a health problem (Run:ai Degraded).")
    observed_at: datetime | None = Field(None, description="When the vendor last reported this status.")
    stale: bool = Field(False, description="The last poll failed; this status may be out of date.")
    endpoint: str | None = Field(None, description="Inference: the URL the served model answers on.")
    ready_replicas: int | None = Field(None, description="Inference: replicas serving now.")
    desired_replicas: int | None = Field(None, description="Inference: replicas asked for.")
    exit_code: int | None = Field(None, description="The job's container exit code, once ended, where the vendor "
                                  "reports it (ModelArts task exit codes; Run:ai's \"exited with code N\").")
    idle: bool = Field(False, description="Running, but its GPU utilization has stayed under the idle threshold "
                       "for the idle window (config `idle`).")
    idle_since: datetime | None = Field(None, description="When the job was found idle.")
    gpu_utilization: float | None = Field(None, description="Mean GPU utilization (percent) over the samples the "
                                          "gateway has seen while the job ran; null when none.")
    reason: Reason | None = Field(None, description="Why the job waits or why it ended, in neutral words; null "
                                  "when the vendor gives no reason the gateway's tables know (never guessed).")
    reason_message: str | None = Field(None, description="The vendor's own words for the reason.")
    pending_since: datetime | None = Field(None, description="While QUEUED: since when the vendor has kept it "
                                           "waiting, as the vendor reports it.")
    attempt: int | None = Field(None, description="The attempt this status is of (jobs with `retry`; 1 first).")
    retry_outcome: Literal["not-retryable", "max-attempts", "within", "cancelled"] | None = Field(
        None, description="For a job with `retry` that ended FAILED: why no further attempt was made (the "
        "failure matched no rule, max_attempts or within was spent, or a cancel came).")


Outcome = Literal["exact", "approximated", "defaulted", "dropped", "passthrough"]


class ReportEntry(BaseModel):
    """What happened to one spec field in a translation."""

    field: str = Field(..., description="Spec field path, e.g. resources.gpus or inputs[0].")
    outcome: Outcome = Field(..., description="exact | approximated | defaulted | dropped | passthrough.")
    detail: str = Field("", description="How the field was expressed, or why it could not be.")


class VendorRequest(BaseModel):
    """The HTTP request a translation produces."""

    method: str
    path: str
    body: dict[str, Any]


class DryRun(BaseModel):
    """Answer of a dry run: what would be sent, and the report."""

    backend: str
    request: VendorRequest
    report: list[ReportEntry]
    placement: Placement | None = Field(None, description="For `backend: auto` or a list: every candidate, "
                                        "whether it can run the job and why, and where it would go.")


class Attempt(BaseModel):
    """One vendor job that tried to do a gateway job (a job with `retry` may have several)."""

    n: int = Field(..., description="1 for the first attempt.")
    backend: str
    vendor_name: str | None = None
    backend_job_id: str | None = None
    started_at: datetime = Field(..., description="When the gateway stored the attempt (before the vendor call).")
    ended_at: datetime | None = Field(None, description="When it ended (null: the current attempt, not ended).")
    phase: Phase | None = Field(None, description="How it ended (the current attempt: the job's phase).")
    reason: Reason | None = None
    reason_message: str | None = None
    exit_code: int | None = None
    gpu_hours: float = Field(0.0, description="GPUs x nodes x its time RUNNING.")


class Job(BaseModel):
    """A job as the gateway knows it."""

    id: str = Field(..., description="The gateway's id (never the vendor's).")
    name: str
    kind: Literal["training", "inference"] = Field("training", description="training or inference.")
    backend: str
    backend_job_id: str | None = Field(None, description="The vendor's id once the create succeeded.")
    vendor_name: str | None = Field(None, description="The name the job has on the vendor.")
    project: str | None = None
    spec: dict[str, Any] = Field(..., description="The JobSpec as submitted (or as imported).")
    status: JobStatus
    labels: dict[str, str] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    report: list[ReportEntry] = Field(default_factory=list)
    origin: Literal["gateway", "external"] = "gateway"
    tenant: str | None = None
    migrated_from: str | None = None
    migrated_to: str | None = None
    placement: Placement | None = Field(None, description="Where the gateway placed it and why (jobs submitted "
                                        "with `backend: auto` or a list of candidates).")
    deleted: bool = Field(False, description="Removed from the backend with DELETE; the record stays.")
    attempt: int = Field(1, description="The current attempt's number.")
    attempts: list[Attempt] = Field(default_factory=list, description="Every attempt, oldest first (GET of one "
                                    "job: filled when the job has `retry` or more than one attempt).")
    warnings: list[str] = Field(default_factory=list, description="Things that went wrong but did not stop "
                                "the request (e.g. a migration's source action).")


def parse_spec(data: Any) -> JobSpec:
    """Validate user input as a JobSpec; errors become a 422 naming each field path."""
    import pydantic

    from gateway.core.errors import ValidationError

    if not isinstance(data, dict):
        raise ValidationError("a job spec must be a JSON/YAML object",
                              errors=[{"loc": [], "msg": "expected an object"}])
    try:
        spec = JobSpec.model_validate(data)
    except pydantic.ValidationError as err:
        errors = []
        for e in err.errors():
            loc = [str(x) if not isinstance(x, int) else x for x in e["loc"]]
            msg = e["msg"]
            if e["type"] == "extra_forbidden":
                msg = "unknown field"
            errors.append({"loc": loc, "msg": msg})
        first = errors[0]
        where = ".".join(str(x) for x in first["loc"]) or "spec"
        raise ValidationError(f"invalid job spec: {where}: {first['msg']}", errors=errors) from err
    size = len(json.dumps(data, separators=(",", ":"), default=str))
    if size > LIMITS["spec_bytes"]:  # (it is stored, listed and sent with every read of the job)
        raise ValidationError(f"a job spec may hold {LIMITS['spec_bytes']} bytes as JSON, not {size}: keep data "
                              "in inputs, not in the spec", errors=[{"loc": [], "msg": "spec too large"}])
    problems = spec.kind_problems()
    if problems:
        errs = [{"loc": loc, "msg": msg} for loc, msg in problems]
        raise ValidationError(f"invalid job spec: {'.'.join(problems[0][0])}: {problems[0][1]}", errors=errs)
    return spec
