"""Gateway configuration: YAML with ${VAR} / ${VAR:-default} expansion, validated by pydantic."""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from gateway.core.errors import ValidationError

DEFAULT_CONFIG = Path("config/gateway.yaml")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(_Cfg):
    """Where the gateway listens."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(1024 * 1024, gt=0)
    heavy_requests_per_tenant: int = Field(2, ge=1, le=1000, description="Lists, usage, and submits or "
                                           "migrations with a body over 64 KiB, of one tenant, run this many at "
                                           "once; more wait their turn (one tenant's heavy requests cannot fill "
                                           "the event loop).")
    max_page_bytes: int = Field(1024 * 1024, ge=64 * 1024, description="A list page (/v1/jobs, TES tasks) "
                                "ends early, with a next_page_token, once its jobs' specs and TES tasks reach "
                                "this many bytes: one tenant's big page cannot hold the others up.")
    access_log_sample: float = Field(0.01, ge=0, le=1, description="Share of successful, fast requests logged "
                                     "(errors and requests over 0.5 s are always logged; 1 logs every request).")
    header_timeout_seconds: float = Field(10.0, gt=0, description="A connection that has not sent a whole "
                                          "request head within this time is closed (slowloris).")
    body_timeout_seconds: float = Field(30.0, gt=0, description="How long a request body may take to arrive.")
    max_connections_per_client: int = Field(512, ge=1, description="Open connections allowed from one client "
                                            "address; more are closed at once.")
    max_streams_per_tenant: int = Field(500, ge=1, description="Open watch streams (SSE) per tenant; one more "
                                        "is a 429.")
    submit_wait_seconds: float = Field(15.0, gt=0, description="How long POST /v1/jobs waits for the vendor "
                                       "to confirm a create before it answers with the job accepted but pending.")


class StoreConfig(_Cfg):
    """The job store."""

    url: str = "sqlite+aiosqlite:///var/tjg.db"


class WebhookConfig(_Cfg):
    """Where a tenant's job transitions are POSTed, and the HMAC secret that signs them."""

    url: str = Field(..., pattern=r"^https?://")
    secret: SecretStr


class TenantConfig(_Cfg):
    """A tenant and its API keys."""

    name: str = Field(..., min_length=1)
    api_keys: list[SecretStr] = Field(default_factory=list)
    role: Literal["admin", "user"] = "user"
    projects: list[str] = Field(default_factory=list,
                                description="Vendor projects whose external jobs this tenant sees.")
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    default_backend: str | None = Field(None, description="Where this tenant's GA4GH TES tasks run when they "
                                        "name no backend (resources.backend_parameters.backend); default: the "
                                        "first configured backend.")


class RetryConfig(_Cfg):
    """Retry policy for idempotent vendor calls."""

    attempts: int = Field(5, ge=1, le=20)
    base_delay: float = Field(0.05, ge=0)
    max_delay: float = Field(2.0, ge=0)
    budget_ratio: float = Field(0.5, ge=0, description="Retries allowed per request, averaged.")


class SimulatorSettings(_Cfg):
    """Scarcity for a backend's in-process simulator (`simulate: true`); unlimited when empty."""

    gpus: dict[str, float] = Field(default_factory=dict, description="GPUs per Run:ai node pool or per "
                                   "ModelArts flavor; a job that does not fit waits.")
    quota: dict[str, float] = Field(default_factory=dict, description="Run:ai: deserved GPUs per project in "
                                    "each node pool.")

    @field_validator("gpus", "quota")
    @classmethod
    def _amounts(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, n in v.items() if not 0 <= n < float("inf")]
        if bad:
            raise ValueError(f"{', '.join(bad)}: a GPU count is a number >= 0")
        return v


class PlacementConfig(_Cfg):
    """Defaults for jobs the gateway places (`backend: auto` or a list of candidates)."""

    policy: Literal["ordered", "soonest", "cheapest"] = Field("soonest", description="ordered, soonest or "
                                                              "cheapest (see the spec's placement.policy).")
    max_wait: float | None = Field(None, gt=0, description="Seconds a placed job may wait QUEUED for capacity "
                                   "before it moves; null: it stays.")


