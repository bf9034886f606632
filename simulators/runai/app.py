"""An NVIDIA Run:ai control-plane simulator that runapy's client accepts unchanged.

Token auth (client_credentials and the deprecated app_token), trainings and distributed
workloads with the vendor's status codes and lifecycles, /api/v1/workloads with filterBy,
sorting and paging, counts and events. Bodies are validated against Run:ai's own OpenAPI.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from aiohttp import web

from simulators.kit import (
    COMMITTED,
    ChangeIndex,
    FaultState,
    Timeline,
    Usage,
    exit_code_of,
    persist,
    run_outcome,
    running_spans,
    sim_admin_routes,
    sim_middlewares,
    wall,
)
from simulators.oas import SchemaChecker
from simulators.scheduler import CAPACITY, NO_POOL, OVER_LIMIT, OVER_QUOTA, Claim, Scheduler

SPEC_PATH = Path(__file__).with_name("openapi-subset.json")
DEMO_CREDENTIALS = [("tjg-demo", "tjg-demo-secret")]
DEMO_CLUSTER = "71f69d83-ba66-4822-adf5-55ce55efd210"  # the cluster its node pools and projects belong to
K8S_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
FILTER = re.compile(r"^([A-Za-z0-9_.]+)(==|!=|<=|>=|=@|!@|=\^|=\$)(.*)$")
GONE = "__gone__"
TERMINAL = ("Completed", "Failed")
RUNNING = ("Running", "Degraded", "Updating")
_PLAIN_KEYS = {"name": "name", "id": "id", "type": "type", "projectId": "project_id", "clusterId": "cluster_id"}
PHASES = ("Creating", "Initializing", "Resuming", "Pending", "Deleting", "Running", "Updating", "Stopped",
          "Stopping", "Degraded", "Failed", "Completed", "Terminating", "Unknown")
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
GPU_MEMORY_BYTES = 80 * 2 ** 30  # a simulated GPU device (A100 80GB)
MEMORY_UNITS = {"": 1, "K": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12,
                "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40}
# The documented lifecycle (Run:ai's workload phases): scheduled first, then the pods initialize. A
# workload waits in Pending until the scheduler admits it (at once when capacity is unlimited).
WAIT = [(0.0, "Creating"), (0.2, "Pending")]
RESUME = [(0.0, "Resuming"), (0.2, "Pending")]
START = [*WAIT, (0.4, "Initializing"), (0.6, "Running")]  # admitted at once (bulk-made workloads)
PRIORITY = {"low": 40, "medium": 50, "high": 75, "build": 100, "inference": 125}  # priorityClass -> value
PHASE_REASON = {OVER_QUOTA: "NonPreemptibleOverQuota", OVER_LIMIT: "OverLimit"}
# How each failure ends, as Kubernetes and Run:ai word it: (condition reason, message, exit code or None).
FAILURES: dict[str, tuple[str, str, int | None]] = {
    "image-pull": ("ImagePullBackOff", "Back-off pulling image {image}: manifest unknown", None),
    "oom": ("OOMKilled", "Container was OOMKilled: pod exited with code 137", 137),
    "node-failure": ("NodeLost", "Node {node} which was running the pod is unresponsive", None),
    "failed": ("Error", "Pod exited with code {code}", 0),
}
EVICTED = "Workload was preempted by the scheduler: {why}"
UNSCHEDULABLE, PREEMPTED, PULL_RETRYING = "Unschedulable", "Preempted", "ErrImagePull"
# Every condition reason this simulator reports (mappings/reasons_runai.yaml must know each).
CONDITION_REASONS = (UNSCHEDULABLE, PREEMPTED, PULL_RETRYING, *(f[0] for f in FAILURES.values()))
TELEMETRY_GROUPS = ("ClusterId", "DepartmentId", "ProjectId", "Type", "CurrentNodepools", "Phase", "Category")
PENDING_BUCKETS = ((300, "0-5m"), (3600, "5m-1h"), (86400, "1h-1d"), (float("inf"), "1d+"))


def error(code: int, message: str, **extra: Any) -> dict[str, Any]:
    """Run:ai's error body."""
    return {"code": code, "message": message, **extra}


def _json(status: int, body: Any) -> web.Response:
    return web.json_response(body, status=status)


def _list_fields() -> tuple[frozenset[str], frozenset[str]]:
    """The fields GET /api/v1/workloads may filter by (WorkloadsFilter's pattern) and sort by (WorkloadsSort)."""
    params = json.loads(SPEC_PATH.read_text())["components"]["parameters"]
    pattern = params["WorkloadsFilter"]["schema"]["items"]["pattern"]
    fields = re.match(r"\^\(([^)]*)\)", pattern)
    return (frozenset(fields.group(1).split("|")) if fields else frozenset(),
            frozenset(params["WorkloadsSort"]["schema"]["enum"]))


FILTER_FIELDS, SORT_FIELDS = _list_fields()


def _bad_query(err: Exception | str) -> web.Response:
    """A query parameter no request can get right: a 400 (a 500 would tell the client to try again)."""
    return _json(400, error(400, f"Bad request - {err}"))


def _unexpected(err: Exception | str) -> web.Response:
    """A bad parameter on an operation whose spec lists no 400: the documented "unexpected error"."""
    return _json(500, error(500, f"unexpected error - {err}"))


def _bytes(quantity: Any, default: int) -> int:
    """A Kubernetes memory quantity ("64G", "512Mi") in bytes."""
    m = re.match(r"^([0-9.]+)([KMGT]i?)?$", str(quantity or "").strip())
    if not m:
        return default
    return int(float(m.group(1)) * MEMORY_UNITS[m.group(2) or ""])


def _csv(request: web.Request, name: str) -> list[str]:
    """A query array sent either exploded (name=a&name=b) or not (name=a,b)."""
    return [v for raw in request.query.getall(name, []) for v in (p.strip() for p in raw.split(",")) if v]


@lru_cache(maxsize=1 << 16)  # the same few timestamps are formatted for every list page
def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(epoch * 1000) % 1000:03d}Z"


def _epoch(iso: str) -> float:
    """An ISO 8601 timestamp (Z or offset) as epoch seconds."""
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError as err:
        raise ValueError(f"invalid timestamp {iso!r}") from err


def _kind(request: web.Request) -> str:
    """`trainings` or `distributed`, from /api/v1/workloads/<kind>/..."""
    return request.path.split("/")[4]


def _sort_desc(request: web.Request, default: str) -> bool:
    """sortOrder (asc|desc) as "descending?"; anything else is refused."""
    order = request.query.get("sortOrder", default)
    if order not in ("asc", "desc"):
        raise ValueError(f"sortOrder must be asc or desc, not {order!r}")
    return order == "desc"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass
class Workload:
    """One simulated workload."""

    id: str
    name: str
    requested_name: str
    type: str  # Training | Distributed
    project_id: str
    cluster_id: str
    created_at: float
    body: dict[str, Any]
    timeline: Timeline
    outcome: str
    run_seconds: float
    created_by: str
    desired: str = "Running"
    deleted_at: float | None = None
    url: str = ""  # an inference's endpoint on this simulator (/_serve/{id}/)
    events: list[tuple[float, str, str]] = field(default_factory=list)  # (time, reason, message) beyond phases
    served: list[tuple[float, float]] = field(default_factory=list)  # an inference's requests: (wall time, seconds)
    scaled_from: int = 0  # an inference's replicas before its last update (they serve while it updates)
    claim: Claim | None = None  # its demand on the scheduler (none for bulk-made workloads)
    evicted: str | None = None  # while waiting again after a preemption: why it was preempted