class StorageRewrite(_Cfg):
    """Data under one URI prefix is, for this backend, under another (a bucket mirrored into OBS, a claim
    that holds an NFS export): checked before mappings/storage.yaml."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str = Field(..., alias="from", min_length=6, description="e.g. s3://data/")
    to: str = Field(..., min_length=6, description="e.g. obs://data-mirror/")

    @field_validator("source", "to")
    @classmethod
    def _uri(cls, v: str) -> str:
        if not re.match(r"^(pvc|nfs|s3|obs)://[^/]+", v):
            raise ValueError("a pvc://, nfs://, s3:// or obs:// prefix with its claim, server or bucket")
        return v


class BackendConfig(_Cfg):
    """What every backend has. A vendor's own fields (project, credentials, ...) are declared by its config
    model, a subclass kept in the vendor's folder and registered with its adapter (see BACKEND_MODELS)."""

    name: str = Field(..., pattern=r"^[a-z][a-z0-9-]{0,63}$")
    kind: str
    url: str
    simulate: bool = False
    simulate_faults: dict[str, float] = Field(default_factory=dict)
    simulate_speed: float = Field(1.0, gt=0)
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)
    adopt_external: bool = False
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(30.0, gt=0)
    max_concurrency: int = Field(32, ge=1)
    rate_limit: float = Field(0, ge=0, description="Requests per second; 0 means unlimited.")
    breaker_threshold: int = Field(8, ge=1)
    breaker_reset_seconds: float = Field(5.0, gt=0)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    sync_interval: float = Field(5.0, gt=0, description="Seconds between whole-list sync cycles when "
                                 "sync_mode is full and nothing is starting or stopping.")
    sync_mode: Literal["delta", "full"] = Field("delta", description="delta: each cycle asks the vendor what "
                                                "changed since the last one, and the whole list is read every "
                                                "reconcile_interval; full: every cycle reads the whole list.")
    delta_interval: float = Field(1.0, gt=0, description="Seconds between delta cycles (woken at once by the "
                                  "gateway's own submits and actions).")
    reconcile_interval: float = Field(60.0, gt=0, description="Seconds between whole-list reads in delta mode "
                                      "(deletions and changes a delta cannot see); longer when a whole read "
                                      "would take more than a quarter of request_budget.")
    request_budget: float = Field(5.0, gt=0, description="Vendor requests per second the sync may spend on "
                                  "average (over a minute).")
    delta_overlap: float = Field(2.0, ge=0, description="Seconds each delta query re-reads before the last "
                                 "change seen (changes that become visible late).")
    clock_skew: float = Field(5.0, ge=0, description="How far the vendor's clock may run behind this host's "
                              "(each delta re-reads the changes of that many seconds before it began).")
    price_per_gpu_hour: float | None = Field(None, ge=0, description="What placement's `cheapest` counts for "
                                             "one GPU-hour here; default: mappings/prices.yaml.")
    capacity_interval: float = Field(15.0, gt=0, description="Seconds between reads of the backend's capacity "
                                     "(node pools, quotas, flavors), done in its sync loop.")
    submit_deadline: float = Field(120.0, gt=0, description="How long a submit may try before it is "
                                   "left to reconciliation.")
    storage_rules: list[StorageRewrite] = Field(default_factory=list, description="URI rewrites for this "
                                                "backend, before mappings/storage.yaml's.")

    def uri_rules(self) -> list[tuple[str, str]]:
        """storage_rules as (from, to) pairs."""
        return [(r.source, r.to) for r in self.storage_rules]

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    def simulator_options(self) -> dict[str, Any]:
        """What an in-process simulator of this backend is started with beyond the common options (the
        credentials it accepts, when configured, and the vendor's own settings)."""
        return {}


# kind -> the vendor's backend config model; filled when a vendor's adapter class is registered.
BACKEND_MODELS: dict[str, type[BackendConfig]] = {}


def _backend_of_kind(index: int, raw: Any) -> tuple[BackendConfig | None, list[Any]]:
    """One raw backend validated by its kind's model, or the errors located under backends[index]."""
    if isinstance(raw, BackendConfig):
        return raw, []
    kind = raw.get("kind") if isinstance(raw, dict) else None
    model = BACKEND_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        known = ", ".join(sorted(BACKEND_MODELS)) or "none registered"
        msg = f"unknown backend kind {kind!r} (known: {known})" if isinstance(raw, dict) else "expected a mapping"
        return None, [{"type": PydanticCustomError("backend_kind", msg), "loc": (index, "kind"), "input": kind}]
    try:
        return model.model_validate(raw), []
    except pydantic.ValidationError as err:
        return None, [{"type": e["type"], "loc": (index, *e["loc"]), "input": e["input"],
                       **({"ctx": e["ctx"]} if "ctx" in e else {})} for e in err.errors()]


class ReplicaConfig(_Cfg):
    """Several gateway processes on one PostgreSQL share the background work through leases."""

    lease_seconds: float = Field(6.0, gt=0, description="A dead replica's work moves on within this time.")
    reconcile_after: float = Field(20.0, gt=0, description="Pending submissions older than this are settled "
                                   "by whichever replica holds the reconcile lease.")


class IdleConfig(_Cfg):
    """When a running job's GPUs count as idle (its status says `idle: true` and it gets one `idle` event)."""

    enabled: bool = True
    threshold_percent: float = Field(10.0, ge=0, le=100, description="GPU utilization below this is idle.")
    window_seconds: float = Field(900.0, gt=0, description="How long every sample must stay below the threshold.")
    check_interval: float = Field(60.0, gt=0, description="Seconds between two looks at a backend's running jobs.")


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class MetricsConfig(_Cfg):
    """Who may read GET /metrics (job counts by backend and phase, across every tenant)."""

    require_key: bool | Literal["auto"] = Field(
        "auto", description="true: an admin API key is needed; false: open; auto (default): open only while "
        "the server listens on loopback.")


class Config(_Cfg):
    """The whole gateway configuration."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    tenants: list[TenantConfig] = Field(default_factory=list)
    backends: list[BackendConfig] = Field(default_factory=list)
    log_level: str = "info"
    replica: ReplicaConfig = Field(default_factory=lambda: ReplicaConfig())
    idle: IdleConfig = Field(default_factory=lambda: IdleConfig())
    metrics: MetricsConfig = Field(default_factory=lambda: MetricsConfig())
    placement: PlacementConfig = Field(default_factory=lambda: PlacementConfig())

    @field_validator("backends", mode="before")
    @classmethod
    def _by_kind(cls, raw: Any) -> Any:
        if not isinstance(raw, list):
            return raw
        out: list[BackendConfig] = []
        errors: list[Any] = []
        for i, item in enumerate(raw):
            backend, errs = _backend_of_kind(i, item)
            errors += errs
            if backend is not None:
                out.append(backend)
        if errors:
            raise pydantic.ValidationError.from_exception_data("backends", errors)
        return out

    def metrics_need_key(self) -> bool:
        """Whether GET /metrics asks for an admin key (see MetricsConfig)."""
        if self.metrics.require_key == "auto":
            return self.server.host not in LOOPBACK_HOSTS
        return self.metrics.require_key

    @model_validator(mode="after")
    def _unique(self) -> Config:
        names = [b.name for b in self.backends]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate backend names: {', '.join(sorted(dup))}")
        tnames = [t.name for t in self.tenants]
        if len(set(tnames)) != len(tnames):
            raise ValueError("duplicate tenant names")
        for t in self.tenants:
            if t.default_backend is not None and t.default_backend not in (*names, "auto"):
                raise ValueError(f"tenant {t.name}: default_backend {t.default_backend!r} is not a configured "
                                 f"backend ({', '.join(names) or 'none'})")
        return self

    def default_backend(self, tenant: str) -> str | None:
        """The backend a tenant's tasks go to when they name none: its default_backend, else `auto` (placed by
        the default policy)."""
        for t in self.tenants:
            if t.name == tenant and t.default_backend:
                return t.default_backend
        return "auto" if self.backends else None

    def backend(self, name: str) -> BackendConfig:
        """The backend called `name`, or a 422 naming the field."""
        for b in self.backends:
            if b.name == name:
                return b
        known = ", ".join(b.name for b in self.backends) or "none"
        raise ValidationError(f"unknown backend {name!r} (configured: {known})",
                              errors=[{"loc": ["backend"], "msg": f"unknown backend {name!r}; configured: {known}"}])

    def secrets(self) -> list[str]:
        """Every secret string in the config (API keys, webhook secrets, each vendor's credentials), for log
        scrubbing."""
        return [s for s in _secret_values(self) if s]


def _secret_values(value: Any) -> list[str]:
    """Every SecretStr inside a model, however deep (a vendor's config declares its own)."""
    if isinstance(value, SecretStr):
        return [value.get_secret_value()]
    if isinstance(value, BaseModel):
        return [s for name in type(value).model_fields for s in _secret_values(getattr(value, name))]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _secret_values(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _secret_values(v)]
    return []


def expand_env(value: Any, env: dict[str, str] | None = None) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string of a YAML tree."""
    env = dict(os.environ) if env is None else env
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env and env[name] != "":
                return env[name]
            if default is not None:
                return default
            raise ValidationError(f"config refers to ${{{name}}} but it is not set",
                                  errors=[{"loc": ["config", name], "msg": "environment variable not set"}])
        return _VAR.sub(sub, value)
    if isinstance(value, list):
        return [expand_env(v, env) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v, env) for k, v in value.items()}
    return value


def default_config_path() -> Path:
    """TJG_CONFIG, else ./config/gateway.yaml, else the copy installed with the package (any cwd)."""
    env = os.environ.get("TJG_CONFIG")
    if env:
        return Path(env)
    if DEFAULT_CONFIG.exists():
        return DEFAULT_CONFIG
    shipped = resources.files("config") / "gateway.yaml"
    return Path(str(shipped))


def load_config(path: str | Path | None = None) -> Config:
    """Read, expand and validate a config file."""
    p = Path(path) if path else default_config_path()
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError as err:
        raise ValidationError(f"config file {p} not found") from err
    except yaml.YAMLError as err:
        raise ValidationError(f"config file {p} is not valid YAML: {err}") from err
    return parse_config(raw)


def parse_config(raw: dict[str, Any]) -> Config:
    """Validate an already-parsed config tree."""
    try:
        return Config.model_validate(expand_env(raw))
    except pydantic.ValidationError as err:
        errors = [{"loc": ["config", *[str(x) for x in e["loc"]]], "msg": e["msg"]} for e in err.errors()]
        first = errors[0]
        raise ValidationError(f"invalid config at {'.'.join(first['loc'])}: {first['msg']}", errors=errors) from err