class RunaiSimulator:
    """State and handlers of one simulated Run:ai control plane."""

    def __init__(self, credentials: list[tuple[str, str]] | None = None, speed: float = 1.0,
                 token_ttl: int = 3600, gpus: dict[str, float] | None = None,
                 quota: dict[str, float] | None = None) -> None:
        self.credentials = dict(credentials or DEMO_CREDENTIALS)
        self.speed = speed
        self.token_ttl = token_ttl
        self.key = secrets.token_bytes(32)
        self.issuer = f"runai-sim-{uuid.uuid4().hex[:8]}"
        self.jobs: dict[str, Workload] = {}
        self.order: list[Workload] = []
        self.rank: dict[str, int] = {}  # workload id -> its place in self.order (creation order)
        self.changes = ChangeIndex()  # what changed since T, without reading every workload
        self.names: dict[tuple[str, str], str] = {}
        self.tokens_issued = 0
        self.checker = SchemaChecker(json.loads(SPEC_PATH.read_text()))
        self.revision = 0  # bumped by every change to the workloads (see simkit.persist)
        self.pages: dict[str, tuple[int, float, bytes]] = {}  # list query -> (revision, good until, body)
        self.sched = Scheduler(capacity=dict(gpus or {}), deserved=dict(quota or {}), on_start=self._admitted,
                               on_preempt=self._preempted)
        self.pool_ids = {name: str(i + 1) for i, name in enumerate(self.sched.capacity or {"default": 0})}
        self.started = time.time()
        self.cluster_id = DEMO_CLUSTER

    def _track(self, w: Workload) -> None:
        """Add a workload to the creation order and to the change index."""
        self.rank[w.id] = len(self.order)
        self.order.append(w)
        self.changes.watch(w, w.timeline)

    def export_state(self) -> dict[str, Any]:
        """The workloads and the scheduler's queue, for simkit.StateFile."""
        return {"order": self.order, "sched": self.sched.export()}

    def restore_state(self, state: dict[str, Any], shift: float) -> None:
        """Take saved workloads up again on this process's clock."""
        for w in state["order"]:
            w.timeline.shift(shift)
            if w.deleted_at is not None:
                w.deleted_at += shift
            self.jobs[w.id] = w
            self._track(w)
            if w.deleted_at is None:
                self.names[(w.project_id, w.name)] = w.id
        if state.get("sched"):
            self.sched.restore(state["sched"], shift)

    # -- auth ---------------------------------------------------------------------------
    def issue_token(self, subject: str) -> str:
        """A signed JWT whose payload also decodes with plain base64 (runapy's decoder)."""
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        now = int(time.time())
        for n in range(1000):
            payload = json.dumps({"sub": subject, "iss": self.issuer, "iat": now, "exp": now + self.token_ttl,
                                  "jti": uuid.uuid4().hex, "n": "x" * n})
            enc = _b64url(payload.encode())
            if "-" not in enc and "_" not in enc and len(enc) % 4 in (2, 3):
                break
        sig = _b64url(hmac.new(self.key, f"{header}.{enc}".encode(), hashlib.sha256).digest())
        self.tokens_issued += 1
        return f"{header}.{enc}.{sig}"

    @staticmethod
    def caller(request: web.Request) -> str:
        """The subject of the request's (already verified) token: who created a workload."""
        try:
            payload = request.headers["Authorization"][7:].strip().split(".")[1]
            return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"])
        except (KeyError, IndexError, ValueError):
            return "unknown"

    def verify(self, request: web.Request) -> str | None:
        """None when the bearer token is ours and unexpired, else the reason."""
        auth = request.headers.get("Authorization", "")
        if not auth.lower().startswith("bearer "):
            return "missing bearer token"
        token = auth[7:].strip()
        parts = token.split(".")
        if len(parts) != 3:
            return "malformed token"
        want = _b64url(hmac.new(self.key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(want, parts[2]):
            return "invalid token signature"
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        if claims.get("iss") != self.issuer:
            return "token from another issuer"
        if claims.get("exp", 0) <= time.time():
            return "token expired"
        return None

    async def token(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _json(400, error(400, "Bad request - body is not JSON"))
        if not isinstance(body, dict):
            return _json(400, error(400, "Bad request - body must be an object"))
        grant = body.get("grantType")
        if grant == "client_credentials":
            ident, secret = body.get("clientID"), body.get("clientSecret")
        elif grant == "app_token":
            ident = body.get("AppId") or body.get("appID") or body.get("appId")
            secret = body.get("AppSecret") or body.get("appSecret")
        else:
            return _json(400, error(400, f"Bad request - unsupported grantType {grant!r}"))
        expected = self.credentials.get(str(ident))
        if expected is None or not hmac.compare_digest(expected, str(secret)):
            # The token operation documents no 401: refused credentials are a bad request.
            return _json(400, error(400, "Bad request - invalid client credentials"))
        tok = self.issue_token(str(ident))
        return _json(200, {"accessToken": tok, "idToken": tok, "refreshToken": secrets.token_hex(16),
                           "expiresIn": self.token_ttl})

    # -- lifecycle -----------------------------------------------------------------------
    def _s(self, seconds: float) -> float:
        return seconds / self.speed

    def _steps(self, steps: list[tuple[float, str]]) -> list[tuple[float, str]]:
        return [(self._s(t), p) for t, p in steps]

    def _run_steps(self, w: Workload, start_offset: float) -> list[tuple[float, str]]:
        if w.outcome == "hang" or w.type == "Inference":  # a served model runs until it is deleted
            return []
        if w.outcome == "image-pull":  # the pods never leave Initializing: the pull fails after a few tries
            return [(start_offset - self._s(0.2) + self._s(1.0), "Failed")]
        end = "Completed" if w.outcome == "completed" else "Failed"  # failed, oom, node-failure, preempted
        return [(start_offset + self._s(w.run_seconds), end)]

    def phase(self, w: Workload, now: float | None = None) -> str:
        """The workload's phase now (after the scheduler has caught up with `now`)."""
        t = time.monotonic() if now is None else now
        self.sched.advance(t)
        p: str = w.timeline.current(t)
        return p

    # -- scheduling ----------------------------------------------------------------------
    def _claim(self, w: Workload) -> Claim:
        """What the workload asks of the scheduler: all its pods' GPUs, in its node pools."""
        spec = w.body.get("spec") or {}
        shape = self._shape(w)
        pods = shape["pods"]
        if w.type == "Distributed":
            master = w.body.get("masterSpecSameAsWorker", True) and spec.get("distributedFramework") != "MPI"
            pods = int(spec.get("numWorkers") or 1) + (1 if master else 0)
        elif w.type == "Inference":
            pods = self.replicas(w)
        pools = [str(p) for p in spec.get("nodePools") or []] or \
            (["default"] if not self.sched.limited or "default" in self.sched.capacity else list(self.sched.capacity))
        if spec.get("preemptibility") is not None:
            preemptible = spec["preemptibility"] == "preemptible"
        else:  # the workload type's default: trainings are preemptible, inferences are not
            preemptible = w.type != "Inference"
        return Claim(key=w.id, pools=pools, gpus=pods * shape["gpus"] * shape["portion"], project=w.project_id,
                     priority=PRIORITY.get(str(spec.get("priorityClass") or "train"), 50), preemptible=preemptible)

    def _admitted(self, c: Claim, t: float) -> float | None:
        """The scheduler admitted the workload at `t`: its pods initialize and run; returns when they end."""
        w = self.jobs[c.key]
        base = max(t, w.timeline.at[0] + self._s(WAIT[-1][0]))  # never before it was seen pending
        w.evicted = None
        if w.timeline.current(base) == "Pending":
            steps, offset = [(self._s(0.2), "Initializing"), (self._s(0.4), "Running")], self._s(0.4)
        else:  # resuming: pending for a moment first (the documented order)
            steps = [(self._s(0.2), "Pending"), (self._s(0.35), "Initializing"), (self._s(0.5), "Running")]
            offset = self._s(0.5)
        if w.outcome == "image-pull":
            steps = steps[:-1]
        run = self._run_steps(w, offset)
        w.timeline.cut(base, steps + run)
        return base + run[-1][0] if run else None

    def _preempted(self, c: Claim, t: float, by: Claim | None) -> bool:
        """The scheduler took the workload's GPUs at `t`: it waits again, or ends if it asked to."""
        w = self.jobs[c.key]
        spec = w.body.get("spec") or {}
        other = self.jobs[by.key] if by is not None else None
        message = EVICTED.format(why="by the cluster administrator" if other is None else
                                 f"workload {other.name} of project {other.project_id} needs the GPUs")
        w.events.append((t, PREEMPTED, message))
        self.revision += 1
        if spec.get("terminateAfterPreemption"):
            w.outcome = "preempted"
            w.timeline.cut(t, [(0.0, "Failed")])
            return False
        w.evicted = message
        w.timeline.cut(t, [(0.0, "Pending")])
        return True

    def pending_reason(self, w: Workload) -> tuple[str | None, str] | None:
        """(phaseReason, message) of a workload the scheduler keeps waiting, else None."""
        c = w.claim
        if c is None or c.admitted_at is not None or c.key not in self.sched.waiting or c.reason is None:
            return None
        if c.reason == NO_POOL:
            return None, f"No node pool matches the requested node pools: {c.detail}"
        if c.reason == CAPACITY:
            return None, f"Not enough resources in the requested nodepool: {c.detail}"
        if c.reason == OVER_QUOTA:
            return PHASE_REASON[OVER_QUOTA], f"You have reached the limit of non-preemptible resources: {c.detail}"
        return PHASE_REASON[OVER_LIMIT], f"Project over its limit: {c.detail}"

    def visible(self, w: Workload, now: float) -> bool:
        return self.phase(w, now) != GONE

    # -- records -------------------------------------------------------------------------
    def failure(self, w: Workload) -> tuple[str, str] | None:
        """(condition reason, message) of a failed workload, as Kubernetes and Run:ai word it."""
        if w.outcome == "preempted":
            last = next((m for _, r, m in reversed(w.events) if r == PREEMPTED),
                        "Workload was preempted by a higher-priority workload")
            return PREEMPTED, last
        reason, text, code = FAILURES.get(w.outcome, FAILURES["failed"])
        exit_code = exit_code_of(self.env(w)) if code == 0 else code
        image = str((w.body.get("spec") or {}).get("image") or "")
        return reason, text.format(image=json.dumps(image), node=f"node-{w.id[:4]}", code=exit_code)

    def _message(self, phase: str, w: Workload) -> str:
        if phase == "Pending":
            why = self.pending_reason(w)
            if w.evicted:
                return w.evicted + (f"; {why[1]}" if why else "")
            return why[1] if why else "Waiting for resources in the requested node pools"
        if phase == "Failed" or (phase == "Initializing" and w.outcome == "image-pull"):  # (the pull is retried)
            fail = self.failure(w)
            return fail[1] if fail else ""
        return {"Completed": "All pods completed successfully", "Degraded": "Some pods are not ready"}.get(phase, "")

    def _conditions(self, w: Workload, shown: str, since: float) -> list[dict[str, Any]]:
        """Ready, plus what keeps it from running or why it ended (reason as Kubernetes words it)."""
        at = _iso(since)
        out: list[dict[str, Any]] = [{"type": "Ready", "status": "True" if shown == "Running" else "False",
                                      "lastTransitionTime": at}]
        if shown == "Pending":
            if w.evicted:
                out.append({"type": "Evicted", "status": "True", "reason": PREEMPTED, "message": w.evicted,
                            "lastTransitionTime": at})
            why = self.pending_reason(w)
            if why is not None:
                out.append({"type": "PodScheduled", "status": "False", "reason": UNSCHEDULABLE,
                            "message": why[1], "lastTransitionTime": at})
        elif shown == "Failed" or (shown == "Initializing" and w.outcome == "image-pull"):
            fail = self.failure(w)
            if fail is not None:
                # The kubelet's first word for a pull that fails is ErrImagePull; once it gives up, the back-off.
                reason = PULL_RETRYING if shown == "Initializing" else fail[0]
                out.append({"type": "Failed", "status": "True" if shown == "Failed" else "False", "reason": reason,
                            "message": fail[1], "lastTransitionTime": at})
        return out

    def _pending_seconds(self, w: Workload, now: float) -> int:
        """Seconds spent Pending since submission, from the phases it went through."""
        total, start = 0.0, None
        for t, p in w.timeline.history(now):
            if p == "Pending" and start is None:
                start = t
            elif p != "Pending" and start is not None:
                total, start = total + t - start, None
        return int(total + (now - start if start is not None else 0))

    def workload_record(self, w: Workload, now: float) -> dict[str, Any]:
        """GET /api/v1/workloads shape."""
        phase = self.phase(w, now)
        shown = "Deleting" if phase == GONE else phase
        since = wall(w.timeline.since(now))
        spec = w.body.get("spec") or {}
        compute = spec.get("compute") or {}
        gpus = compute.get("gpuPortionRequest") if compute.get("gpuRequestType") == "portion" \
            else compute.get("gpuDevicesRequest")
        workers = int(spec.get("numWorkers") or 0)
        running = (workers + 1) if shown == "Running" else 0
        if w.type == "Inference":
            workers = self.replicas(w) - 1
            running = self.serving(w, shown)
        rec: dict[str, Any] = {
            "tenantId": 1001, "id": w.id, "name": w.name, "type": w.type,
            "source": "Control-plane", "priority": 50, "priorityClassName": spec.get("priorityClass") or "train",
            "submittedBy": w.created_by, "clusterId": w.cluster_id, "projectName": f"project-{w.project_id}",
            "projectId": w.project_id, "departmentName": "default", "departmentId": "1",
            "namespace": f"runai-project-{w.project_id}", "createdAt": _iso(w.created_at),
            "phase": shown, "phaseMessage": self._message(shown, w), "k8sPhase": shown,
            "conditions": self._conditions(w, shown, since),
            "runningPods": running,
            "requestedPods": {"number": workers + 1},
            "phaseUpdatedAt": _iso(since), "k8sPhaseUpdatedAt": _iso(since), "updatedAt": _iso(since),
            "deletedAt": _iso(wall(w.deleted_at)) if w.deleted_at is not None else None,
            "category": "Deploy" if w.type == "Inference" else "Train",
            "requestedNodePools": w.claim.pools if w.claim else spec.get("nodePools") or ["default"],
            "currentNodePools": [w.claim.pool] if w.claim and w.claim.pool and shown in RUNNING else [],
            "preemptible": w.claim.preemptible if w.claim else True,
            "totalPendingTimeSeconds": self._pending_seconds(w, now),
            "workloadRequestedResources": {"gpuRequestType": compute.get("gpuRequestType") or "portion",
                                           "gpu": {"request": gpus}},
        }
        why = self.pending_reason(w) if shown == "Pending" else None
        if why is not None and why[0]:  # (absent otherwise: the OpenAPI's phaseReason cannot be null)
            rec["phaseReason"] = why[0]
        if w.type == "Distributed" and spec.get("distributedFramework"):  # (the list schema has no null for it)
            rec["distributedFramework"] = spec["distributedFramework"]
        if w.type == "Inference":
            rec["urls"] = [w.url] if shown in RUNNING else []
        return rec

    def serving(self, w: Workload, shown: str) -> int:
        """An inference's replicas up and answering: while it updates, those it had (at most the new count:
        a scale-down stops the extra ones first)."""
        if shown in ("Running", "Degraded"):
            return self.replicas(w)
        return min(w.scaled_from, self.replicas(w)) if shown == "Updating" else 0

    @staticmethod
    def replicas(w: Workload) -> int:
        """An inference's replicas: its autoscaling minimum (1 when unset; 0 scales it to zero, as Run:ai's
        minReplicas 0 does with no traffic)."""
        auto = (w.body.get("spec") or {}).get("autoscaling") or {}
        low = auto.get("minReplicas")
        return 1 if low is None else max(0, int(low))

    def training_record(self, w: Workload, now: float) -> dict[str, Any]:
        """Training1 / DistributedWorkload shape."""
        phase = self.phase(w, now)
        rec: dict[str, Any] = {
            "name": w.name, "requestedName": w.requested_name, "workloadId": w.id, "projectId": w.project_id,
            "clusterId": w.cluster_id, "createdBy": w.created_by, "createdAt": _iso(w.created_at),
            "deletedAt": _iso(wall(w.deleted_at)) if w.deleted_at is not None else None,
            "desiredPhase": w.desired, "actualPhase": "Deleting" if phase == GONE else phase,
            "spec": w.body.get("spec") or {},
        }
        if w.type == "Distributed":
            for k in ("masterSpecSameAsWorker", "masterSpec"):
                if k in w.body:
                    rec[k] = w.body[k]
        return rec

    # -- handlers ------------------------------------------------------------------------
    async def _authed(self, request: web.Request) -> web.Response | None:
        reason = self.verify(request)
        return _json(401, error(401, f"Unauthorized - {reason}")) if reason else None

    async def create(self, request: web.Request) -> web.Response:
        if (denied := await self._authed(request)) is not None:
            return denied
        kind = _kind(request)
        schema = {"trainings": "TrainingCreationRequest", "distributed": "DistributedCreationRequest",
                  "inferences": "InferenceCreationRequest"}[kind]
        try:
            body = await request.json()
        except ValueError:
            return _json(400, error(400, "Bad submission request - body is not JSON"))
        if not isinstance(body, dict):
            return _json(400, error(400, "Bad submission request - body must be an object"))
        issues = self.checker.check(schema, body)
        name = body.get("name")
        if isinstance(name, str) and (len(name) > 63 or not K8S_NAME.match(name)):
            issues.append(("name", "must be a Kubernetes name: lowercase letters, digits and '-', up to 63"))
        if isinstance(body.get("clusterId"), str) and not UUID.match(body["clusterId"]):
            issues.append(("clusterId", "must be a UUID"))
        # Trainings and distributed answer a 400 as SubmissionErrorV2 (with complianceIssues); the inference
        # create documents plain Error (code, message, details): the issues go in its words.
        plain = kind == "inferences"
        if issues:
            if plain:
                return _json(400, error(400, "Bad request", details="; ".join(f"{f}: {d}" for f, d in issues)))
            return _json(400, error(400, "Bad submission request", details=f"{issues[0][0]}: {issues[0][1]}",
                                    complianceIssues=[{"field": f, "details": d, "rule": "required" if
                                                       d == "is required" else "canEdit"} for f, d in issues]))
        project = str(body["projectId"])
        final = body["name"]
        if body.get("useGivenNameAsPrefix"):
            final = f"{final}-{secrets.token_hex(3)}"
        if (project, final) in self.names:
            # The create operation documents no 409: a taken name is a bad submission request.
            if plain:
                return _json(400, error(400, "Bad request", details=f"name: workload {final!r} already exists in "
                                        f"project {project}"))
            return _json(400, error(400, "Bad submission request", details=f"workload {final!r} already exists "
                                    f"in project {project}", complianceIssues=[
                                        # (no rule: PolicyRuleEnum names policy rules, and a taken name is none)
                                        {"field": "name", "details": "already exists"}]))
        env = {str(e["name"]): str(e.get("value") or "") for e in
               (body.get("spec") or {}).get("environmentVariables") or [] if isinstance(e, dict) and e.get("name")}
        outcome, run = run_outcome(env, str((body.get("spec") or {}).get("image") or ""))
        if outcome in ("abnormal", "runtime-limit"):  # Run:ai trainings have no run-time limit: a plain failure
            outcome = "failed"
        now = time.monotonic()
        wid = str(uuid.uuid4())
        w = Workload(id=wid, name=final, requested_name=body["name"],
                     type={"trainings": "Training", "distributed": "Distributed", "inferences": "Inference"}[kind],
                     project_id=project, cluster_id=str(body["clusterId"]), created_at=time.time(), body=body,
                     timeline=Timeline(now, self._steps(WAIT)), outcome=outcome, run_seconds=run,
                     created_by=self.caller(request), url=f"{request.url.origin()}/_serve/{wid}/")
        self.jobs[w.id] = w
        self._track(w)
        self.names[(project, final)] = w.id
        w.claim = self._claim(w)
        self.sched.submit(w.claim, now)
        request[COMMITTED] = True
        return _json(202, self.training_record(w, now))

    def _find(self, request: web.Request, kind: str | None) -> Workload | None:
        w = self.jobs.get(request.match_info["id"])
        if w is None or not self.visible(w, time.monotonic()):
            return None
        if kind == "trainings" and w.type != "Training":
            return None
        if kind == "distributed" and w.type != "Distributed":
            return None
        if kind == "inferences" and w.type != "Inference":
            return None
        return w

    async def _target(self, request: web.Request, kind: str | None) -> Workload | web.Response:
        """The authenticated request's workload, or the 401/404 to answer."""
        if (denied := await self._authed(request)) is not None:
            return denied
        w = self._find(request, kind)
        if w is None:
            return _json(404, error(404, f"workload {request.match_info['id']} not found"))
        return w

    async def get_training(self, request: web.Request) -> web.Response:
        w = await self._target(request, _kind(request))
        if isinstance(w, web.Response):
            return w
        return _json(200, self.training_record(w, time.monotonic()))

    async def delete(self, request: web.Request) -> web.Response:
        w = await self._target(request, _kind(request))
        if isinstance(w, web.Response):
            return w
        now = time.monotonic()
        if w.deleted_at is None:
            w.deleted_at = now
            w.desired = "Deleted"
            w.timeline.cut(now, [(0, "Deleting"), (self._s(0.5), GONE)])
            self.sched.stop(w.id, now + self._s(0.5))
            self.names.pop((w.project_id, w.name), None)
        request[COMMITTED] = True
        return _json(202, {"code": 202, "message": "Request has been accepted."})

    async def suspend(self, request: web.Request) -> web.Response:
        w = await self._target(request, _kind(request))
        if isinstance(w, web.Response):
            return w
        now = time.monotonic()
        phase = self.phase(w, now)
        if phase in TERMINAL or phase == "Deleting":  # no 409 documented: accepted, and nothing to do
            request[COMMITTED] = True
            return _json(202, {"code": 202, "message": "Request has been accepted."})
        if phase not in ("Stopping", "Stopped"):
            w.desired = "Stopped"
            w.evicted = None
            w.timeline.cut(now, [(0, "Stopping"), (self._s(0.5), "Stopped")])
            self.sched.stop(w.id, now + self._s(0.5))
        request[COMMITTED] = True
        return _json(202, {"code": 202, "message": "Request has been accepted."})

    async def resume(self, request: web.Request) -> web.Response:
        w = await self._target(request, _kind(request))
        if isinstance(w, web.Response):
            return w
        now = time.monotonic()
        phase = self.phase(w, now)
        if phase in TERMINAL or phase == "Deleting":  # no 409 documented: accepted, and nothing to do
            request[COMMITTED] = True
            return _json(202, {"code": 202, "message": "Request has been accepted."})
        if phase in ("Stopping", "Stopped"):
            w.desired = "Running"
            w.timeline.cut(now, self._steps(RESUME))
            if w.claim is None:  # a bulk-made workload: not scheduled, runs at once
                w.claim = self._claim(w)
            self.sched.requeue(w.claim, now)
        request[COMMITTED] = True
        return _json(202, {"code": 202, "message": "Request has been accepted."})

    async def update_inference(self, request: web.Request) -> web.Response:
        """PATCH /api/v1/workloads/inferences/{id}: change the image, compute or autoscaling (replicas)."""
        w = await self._target(request, "inferences")
        if isinstance(w, web.Response):
            return w
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or (issues := self.checker.check("InferenceUpdateRequest", body)):
            why = "body must be an object" if not isinstance(body, dict) else f"{issues[0][0]}: {issues[0][1]}"
            return _unexpected(f"invalid update: {why}")  # the PATCH operation documents no 400
        spec = dict(w.body.get("spec") or {})
        for key, value in (body.get("spec") or {}).items():
            spec[key] = {**(spec.get(key) or {}), **value} if isinstance(value, dict) else value
        now = time.monotonic()
        w.scaled_from = self.replicas(w) if self.phase(w, now) in RUNNING else 0
        w.body = {**w.body, "spec": spec}
        if self.phase(w, now) in RUNNING:
            w.timeline.cut(now, [(0, "Updating"), (self._s(0.3), "Running")])
        request[COMMITTED] = True
        return _json(202, self.training_record(w, now))

    async def sim_bulk(self, request: web.Request) -> web.Response:
        """POST /_sim/bulk {n, project, prefix}: add running trainings without the API (benchmark set-up)."""
        body = await request.json()
        ids = self.bulk_create(int(body["n"]), str(body.get("project", "1")), str(body.get("cluster", "")),
                               prefix=str(body.get("prefix", "bulk")))
        return _json(200, {"ids": ids})

    async def sim_finish(self, request: web.Request) -> web.Response:
        """POST /_sim/finish {ids, phase}: end running workloads now (Completed by default), as if their
        command exited; answers when it happened (epoch seconds), for a benchmark of how soon it is seen."""
        body = await request.json()
        phase = str(body.get("phase", "Completed"))
        if phase not in ("Completed", "Failed"):
            return _json(400, {"error": "phase must be Completed or Failed"})
        now = time.monotonic()
        done = []
        for wid in body.get("ids") or []:
            w = self.jobs.get(str(wid))
            if w is not None and self.phase(w, now) in RUNNING:
                w.timeline.cut(now, [(0, phase)])
                self.sched.running.pop(w.id, None)
                done.append(w.id)
        self.revision += 1
        return _json(200, {"at": wall(now), "ids": done})

    async def serve(self, request: web.Request) -> web.Response:
        """The model server behind a running inference's URL (any method, any path under it)."""
        w = self.jobs.get(request.match_info["id"])
        now = time.monotonic()
        if w is None or w.type != "Inference" or self.phase(w, now) not in RUNNING:
            return _json(503, {"error": "no running inference serves this URL"})
        if not self.serving(w, self.phase(w, now)):
            return _json(503, {"error": "the inference is scaled to zero replicas"})
        started = time.perf_counter()
        body = await request.read()
        answer = _json(200, {"model": w.name, "workload": w.id, "path": "/" + request.match_info["tail"],
                             "method": request.method, "replicas": self.replicas(w), "received_bytes": len(body)})
        w.served.append((time.time(), time.perf_counter() - started))
        del w.served[:-10_000]  # (what the metrics read: the recent requests)
        return answer

    def bulk_create(self, n: int, project: str, cluster: str, prefix: str = "bulk", outcome: str = "hang",
                    run_seconds: float = 5.0) -> list[str]:
        """Add `n` trainings without HTTP (benchmark and scale-test set-up)."""
        now = time.monotonic()
        ids = []
        for i in range(n):
            name = f"{prefix}-{i}"
            body = {"name": name, "projectId": project, "clusterId": cluster, "spec": {"image": "bulk:1"}}
            w = Workload(id=str(uuid.uuid4()), name=name, requested_name=name, type="Training",
                         project_id=project, cluster_id=cluster, created_at=time.time(), body=body,
                         timeline=Timeline(now, self._steps(START)),
                         outcome=outcome, run_seconds=run_seconds, created_by="bulk")
            w.timeline.extend(now, self._run_steps(w, self._s(START[-1][0])))
            self.jobs[w.id] = w
            self._track(w)
            self.names[(project, name)] = w.id
            ids.append(w.id)
        self.revision += 1  # not a request the middleware sees commit
        return ids

    async def sim_preempt(self, request: web.Request) -> web.Response:
        """POST /_sim/preempt/{id}: preempt a running workload as Run:ai does (back to Pending, or Failed with
        terminateAfterPreemption)."""
        w = self.jobs.get(request.match_info["id"])
        now = time.monotonic()
        if w is None or self.phase(w, now) not in (*RUNNING, "Initializing"):
            return _json(409, {"error": "no running workload with that id"})
        if w.claim is None:
            w.claim = self._claim(w)
            self.sched.running[w.id] = w.claim
            w.claim.admitted_at, w.claim.pool = now, w.claim.pools[0]
        self.sched.running.setdefault(w.id, w.claim)
        self.sched.preempt(w.id, now, hold=self._s(40))  # out for a while, as if the GPUs were taken
        self.revision += 1
        return _json(200, {"phase": self.phase(w, now)})

    # -- node pools and projects (capacity and quota) -------------------------------------
    def _pool_record(self, name: str) -> dict[str, Any]:
        """A node pool as GET /api/v1/node-pools returns it."""
        nodes = [f"{name}-node-{i}" for i in range(max(1, math.ceil(self.sched.capacity.get(name, 8) / 8)))]
        at = _iso(self.started)
        return {"id": self.pool_ids[name], "name": name, "labelKey": "run.ai/node-pool", "labelValue": name,
                "clusterId": self.cluster_id, "tenantId": 1001, "clusterName": "sim-cluster", "createdBy": "sim",
                "createdAt": at, "updatedBy": "sim", "updatedAt": at, "isDefault": name == "default",
                "phase": "Ready", "phaseMessage": "", "status": {"nodes": nodes, "conditions": []}}

    async def node_pools(self, request: web.Request) -> web.Response:
        if (denied := await self._authed(request)) is not None:
            return denied
        return _json(200, {"nodepools": [self._pool_record(n) for n in self.pool_ids]})

    async def node_pool(self, request: web.Request) -> web.Response:
        if (denied := await self._authed(request)) is not None:
            return denied
        name = next((n for n, i in self.pool_ids.items() if i == request.match_info["pool_id"]), None)
        if name is None:
            return _json(404, error(404, f"node pool {request.match_info['pool_id']} not found"))
        return _json(200, self._pool_record(name))

    async def node_pool_metrics(self, request: web.Request) -> web.Response:
        """GET /api/v1/clusters/{cluster}/nodepools/{name}/metrics: TOTAL_GPU, ALLOCATED_GPU, UNALLOCATED_GPU,
        GPU_QUOTA and WORKLOADS_COUNT as the pool stands now (an unlimited pool has no GPU count)."""
        if (denied := await self._authed(request)) is not None:
            return denied
        name = request.match_info["name"]
        if name not in self.pool_ids:
            return _json(404, error(404, f"node pool {name} not found"))
        kinds = _csv(request, "metricType")
        if not kinds or not request.query.get("start") or not request.query.get("end"):
            return _json(400, error(400, "metricType, start and end are required"))
        now = time.monotonic()
        self.sched.advance(now)
        used = self.sched.used(name)
        total = self.sched.capacity.get(name)
        values = {"ALLOCATED_GPU": used, "WORKLOADS_COUNT": float(sum(
            1 for c in self.sched.running.values() if c.pool == name) + len(self.sched.queued(name))),
            "GPU_QUOTA": float(sum(self.sched.deserved.values()))}
        if total is not None:
            values.update(TOTAL_GPU=total, UNALLOCATED_GPU=max(0.0, total - used))
        stamp = _iso(time.time())
        out = []
        for k in kinds:
            if k not in values and k not in ("TOTAL_GPU", "UNALLOCATED_GPU"):
                return _json(400, error(400, f"metricType {k} is not served by this simulator"))
            out.append({"type": k, "values": [{"value": f"{values[k]:g}", "timestamp": stamp}] if k in values else []})
        return _json(200, {"measurements": out})

    def _project_record(self, pid: str) -> dict[str, Any]:
        """A project as GET /api/v1/org-unit/projects returns it: deserved GPUs per node pool and use."""
        at = _iso(self.started)
        deserved = self.sched.deserved.get(pid)
        resources: list[dict[str, Any]] = []
        statuses: list[dict[str, Any]] = []
        for name, nid in self.pool_ids.items():
            resources.append({"nodePool": {"id": nid, "name": name},
                              "gpu": {"deserved": deserved if deserved is not None else -1, "limit":
                                      self.sched.limit.get(pid), "overQuotaWeight": 2}})
            held = [c for c in self.sched.running.values() if c.pool == name and c.project == pid]
            asked = [c for c in self.sched.queued(name) if c.project == pid]
            statuses.append({"nodePoolName": name, "nodePoolId": nid,
                             "allocated": {"gpu": sum(c.gpus for c in held)},
                             "allocatedNonPreemptible": {"gpu": sum(c.gpus for c in held if not c.preemptible)},
                             "requested": {"gpu": sum(c.gpus for c in held + asked)}})
        total = {k: {"gpu": sum(st[k]["gpu"] for st in statuses)}
                 for k in ("allocated", "allocatedNonPreemptible", "requested")}
        return {"id": pid, "name": f"project-{pid}", "clusterId": self.cluster_id, "parentId": "1",
                "createdAt": at, "updatedAt": at, "description": "", "enforceRunaiScheduler": True,
                "totalResources": {"gpuQuota": deserved * len(self.pool_ids) if deserved is not None else None},
                "effective": {"defaultNodePools": list(self.pool_ids)}, "resources": resources,
                "status": {"namespace": f"runai-project-{pid}", "phase": "Ready", "phaseMessage": "Project is ready",
                           "nodePoolQuotaStatuses": statuses, "quotaStatus": total}}

    def projects_known(self) -> list[str]:
        """Projects with a quota or with workloads."""
        return sorted({*self.sched.deserved, *(w.project_id for w in self.order)}, key=lambda p: (len(p), p))

    async def projects(self, request: web.Request) -> web.Response:
        if (denied := await self._authed(request)) is not None:
            return denied
        self.sched.advance(time.monotonic())
        return _json(200, {"projects": [self._project_record(p) for p in self.projects_known()]})

    async def project(self, request: web.Request) -> web.Response:
        if (denied := await self._authed(request)) is not None:
            return denied
        pid = request.match_info["project_id"]
        if pid not in self.projects_known():
            return _json(404, error(404, f"project {pid} not found"))
        self.sched.advance(time.monotonic())
        return _json(200, self._project_record(pid))

    # -- listing -------------------------------------------------------------------------
    def _value(self, w: Workload, key: str, now: float, phase: str | None = None) -> Any:
        # The common keys straight from the workload: building each record to filter thousands of
        # jobs made every list page cost the simulator ~50 ms of the CPU the gateway under test shares.
        if key == "phase":
            return self.phase(w, now) if phase is None else phase
        if key in _PLAIN_KEYS:
            return getattr(w, _PLAIN_KEYS[key])
        if key == "createdAt":
            return _iso(w.created_at)
        if key == "nodepool":  # (documented, and not a field of the record: the pool it runs in, or asks for)
            rec = self.workload_record(w, now)
            return (rec["currentNodePools"] or rec["requestedNodePools"] or [""])[0]
        return self.workload_record(w, now).get(key)

    def _filters(self, raw: list[str]) -> list[tuple[str, str, str]]:
        out = []
        for chunk in raw:
            for part in filter(None, (p.strip() for p in chunk.split(","))):
                m = FILTER.match(part)
                if not m:
                    raise ValueError(f"invalid filterBy expression {part!r}")
                if m.group(1) not in FILTER_FIELDS:
                    raise ValueError(f"filterBy cannot filter by {m.group(1)!r}")
                out.append((m.group(1), m.group(2), m.group(3)))
        return out

    @staticmethod
    def _match(value: Any, op: str, want: str) -> bool:
        v = "" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
        if op == "==":
            return v == want
        if op == "!=":
            return v != want
        if op in ("<=", ">="):
            try:
                a, b = float(v), float(want)
                return a <= b if op == "<=" else a >= b
            except ValueError:
                return v <= want if op == "<=" else v >= want
        if op == "=@":
            return want.lower() in v.lower()
        if op == "!@":
            return want.lower() not in v.lower()
        if op == "=^":
            return v.startswith(want)
        return v.endswith(want)

    def _select(self, request: web.Request, need: int | None = None) -> list[Workload]:
        """The workloads a list query matches, in its order; with `need`, a creation-ordered result may
        stop once it has that many."""
        q = request.query
        filters = self._filters(q.getall("filterBy", []))
        deleted = q.get("deleted", "false").lower() == "true"
        search = (q.get("search") or "").lower()
        now = time.monotonic()
        # createdAt bounds are compared as numbers: formatting every job's timestamp made a list of
        # thousands of jobs slow enough to hold up the simulator's other requests.
        since = [_epoch(v) for k, op, v in filters if k == "createdAt" and op == ">="]
        # phaseUpdatedAt bounds too (a delta sync's question every second): compared as numbers.
        changed = [(op, _epoch(v)) for k, op, v in filters if k == "phaseUpdatedAt" and op in (">=", "<=")]
        rest = [(k, op, v) for k, op, v in filters if not (k == "createdAt" and op == ">=")
                and not (k == "phaseUpdatedAt" and op in (">=", "<="))]
        floor = max(since) if since else None
        pool = self.order
        lows = [v for op, v in changed if op == ">="]
        if lows:  # only the workloads whose phase changed since then (each is checked below all the same)
            self.sched.advance(now)
            lo = max(lows) - (time.time() - time.monotonic()) - 0.05  # on the monotonic clock, a margin early
            pool = sorted(self.changes.since(lo, now), key=lambda w: self.rank[w.id])
        sort_by = q.get("sortBy")
        if sort_by is not None and sort_by not in SORT_FIELDS:
            raise ValueError(f"sortBy cannot sort by {sort_by!r}")
        desc = _sort_desc(request, "asc")
        if sort_by not in (None, "createdAt") or desc:
            need = None
        out: list[Workload] = []
        for w in pool:
            if need is not None and len(out) >= need:
                break
            if floor is not None and w.created_at < floor:
                continue
            phase = self.phase(w, now)
            if deleted != (w.deleted_at is not None) or (not deleted and phase == GONE):
                continue
            if search and search not in w.name.lower():
                continue
            if changed:
                at = wall(w.timeline.since(now))
                if not all(at >= v if op == ">=" else at <= v for op, v in changed):
                    continue
            if all(self._match(self._value(w, k, now, phase), op, v) for k, op, v in rest):
                out.append(w)
        if sort_by == "createdAt":  # self.order is creation order already
            if desc:
                out.reverse()
        elif sort_by == "phaseUpdatedAt":
            out.sort(key=lambda w: w.timeline.since(now), reverse=desc)
        elif sort_by:
            out.sort(key=lambda w: str(self._value(w, sort_by, now) or ""), reverse=desc)
        elif desc:
            out.reverse()
        return out

    def _int(self, request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
        raw = request.query.get(name)
        if raw is None:
            return default
        try:
            v = int(raw)
        except ValueError as err:
            raise ValueError(f"{name} must be an integer") from err
        if not lo <= v <= hi:
            raise ValueError(f"{name} must be between {lo} and {hi}")
        return v

    async def list_workloads(self, request: web.Request) -> web.Response:
        if (denied := await self._authed(request)) is not None:
            return denied
        # A list answer stands until the workloads change or the next scheduled phase change: building
        # thousands of records for every page of every sync cycle took the CPU the gateway under test needs.
        now = time.monotonic()
        hit = self.pages.get(request.query_string)
        if hit is not None and hit[0] == self.revision and now < hit[1]:
            return web.Response(body=hit[2], content_type="application/json", charset="utf-8")
        try:
            offset = self._int(request, "offset", 0, 0, 10**9)
            limit = self._int(request, "limit", 50, 1, 500)
            rows = self._select(request, need=offset + limit + 1)  # one past the page tells whether there is a next
        except ValueError as err:
            return _bad_query(err)
        page = rows[offset: offset + limit]
        body: dict[str, Any] = {"workloads": [self.workload_record(w, now) for w in page]}
        if offset + limit < len(rows):
            body["next"] = offset + limit
        raw = json.dumps(body).encode()
        if len(self.pages) >= 256:
            self.pages.clear()
        self.pages[request.query_string] = (self.revision, self._settled_until(now), raw)
        return web.Response(body=raw, content_type="application/json", charset="utf-8")

    def _settled_until(self, now: float) -> float:
        """When the next scheduled phase change of any workload is due."""
        due = min((c.hold_until for c in self.sched.waiting.values() if c.hold_until > now), default=math.inf)
        return min(due, self.changes.next_due(now))

    async def count(self, request: web.Request) -> web.Response:
        if (denied := await self._authed(request)) is not None:
            return denied
        try:
            rows = self._select(request)
        except ValueError as err:
            return _bad_query(err)
        return _json(200, {"count": len(rows)})

    async def get_workload(self, request: web.Request) -> web.Response:
        w = await self._target(request, None)
        if isinstance(w, web.Response):
            return w
        return _json(200, self.workload_record(w, time.monotonic()))

    def _event_records(self, w: Workload) -> list[dict[str, Any]]:
        """The workload's events (one per phase reached), oldest first."""
        now = time.monotonic()
        hist = [(t, p, f"Workload phase changed to {p}") for t, p in w.timeline.history(now) if p != GONE]
        # Beside the phases, what the scheduler did (a preemption), in time order.
        # (at the same moment, the scheduler's decision comes before the phase it causes)
        hist = sorted([(t, r, m) for t, r, m in w.events if t <= now] + hist, key=lambda e: e[0])
        return [{"createdAt": _iso(wall(t)), "id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{w.id}/{i}")),
                 "type": "Warning" if p in ("Failed", PREEMPTED) else "Normal", "clusterId": w.cluster_id,
                 "message": m, "reason": p, "source": "runai-scheduler",
                 "involvedObject": {"uid": w.id, "kind": w.type, "name": w.name,
                                    "namespace": f"runai-project-{w.project_id}"}}
                for i, (t, p, m) in enumerate(hist)]

    async def _paged(self, request: web.Request, key: str, items: list[dict[str, Any]]) -> web.Response:
        try:
            offset = self._int(request, "offset", 0, 0, 10**9)
            limit = self._int(request, "limit", 50, 1, 500)
        except ValueError as err:
            return _bad_query(err)
        body: dict[str, Any] = {key: items[offset: offset + limit]}
        if offset + limit < len(items):
            body["next"] = offset + limit
        return _json(200, body)

    async def events(self, request: web.Request) -> web.Response:
        """GET /api/v1/workloads/{id}/events: newest first unless sortOrder=asc (the spec's default)."""
        if (denied := await self._authed(request)) is not None:
            return denied
        w = self.jobs.get(request.match_info["id"])
        if w is None:
            return _json(404, error(404, f"workload {request.match_info['id']} not found"))
        try:
            desc = _sort_desc(request, "desc")
        except ValueError as err:
            return _bad_query(err)
        evs = self._event_records(w)
        if desc:
            evs.reverse()
        return await self._paged(request, "events", evs)

    async def history(self, request: web.Request) -> web.Response:
        """GET /api/v1/workloads/{id}/history: phase updates and events, oldest first."""
        if (denied := await self._authed(request)) is not None:
            return denied
        w = self.jobs.get(request.match_info["id"])
        if w is None:
            return _json(404, error(404, f"workload {request.match_info['id']} not found"))
        records: list[dict[str, Any]] = []
        for ev in self._event_records(w):
            phase = ev["reason"]
            if phase in PHASES:  # (a preemption is an event, not a phase)
                records.append({"meta": {"creationTimestamp": ev["createdAt"], "type": "PhaseUpdate"},
                                "spec": {"phaseUpdate": {"phase": phase, "phaseMessage": self._message(phase, w)}}})
            records.append({"meta": {"creationTimestamp": ev["createdAt"], "type": "Event"}, "spec": {"event": ev}})
        return await self._paged(request, "records", records)

    # -- metrics and telemetry --------------------------------------------------------------
    def _shape(self, w: Workload) -> dict[str, float]:
        """Pods, GPUs per pod and requests of a workload, for its metrics."""
        spec = w.body.get("spec") or {}
        compute = spec.get("compute") or {}
        pods = max(1, int(spec.get("numWorkers") or 1)) if w.type == "Distributed" else 1
        if compute.get("gpuRequestType") == "portion" or compute.get("gpuPortionRequest") is not None:
            gpus, portion = (1.0 if compute.get("gpuPortionRequest") else 0.0), float(compute.get("gpuPortionRequest")
                                                                                      or 0)
        else:
            gpus, portion = float(compute.get("gpuDevicesRequest") or 0), 1.0
        cpu = float(compute.get("cpuCoreRequest") or 1)
        mem = _bytes(compute.get("cpuMemoryRequest"), 8 * 2 ** 30)
        return {"pods": pods, "gpus": gpus, "portion": portion, "cpu": cpu,
                "cpu_limit": float(compute.get("cpuCoreLimit") or cpu), "mem": mem,
                "mem_limit": _bytes(compute.get("cpuMemoryLimit"), mem)}

    @staticmethod
    def env(w: Workload) -> dict[str, str]:
        """The workload's environment variables."""
        return {str(e.get("name")): str(e.get("value") or "") for e in
                (w.body.get("spec") or {}).get("environmentVariables") or [] if isinstance(e, dict)}

    def usage(self, w: Workload) -> Usage:
        """The deterministic usage model of a workload (SIM_GPU_UTIL pins its GPU utilization)."""
        return Usage.of(w.id, self.env(w))

    def measure(self, w: Workload, metric: str, samples: list[float], spans: list[tuple[float, float]]
                ) -> list[dict[str, Any]]:
        """One metric's measurements (per GPU for GPU metrics) at the sample times that fall in a run."""
        shape, use = self._shape(w), self.usage(w)
        devices = int(shape["gpus"] * shape["pods"])
        times = [t for t in samples if any(a <= t < b for a, b in spans)]

        def one(labels: dict[str, str] | None, value: Any) -> dict[str, Any]:
            return {"type": metric, "labels": labels,
                    "values": [{"value": str(value(t)), "timestamp": _iso(t)} for t in times]}

        per_gpu: dict[str, Callable[[int], Callable[[float], Any]]] = {
                   "GPU_UTILIZATION": lambda i: lambda t: use.gpu(t, i),
                   "GPU_MEMORY_USAGE_BYTES": lambda i: lambda t: int(use.gpu_memory(t, i) * GPU_MEMORY_BYTES
                                                                    * shape["portion"]),
                   "GPU_MEMORY_REQUEST_BYTES": lambda i: lambda t: int(GPU_MEMORY_BYTES * shape["portion"])}
        if metric in per_gpu:
            return [one({"gpu": str(i)}, per_gpu[metric](i)) for i in range(devices)]
        pods = shape["pods"]
        whole: dict[str, Callable[[float], Any]] = {"CPU_USAGE_CORES": lambda t: round(use.cpu(t) * shape["cpu"] * pods, 3),
                 "CPU_REQUEST_CORES": lambda t: shape["cpu"] * pods,
                 "CPU_LIMIT_CORES": lambda t: shape["cpu_limit"] * pods,
                 "CPU_MEMORY_USAGE_BYTES": lambda t: int(use.memory(t) * shape["mem"] * pods),
                 "CPU_MEMORY_REQUEST_BYTES": lambda t: int(shape["mem"] * pods),
                 "CPU_MEMORY_LIMIT_BYTES": lambda t: int(shape["mem_limit"] * pods),
                 "POD_COUNT": lambda t: int(pods), "RUNNING_POD_COUNT": lambda t: int(pods),
                 "GPU_ALLOCATION": lambda t: shape["gpus"] * shape["portion"] * pods}
        if metric in whole:
            return [one(None, whole[metric])]
        return [{"type": metric, "labels": None, "values": []}]  # NIM / NVLink: not produced by a training

    async def inference_metrics(self, request: web.Request) -> web.Response:
        """GET /api/v1/workloads/inferences/{id}/metrics: THROUGHPUT (requests a second) and LATENCY (seconds)
        of the requests its URL served, at the sample times."""
        return await self.metrics(request, "inferences")

    def served_measure(self, w: Workload, metric: str, samples: list[float]) -> list[dict[str, Any]]:
        """An inference's THROUGHPUT or LATENCY at each sample: over the requests since the sample before."""
        values = []
        for i, t in enumerate(samples):
            since = samples[i - 1] if i else t - 60.0
            got = [d for at, d in w.served if since < at <= t]
            if metric == "THROUGHPUT":
                value = round(len(got) / max(t - since, 1e-9), 4)
            else:
                value = round(sum(got) / len(got), 6) if got else 0.0
            values.append({"value": str(value), "timestamp": _iso(t)})
        return [{"type": metric, "labels": None, "values": values}]

    async def metrics(self, request: web.Request, kind: str | None = None) -> web.Response:
        """GET /api/v1/workloads/{id}/metrics: samples between start and end while the workload ran."""
        w = await self._target(request, kind)
        if isinstance(w, web.Response):
            return w
        types = _csv(request, "metricType")
        known = self.checker.enum("InferenceWorkloadMetricType" if kind else "WorkloadMetricType")
        bad = [t for t in types if t not in known]
        try:
            if not types:
                raise ValueError("metricType is required")
            if bad:
                raise ValueError(f"unknown metricType {bad[0]!r}")
            for name in ("start", "end"):
                if not request.query.get(name):
                    raise ValueError(f"{name} is required")
            start, end = _epoch(request.query["start"]), _epoch(request.query["end"])
            if end < start:
                raise ValueError("end is before start")
            n = self._int(request, "numberOfSamples", 20, 0, 1000) or 20
        except ValueError as err:
            return _json(400, error(400, f"Bad request - {err}"))
        samples = [end] if n == 1 else [start + (end - start) * i / (n - 1) for i in range(n)]
        now = time.monotonic()
        if kind == "inferences":
            return _json(200, {"measurements": [m for t in types for m in self.served_measure(w, t, samples)]})
        spans = [(wall(a), wall(b)) for a, b in running_spans(w.timeline.history(now), RUNNING.__contains__, now)]
        return _json(200, {"measurements": [m for t in types for m in self.measure(w, t, samples, spans)]})

    def _group(self, w: Workload, key: str, now: float) -> dict[str, str]:
        spec = w.body.get("spec") or {}
        value, name = {
            "ClusterId": (w.cluster_id, w.cluster_id), "DepartmentId": ("1", "default"),
            "ProjectId": (w.project_id, f"project-{w.project_id}"), "Type": (w.type, w.type),
            "CurrentNodepools": ((spec.get("nodePools") or ["default"])[0],) * 2,
            "Phase": (self.phase(w, now),) * 2, "Category": (("Deploy",) if w.type == "Inference" else ("Train",)) * 2}[key]
        return {"key": key, "value": value, "name": name}

    async def telemetry(self, request: web.Request) -> web.Response:
        """GET /api/v1/workloads/telemetry: counts, GPU allocation or pending-time buckets, grouped."""
        if (denied := await self._authed(request)) is not None:
            return denied
        q = request.query
        kind = q.get("telemetryType")
        group_by = _csv(request, "groupBy")
        phases = _csv(request, "filterByPhases")
        cluster = q.get("clusterId")
        problems = [msg for bad, msg in (
            (kind is None, "telemetryType is required"),
            (kind is not None and kind not in self.checker.enum("WorkloadTelemetryType"),
             f"unknown telemetryType {kind!r}"),
            (len(group_by) > 2, "groupBy takes at most 2 fields"),
            (any(g not in TELEMETRY_GROUPS for g in group_by), f"groupBy must be among {', '.join(TELEMETRY_GROUPS)}"),
            (any(p not in PHASES for p in phases), "filterByPhases holds an unknown phase"),
            (cluster is not None and not UUID.match(cluster), "clusterId must be a UUID")) if bad]
        if problems:
            return _json(400, error(400, f"Bad request - {problems[0]}"))
        now = time.monotonic()
        rows = [w for w in self.order if w.deleted_at is None and self.visible(w, now)
                and (not phases or self.phase(w, now) in phases) and (cluster is None or w.cluster_id == cluster)
                and (q.get("nodepoolName") is None
                     or q["nodepoolName"] in ((w.body.get("spec") or {}).get("nodePools") or ["default"]))
                and q.get("departmentId") in (None, "1")]
        if kind == "PENDING_TIME_DISTRIBUTION":
            group_by = [*group_by, "PendingTime"]
        totals: dict[tuple[tuple[str, str, str], ...], float] = {}
        for w in rows:
            groups = [self._group(w, g, now) for g in group_by if g != "PendingTime"]
            if kind == "PENDING_TIME_DISTRIBUTION":
                if self.phase(w, now) != "Pending":
                    continue
                waited = now - w.timeline.since(now)
                label = next(lbl for limit, lbl in PENDING_BUCKETS if waited < limit)
                groups.append({"key": "PendingTime", "value": label, "name": label})
                amount = 1.0
            elif kind == "GPU_ALLOCATION":
                if self.phase(w, now) not in RUNNING:
                    continue
                shape = self._shape(w)
                amount = shape["gpus"] * shape["portion"] * shape["pods"]
            else:
                amount = 1.0
            k = tuple((g["key"], g["value"], g["name"]) for g in groups)
            totals[k] = totals.get(k, 0.0) + amount
        values: list[dict[str, Any]] = []
        for k, v in sorted(totals.items()):
            item: dict[str, Any] = {"value": f"{v:g}"}
            if k:
                item["groups"] = [{"key": a, "value": b, "name": c} for a, b, c in k]
            values.append(item)
        if not group_by and not values:
            values = [{"value": "0"}]
        return _json(200, {"type": kind, "timestamp": _iso(time.time()), "values": values})

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/api/v1/token", self.token)
        r.add_get("/api/v1/workloads", self.list_workloads)
        r.add_get("/api/v1/workloads/count", self.count)
        r.add_get("/api/v1/workloads/telemetry", self.telemetry)
        for kind in ("trainings", "distributed", "inferences"):
            base = f"/api/v1/workloads/{kind}"
            r.add_post(base, self.create)
            r.add_get(base + "/{id}", self.get_training)
            r.add_delete(base + "/{id}", self.delete)
            if kind == "inferences":
                r.add_patch(base + "/{id}", self.update_inference)
            else:
                r.add_post(base + "/{id}/suspend", self.suspend)
                r.add_post(base + "/{id}/resume", self.resume)
        r.add_route("*", "/_serve/{id}/{tail:.*}", self.serve)
        r.add_post("/_sim/bulk", self.sim_bulk)
        r.add_post("/_sim/finish", self.sim_finish)
        r.add_post("/_sim/preempt/{id}", self.sim_preempt)
        r.add_get("/api/v1/node-pools", self.node_pools)
        r.add_get("/api/v1/node-pools/{pool_id}", self.node_pool)
        r.add_get("/api/v1/clusters/{cluster}/nodepools/{name}/metrics", self.node_pool_metrics)
        r.add_get("/api/v1/org-unit/projects", self.projects)
        r.add_get("/api/v1/org-unit/projects/{project_id}", self.project)
        r.add_get("/api/v1/workloads/{id}", self.get_workload)
        r.add_get("/api/v1/workloads/{id}/events", self.events)
        r.add_get("/api/v1/workloads/{id}/history", self.history)
        r.add_get("/api/v1/workloads/{id}/metrics", self.metrics)
        r.add_get("/api/v1/workloads/inferences/{id}/metrics", self.inference_metrics)


SIM_KEY = web.AppKey("runai_sim", RunaiSimulator)


def create_simulator(credentials: list[tuple[str, str]] | None = None, faults: dict[str, float] | None = None,
                     seed: int | None = None, speed: float = 1.0, token_ttl: int = 3600,
                     state_file: str | None = None, gpus: dict[str, float] | None = None,
                     quota: dict[str, float] | None = None) -> web.Application:
    """The Run:ai simulator as an aiohttp app (its workloads kept in `state_file` when given); `gpus` gives
    node pools their GPU counts (unlimited without), `quota` each project's deserved GPUs per node pool."""
    state = FaultState(seed=seed)
    state.set(faults or {})
    stats: Counter[str] = Counter()
    sim = RunaiSimulator(credentials, speed=speed, token_ttl=token_ttl, gpus=gpus, quota=quota)

    def changed() -> None:
        sim.revision += 1

    app = web.Application(middlewares=sim_middlewares(state, stats, error, changed),
                          client_max_size=8 * 1024 * 1024)
    app[SIM_KEY] = sim
    if state_file:
        persist(app, sim, state_file)
    sim.routes(app)
    sim_admin_routes(app, state, stats)
    return app
