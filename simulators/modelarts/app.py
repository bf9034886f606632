"""A Huawei ModelArts (v2 training jobs) simulator that huaweicloudsdkmodelarts accepts unchanged.

AK/SK signature verification (and X-Auth-Token), create/show/search/delete/terminate, log
preview and events, with ModelArts' error codes and a Creating → Pending → Running → end
lifecycle on a clock.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from mappings import flavors
from simulators.kit import (
    COMMITTED,
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
from simulators.modelarts.auth import check_signature
from simulators.scheduler import Claim, Scheduler

DEMO_CREDENTIALS = [("TJGDEMOAK", "TJGDEMOSK")]
DEMO_IAM_TOKENS = ("tjg-demo-iam-token",)
JOB_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
STOPPABLE = ("Creating", "Pending", "Running")
TERMINAL = ("Completed", "Failed", "Terminated", "Abnormal")
WAIT = [(0.0, ("Creating", "Creating")), (0.3, ("Pending", "Queuing"))]
# How a run ends, as ModelArts shows it: (phase, secondary phase, task exit code, task message, the run's
# end_reason). ModelArts documents no list of end reasons; these are the simulator's own words.
ENDS: dict[str, tuple[str, str, int | None, str, str]] = {
    "completed": ("Completed", "Completed", 0, "", "Completed"),
    "failed": ("Failed", "Failed", -1, "process exited with code {code}", "ProcessExited"),
    "abnormal": ("Abnormal", "Failed", 137, "process exited abnormally", "Abnormal"),
    "preempted": ("Failed", "Failed", 137, "preempted: the node was reclaimed", "Preempted"),
    "image-pull": ("Failed", "Failed", None, "failed to pull image {image}: manifest unknown", "ImagePullFailed"),
    "oom": ("Failed", "Failed", 137, "out of memory: the process was OOM-killed (exit code 137)", "OOMKilled"),
    "node-failure": ("Abnormal", "Failed", None, "the node running the task failed", "NodeFault"),
    "runtime-limit": ("Terminated", "Terminated", 143, "stopped: maximum running duration reached",
                      "MaxRunningTimeReached"),
    "terminated": ("Terminated", "Terminated", 143, "terminated", "StoppedByUser"),
}
# ModelArts' documented job events (console wording) for what the simulator does.
EVENT_QUEUING = "The training job is queuing and awaiting resource allocation."
EVENT_PREEMPTED = "The training job is preempted."
EVENT_RUNTIME = "The training job has been stopped. (Maximum running duration: {hours} hours)"


def environments(raw: Any) -> dict[str, str]:
    """`algorithm.environments` as a dict: a create body sends one object, a job read back a list of them."""
    items = raw if isinstance(raw, list) else [raw]
    return {str(k): str(v) for item in items if isinstance(item, dict) for k, v in item.items()}


def error(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """ModelArts' error body."""
    codes = {401: "APIGW.0301", 403: "ModelArts.2784", 429: "APIGW.0308", 503: "ModelArts.0003"}
    return {"error_code": code or codes.get(status, "ModelArts.0001"), "error_msg": message,
            "error_solution": "See the ModelArts error code reference."}


def _reply(status: int, body: Any) -> web.Response:
    return web.json_response(body, status=status, headers={"X-Request-Id": uuid.uuid4().hex})


def _fail(status: int, code: str, message: str) -> web.Response:
    return _reply(status, error(status, message, code))


@dataclass
class TrainingJob:
    """One simulated training job."""

    id: str
    project_id: str
    name: str
    workspace_id: str
    body: dict[str, Any]
    create_ms: int
    timeline: Timeline
    outcome: str
    run_seconds: float
    node_count: int
    flavor_id: str
    deleted: bool = False
    claim: Claim | None = None  # its demand on the scheduler (none for bulk-made jobs)
    user: str = "bulk"  # who created it (the signing credentials' user)


@dataclass
class Service:
    """One simulated real-time service (v2 services API)."""

    id: str
    project_id: str
    name: str
    workspace_id: str
    body: dict[str, Any]
    create_ms: int
    timeline: Timeline
    url: str
    user: str = "tjg-demo"
    deleted_at: float | None = None  # monotonic: DELETING for a while, then gone

    @property
    def group(self) -> dict[str, Any]:
        return ((self.body.get("group_configs") or [{}])[0]) or {}

    @property
    def count(self) -> int:
        return max(0, int(self.group.get("count") or 1))


UNIT_KEYS = ("id", "name", "role", "custom_spec", "flavor", "image", "count", "cmd", "envs", "readiness_health",
             "port", "recovery")
ITEM_KEYS = ("id", "name", "status", "workspace_id", "type", "deploy_type", "task_type", "tags")
# The SDK (ListInferServicesRequest.name): 1-128 letters, Chinese characters, digits, '-' and '_'.
SERVICE_NAME = re.compile(r"^[A-Za-z0-9_\u4e00-\u9fa5-]{1,128}$")
SERVICE_SORT_KEYS = ("create_at", "update_at")
DELETING_SECONDS = 2.0  # (simulated, scaled by the clock speed) a deleted service shows DELETING this long
SERVICE_NOT_FOUND = "ModelArts.3502"


class ModelArtsSimulator:
    """State and handlers of one simulated ModelArts region."""

    def __init__(self, credentials: list[tuple[str, str]] | None = None, speed: float = 1.0,
                 iam_tokens: tuple[str, ...] = DEMO_IAM_TOKENS, sample_seconds: float = 60.0,
                 gpus: dict[str, float] | None = None, search_offset: str = "pages") -> None:
        self.secrets = dict(credentials or DEMO_CREDENTIALS)
        # JobSearches.offset is the page number (the SDK: "the page of jobs to query, from 0", limit 1-50 per page);
        # "items" answers as a reading of another Huawei reference would, to test that the gateway notices.
        self.search_offset = search_offset
        self.sample_seconds = sample_seconds  # ModelArts averages a task's metrics once a minute
        self.iam_tokens = set(iam_tokens)
        self.speed = speed
        self.jobs: dict[str, TrainingJob] = {}
        self.order: list[TrainingJob] = []
        self.names: dict[tuple[str, str], str] = {}
        self.flavor_ids = {f.id: f for f in flavors()}
        self.services: dict[str, Service] = {}
        self.revision = 0  # bumped by every request that changes a job (see simkit.persist)
        unknown = sorted(set(gpus or {}) - set(self.flavor_ids))
        if unknown:
            raise ValueError(f"--gpus: unknown flavors {', '.join(unknown)} (see mappings/flavors.yaml)")
        # GPUs of each listed flavor in the public pool; a flavor not listed is never short.
        self.sched = Scheduler(capacity=dict(gpus or {}), open_pools=True, on_start=self._admitted,
                               on_preempt=self._preempted)

    def export_state(self) -> dict[str, Any]:
        """The jobs, services and the scheduler's queue, for simkit.StateFile."""
        return {"order": self.order, "services": list(self.services.values()), "sched": self.sched.export()}

    def restore_state(self, state: dict[str, Any], shift: float) -> None:
        """Take saved jobs up again on this process's clock."""
        for j in state["order"]:
            j.timeline.shift(shift)
            self.jobs[j.id] = j
            self.order.append(j)
            if not j.deleted:
                self.names[(j.project_id, j.name)] = j.id
        for svc in state.get("services", []):
            svc.timeline.shift(shift)
            if svc.deleted_at is not None:
                svc.deleted_at += shift
            self.services[svc.id] = svc
        if state.get("sched"):
            self.sched.restore(state["sched"], shift)

    def _s(self, seconds: float) -> float:
        return seconds / self.speed

    @staticmethod
    def caller(request: web.Request) -> str:
        """The IAM user behind a request: per access key (signed), or the token's user."""
        if request.headers.get("X-Auth-Token") is not None:
            return "iam-token-user"
        m = re.search(r"Access=([^,\s]+)", request.headers.get("Authorization", ""))
        return f"iam-{m.group(1).lower()[:16]}" if m else "unknown"

    async def _auth(self, request: web.Request) -> web.Response | None:
        token = request.headers.get("X-Auth-Token")
        if token is not None:
            if token in self.iam_tokens:
                return None
            return _fail(401, "APIGW.0301", "Incorrect IAM authentication information: token invalid")
        body = await request.read()
        reason = check_signature(request.method, request.rel_url.raw_path, list(request.rel_url.query.items()),
                        request.headers, body, self.secrets)
        if reason:
            return _fail(401, "APIGW.0301", f"Incorrect IAM authentication information: {reason}")
        return None

    # -- lifecycle ---------------------------------------------------------------------
    def state(self, j: TrainingJob, now: float | None = None) -> tuple[str, str]:
        """(phase, secondary_phase) now (after the scheduler has caught up with `now`)."""
        t = time.monotonic() if now is None else now
        self.sched.advance(t)
        st: tuple[str, str] = j.timeline.current(t)
        return st

    def _limit_seconds(self, j: TrainingJob) -> float | None:
        """spec.auto_stop in seconds of the job's run (scaled by the clock speed where it is used), or None."""
        stop = (j.body.get("spec") or {}).get("auto_stop") or {}
        try:
            hours = float(stop.get("duration") or "")
        except (TypeError, ValueError):
            return None
        return hours * 3600 if stop.get("time_unit", "HOURS") == "HOURS" else None

    def _end_steps(self, j: TrainingJob, offset: float) -> list[tuple[float, tuple[str, str]]]:
        limit = self._limit_seconds(j)
        if limit is not None and (j.outcome == "hang" or j.run_seconds > limit):
            j.outcome = "runtime-limit"  # auto_stop ends it first
        end = ENDS.get(j.outcome)
        if end is None:
            return []
        if j.outcome == "image-pull":  # fails while the image is being pulled, before it runs
            return [(offset - self._s(0.3) + self._s(1.0), end[:2])]
        seconds = limit if j.outcome == "runtime-limit" and limit is not None and j.run_seconds > limit \
            else j.run_seconds
        return [(offset + self._s(seconds), end[:2])]

    # -- scheduling ----------------------------------------------------------------------
    def _claim(self, j: TrainingJob) -> Claim:
        """The GPUs the job needs in its flavor (a flavor's GPUs per node times its nodes)."""
        f = self.flavor_ids[j.flavor_id]
        policy = (j.body.get("spec") or {}).get("schedule_policy") or {}
        return Claim(key=j.id, pools=[j.flavor_id], gpus=float(f.gpus * j.node_count), project=j.project_id,
                     priority=int(policy.get("priority") or 1), preemptible=bool(policy.get("preemptible", True)))

    def _admitted(self, c: Claim, t: float) -> float | None:
        """Resources were allocated at `t`: the job runs; returns when it stops holding them."""
        j = self.jobs[c.key]
        # Never before it was seen pending: the documented order is Creating, Pending (Queuing), Running.
        base = max(t, j.timeline.at[0] + self._s(WAIT[-1][0]))
        steps: list[tuple[float, tuple[str, str]]] = [] if j.outcome == "image-pull" else \
            [(self._s(0.3), ("Running", "Running"))]
        end = self._end_steps(j, self._s(0.3))
        j.timeline.cut(base, steps + end)
        return base + end[-1][0] if end else None

    def _preempted(self, c: Claim, t: float, by: Claim | None) -> bool:
        """The job's nodes were taken back at `t`: it fails as preempted (ModelArts does not requeue it)."""
        j = self.jobs[c.key]
        j.outcome = "preempted"
        j.timeline.cut(t, [(0.0, ENDS["preempted"][:2])])
        self.revision += 1
        return False

    def queue_position(self, j: TrainingJob) -> int | None:
        """1 for the next job to get resources of its flavor; None when it is not queuing."""
        if j.claim is None or j.claim.key not in self.sched.waiting:
            return None
        return next((i + 1 for i, c in enumerate(self.sched.queued(j.flavor_id)) if c.key == j.id), None)

    def record(self, j: TrainingJob, now: float) -> dict[str, Any]:
        """The job as show/list return it."""
        phase, secondary = self.state(j, now)
        hist = j.timeline.history(now)
        started = next((t for t, p in hist if p[0] == "Running"), None)
        ended = next((t for t, p in hist if p[0] in TERMINAL), None)
        duration = 0 if started is None else int(((ended or now) - started) * 1000)
        tasks = [f"worker-{i}" for i in range(j.node_count)]
        env = environments((j.body.get("algorithm") or {}).get("environments") or {})
        end = ENDS.get(j.outcome) if phase in TERMINAL else None
        exit_code = None if end is None else (exit_code_of(env) if end[2] == -1 else end[2])
        image = ((j.body.get("algorithm") or {}).get("engine") or {}).get("image_url") or ""
        task_message = "" if end is None else end[3].format(code=exit_code, image=image)
        runs = running_spans(hist, lambda p: p[0] == "Running", now)
        records: list[dict[str, Any]] = [{"start_at": int(wall(a) * 1000), "end_at": int(wall(b) * 1000)}
                                         for a, b in runs]
        if end is not None:
            if not records:  # ended before it ran (an image that cannot be pulled)
                records.append({"start_at": int(wall(ended or now) * 1000), "end_at": int(wall(ended or now) * 1000)})
            records[-1]["end_reason"] = end[4]
        elif records:
            del records[-1]["end_at"]  # still running
        meta = dict(j.body.get("metadata") or {})
        meta.update(id=j.id, name=j.name, workspace_id=j.workspace_id, create_time=j.create_ms,
                    user_name=j.user)
        spec = dict(j.body.get("spec") or {})
        f = self.flavor_ids.get(j.flavor_id)
        resource = dict(spec.get("resource") or {})
        if f is not None:
            resource.update(policy="regular", flavor_name=f.id, flavor_detail={
                "flavor_type": "GPU" if f.gpus else "CPU",
                "flavor_info": {"cpu": {"arch": "x86", "core_num": int(f.cpu)},
                                "gpu": {"unit_num": f.gpus, "product_name": f.gpu_type or ""},
                                "memory": {"size": int(f.memory_gi), "unit": "GB"}}})
        spec["resource"] = resource
        return {
            "kind": j.body.get("kind", "job"), "metadata": meta,
            "status": {"phase": phase, "secondary_phase": secondary, "duration": duration,
                       "start_time": int(wall(started) * 1000) if started else 0, "node_count_metrics": [[int(wall(started) * 1000), j.node_count]] if started else [],
                       "tasks": tasks,
                       # A task has an exit code only once it has ended (and only if its process ran).
                       "task_statuses": [{"task": t, "message": task_message} if exit_code is None else
                                         {"task": t, "exit_code": exit_code, "message": task_message}
                                         for t in tasks],
                       "running_records": records},
            "algorithm": self._algorithm(j), "spec": spec,
        }

    @staticmethod
    def _algorithm(j: TrainingJob) -> dict[str, Any]:
        """The algorithm as a job read back carries it: environments as a list of objects."""
        algo = dict(j.body.get("algorithm") or {})
        if "environments" in algo:
            algo["environments"] = [{k: v} for k, v in environments(algo["environments"]).items()]
        return algo

    def _get(self, request: web.Request) -> TrainingJob | None:
        j = self.jobs.get(request.match_info["job_id"])
        if j is None or j.deleted or j.project_id != request.match_info["project_id"]:
            return None
        return j

    async def _target(self, request: web.Request) -> TrainingJob | web.Response:
        """The authenticated request's job, or the 401 / 400 ModelArts.2775 to answer."""
        if (denied := await self._auth(request)) is not None:
            return denied
        j = self._get(request)
        if j is None:
            return _fail(400, "ModelArts.2775", f"Training job {request.match_info['job_id']} not found.")
        return j

    # -- handlers ----------------------------------------------------------------------
    @staticmethod
    async def _object(request: web.Request, code: str) -> dict[str, Any] | web.Response:
        """The request body as a JSON object, or the 400 (with this API's error code) to answer."""
        try:
            body = await request.json()
        except ValueError:
            return _fail(400, code, "Invalid request body: not JSON.")
        if not isinstance(body, dict):
            return _fail(400, code, "Invalid request body: expected an object.")
        return body

    async def create(self, request: web.Request) -> web.Response:
        if (denied := await self._auth(request)) is not None:
            return denied
        body = await self._object(request, "ModelArts.2601")
        if isinstance(body, web.Response):
            return body
        meta = body.get("metadata")
        if body.get("kind", "job") != "job" or not isinstance(meta, dict):
            return _fail(400, "ModelArts.2601", "Invalid parameter: kind must be job and metadata is required.")
        name = meta.get("name")
        if not isinstance(name, str) or not JOB_NAME.match(name):
            return _fail(400, "ModelArts.2601", "Invalid parameter metadata.name: 1-64 letters, digits, _ or -.")
        algo = body.get("algorithm") or {}
        if not isinstance(algo, dict) or not ((algo.get("engine") or {}).get("image_url") or algo.get("id")
                                               or (algo.get("engine") or {}).get("engine_id")):
            return _fail(400, "ModelArts.2601", "Invalid parameter algorithm: an image_url, engine or id is needed.")
        resource = (body.get("spec") or {}).get("resource") or {}
        flavor = resource.get("flavor_id")
        if flavor not in self.flavor_ids:
            return _fail(400, "ModelArts.2781", f"Flavor {flavor} not found.")
        node_count = resource.get("node_count", 1)
        if not isinstance(node_count, int) or node_count < 1:
            return _fail(400, "ModelArts.2601", "Invalid parameter spec.resource.node_count.")
        project = request.match_info["project_id"]
        if (project, name) in self.names:
            return _fail(400, "ModelArts.2751", f"Training job name {name} already exists.")
        env = {str(k): str(v) for k, v in (algo.get("environments") or {}).items()}
        outcome, run = run_outcome(env, str((algo.get("engine") or {}).get("image_url") or ""))
        now = time.monotonic()
        j = TrainingJob(id=str(uuid.uuid4()), project_id=project, name=name,
                        workspace_id=str(meta.get("workspace_id") or "0"), body=body, user=self.caller(request),
                        create_ms=int(time.time() * 1000),
                        timeline=Timeline(now, [(self._s(t), p) for t, p in WAIT]),
                        outcome=outcome, run_seconds=run, node_count=node_count, flavor_id=flavor)
        self.jobs[j.id] = j
        self.order.append(j)
        self.names[(project, name)] = j.id
        j.claim = self._claim(j)
        self.sched.submit(j.claim, now)
        request[COMMITTED] = True
        return _reply(201, self.record(j, now))

    def bulk_create(self, n: int, project: str, prefix: str = "bulk", outcome: str = "hang",
                    flavor: str = "modelarts.vm.cpu.2u") -> list[str]:
        """Add `n` jobs without HTTP (benchmark and scale-test set-up)."""
        now = time.monotonic()
        ids = []
        for i in range(n):
            name = f"{prefix}-{i}"
            body = {"kind": "job", "metadata": {"name": name}, "algorithm": {"engine": {"image_url": "bulk:1"}},
                    "spec": {"resource": {"flavor_id": flavor, "node_count": 1}}}
            j = TrainingJob(id=str(uuid.uuid4()), project_id=project, name=name, workspace_id="0", body=body,
                            create_ms=int(time.time() * 1000) + i,
                            timeline=Timeline(now, [(0, ("Creating", "Creating")),
                                                    (self._s(0.3), ("Pending", "Queuing")),
                                                    (self._s(0.6), ("Running", "Running"))]),
                            outcome=outcome, run_seconds=5.0, node_count=1, flavor_id=flavor)
            j.timeline.extend(now, self._end_steps(j, self._s(0.6)))
            self.jobs[j.id] = j
            self.order.append(j)
            self.names[(project, name)] = j.id
            ids.append(j.id)
        return ids

    async def sim_bulk(self, request: web.Request) -> web.Response:
        """POST /_sim/bulk {n, project, prefix}: add running jobs without the API (benchmark set-up)."""
        body = await request.json()
        ids = self.bulk_create(int(body["n"]), str(body.get("project", "")), prefix=str(body.get("prefix", "bulk")))
        return _reply(200, {"ids": ids})

    async def sim_finish(self, request: web.Request) -> web.Response:
        """POST /_sim/finish {ids, phase}: end running jobs now (Completed by default), as if their command
        exited; answers when it happened (epoch seconds), for a benchmark of how soon it is seen."""
        body = await request.json()
        end = {"Completed": ("Completed", "Completed"), "Failed": ("Failed", "Failed")}.get(
            str(body.get("phase", "Completed")))
        if end is None:
            return _reply(400, {"error": "phase must be Completed or Failed"})
        now = time.monotonic()
        done = []
        for jid in body.get("ids") or []:
            j = self.jobs.get(str(jid))
            if j is not None and self.state(j, now)[0] == "Running":
                j.timeline.cut(now, [(0, end)])
                self.sched.running.pop(j.id, None)
                done.append(j.id)
        self.revision += 1
        return _reply(200, {"at": wall(now), "ids": done})

    async def show(self, request: web.Request) -> web.Response:
        j = await self._target(request)
        if isinstance(j, web.Response):
            return j
        return _reply(200, self.record(j, time.monotonic()))

    async def delete(self, request: web.Request) -> web.Response:
        j = await self._target(request)
        if isinstance(j, web.Response):
            return j
        j.deleted = True
        self.names.pop((j.project_id, j.name), None)
        self.sched.stop(j.id, time.monotonic())
        request[COMMITTED] = True
        return _reply(202, {})

    async def action(self, request: web.Request) -> web.Response:
        j = await self._target(request)
        if isinstance(j, web.Response):
            return j
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("action_type") != "terminate":
            return _fail(400, "ModelArts.2601", "Invalid parameter action_type: only terminate is supported.")
        now = time.monotonic()
        phase, _ = self.state(j, now)
        if phase not in STOPPABLE:
            return _fail(409, "ModelArts.2796", f"Training job in phase {phase} cannot be terminated.")
        j.timeline.cut(now, [(0, ("Terminating", "Terminating")), (self._s(0.5), ("Terminated", "Terminated"))])
        j.outcome = "terminated"
        self.sched.stop(j.id, now + self._s(0.5))
        request[COMMITTED] = True
        return _reply(202, self.record(j, now))  # the whole job, as the SDK's StopTrainingJobResponse reads it

    def _value(self, j: TrainingJob, key: str, now: float) -> Any:
        k = key.split(".")[-1]
        if k == "name":
            return j.name
        if k == "phase":
            return self.state(j, now)[0]
        if k == "secondary_phase":
            return self.state(j, now)[1]
        if k == "create_time":
            return j.create_ms
        if k == "workspace_id":
            return j.workspace_id
        if k == "id":
            return j.id
        if k == "flavor_id":
            return j.flavor_id
        if k == "user_name":
            return j.user
        if k == "description":
            return (j.body.get("metadata") or {}).get("description", "")
        raise ValueError(f"unsupported filter key {key!r}")

    @staticmethod
    def _match(value: Any, operator: str, wanted: list[Any]) -> bool:
        if operator == "like":
            return any(str(w).lower() in str(value).lower() for w in wanted)
        if operator == "in":
            return str(value) in {str(w) for w in wanted}
        if operator == "not":
            return str(value) not in {str(w) for w in wanted}
        if operator == "between":
            lo, hi = float(wanted[0]), float(wanted[1])
            return lo <= float(value) <= hi
        raise ValueError(f"unsupported operator {operator!r}")

    async def search(self, request: web.Request) -> web.Response:
        if (denied := await self._auth(request)) is not None:
            return denied
        try:
            body = await request.json() if request.body_exists else {}
        except ValueError:
            return _fail(400, "ModelArts.2601", "Invalid request body: not JSON.")
        body = body or {}
        offset, limit = body.get("offset", 0), body.get("limit", 10)
        if not isinstance(offset, int) or offset < 0:
            return _fail(400, "ModelArts.2601", "Invalid parameter offset.")
        if not isinstance(limit, int) or not 1 <= limit <= 50:
            return _fail(400, "ModelArts.2601", "Invalid parameter limit: must be 1 to 50.")
        filters = body.get("filters") or []
        project = request.match_info["project_id"]
        now = time.monotonic()
        try:
            for f in filters:
                if not isinstance(f.get("value"), list):
                    raise ValueError("filter value must be a list")
                if f.get("operator") == "between" and len(f["value"]) != 2:
                    raise ValueError("between takes two values")
            rows = [j for j in self.order if not j.deleted and j.project_id == project and
                    all(self._match(self._value(j, f["key"], now), f["operator"], f["value"]) for f in filters)]
            sort_by = body.get("sort_by") or "create_time"
            rows.sort(key=lambda j: (self._value(j, sort_by, now), j.create_ms),
                      reverse=(body.get("order") or "desc") == "desc")
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            return _fail(400, "ModelArts.2601", f"Invalid search: {err}")
        start = offset * limit if self.search_offset == "pages" else offset
        page = rows[start: start + limit]
        return _reply(200, {"total": len(rows), "count": len(page), "limit": limit, "offset": offset,
                            "sort_by": sort_by, "order": body.get("order") or "desc", "group_by": "",
                            "workspace_id": "", "ai_project": "", "train_type": "",
                            "items": [self.record(j, now) for j in page]})

    async def logs(self, request: web.Request) -> web.Response:
        j = await self._target(request)
        if isinstance(j, web.Response):
            return j
        task = request.match_info["task_id"]
        if task not in {f"worker-{i}" for i in range(j.node_count)}:
            return _fail(400, "ModelArts.2775", f"Task {task} of training job {j.id} not found.")
        now = time.monotonic()
        lines = []
        for t, (phase, _) in j.timeline.history(now):
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(wall(t)))
            lines.append(f"[{stamp}] [ModelArts Service Log] {task}: job phase {phase}")
            if phase == "Running":
                steps = int(min(now - t, self._s(j.run_seconds)) * self.speed) + 1
                lines.extend(f"[{stamp}] {task}: step {i} loss {2.5 / (i + 1):.4f}" for i in range(min(steps, 50)))
            if phase in TERMINAL and task == "worker-0":  # what the program printed, when a test says (SIM_STDOUT)
                lines.extend(environments((j.body.get("algorithm") or {}).get("environments") or {})
                             .get("SIM_STDOUT", "").splitlines())
        content = "\n".join(lines) + "\n"
        return _reply(200, {"content": content, "current_size": len(content), "full_size": len(content)})

    async def events(self, request: web.Request) -> web.Response:
        j = await self._target(request)
        if isinstance(j, web.Response):
            return j
        q = request.query
        try:
            offset = int(q.get("offset", "0"))
            limit = int(q.get("limit", "50"))
            if offset < 0 or not 1 <= limit <= 100:
                raise ValueError
        except ValueError:
            return _fail(400, "ModelArts.2601", "Invalid parameter offset/limit (limit 1-100).")
        evs = []
        for t, (p, _) in j.timeline.history(time.monotonic()):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall(t)))
            bad = p in ("Failed", "Abnormal")
            evs.append({"message": f"Training job phase changed to {p}", "level": "Warning" if bad else "Info",
                        "time": stamp, "source": "ModelArts"})
            said = {"Pending": EVENT_QUEUING}.get(p) or (
                EVENT_PREEMPTED if p in TERMINAL and j.outcome == "preempted" else
                EVENT_RUNTIME.format(hours=f"{(self._limit_seconds(j) or 0) / 3600:g}")
                if p in TERMINAL and j.outcome == "runtime-limit" else None)
            if said:
                evs.append({"message": said, "level": "Warning" if p != "Pending" else "Info", "time": stamp,
                            "source": "ModelArts"})
        level = q.get("level")
        if level:
            evs = [e for e in evs if e["level"] == level]
        order = q.get("order") or "asc"
        if order not in ("asc", "desc"):
            return _fail(400, "ModelArts.2601", "Invalid parameter order: asc or desc.")
        if order == "desc":
            evs.reverse()
        return _reply(200, {"total": len(evs), "limit": limit, "offset": offset, "order": order,
                            "start_time": q.get("start_time", ""), "end_time": q.get("end_time", ""),
                            "events": evs[offset: offset + limit]})

    async def metrics(self, request: web.Request) -> web.Response:
        """GET .../training-jobs/{id}/metrics/{task_id}: one average per minute of the task's run so far."""
        j = await self._target(request)
        if isinstance(j, web.Response):
            return j
        task = request.match_info["task_id"]
        if task not in {f"worker-{i}" for i in range(j.node_count)}:
            return _fail(400, "ModelArts.2775", f"Task {task} of training job {j.id} not found.")
        now = time.monotonic()
        spans = running_spans(j.timeline.history(now), lambda p: p[0] == "Running", now)
        step = self.sample_seconds
        ends = [wall(a) + step * (i + 1) for a, b in spans for i in range(int((b - a) // step))]
        use = Usage.of(j.id, environments((j.body.get("algorithm") or {}).get("environments") or {}))
        unit = int(task.rsplit("-", 1)[-1])
        f = self.flavor_ids.get(j.flavor_id)
        series: dict[str, Callable[[float], float]] = {
            "cpuUsage": lambda t: round(use.cpu(t) * 100, 2), "memUsage": lambda t: round(use.memory(t) * 100, 2)}
        if f is not None and f.gpus:
            prefix = "npu" if f.gpu_type == "Ascend910" else "gpu"
            series[f"{prefix}Util"] = lambda t: use.gpu(t, unit)
            series[f"{prefix}MemUsage"] = lambda t: round(use.gpu_memory(t, unit) * 100, 2)
        return _reply(200, {"metrics": [{"metric": name, "value": [fn(t) for t in ends]}
                                        for name, fn in series.items()]})

    # -- real-time services (v2) -------------------------------------------------------------
    def service_record(self, svc: Service, now: float) -> dict[str, Any]:
        """The service as create/show/stop/start answer it (ServiceResponse)."""
        status = "DELETING" if svc.deleted_at is not None else svc.timeline.current(now)
        group = svc.group
        units = group.get("unit_configs") or [{}]
        running = svc.count if status in ("RUNNING", "CONCERNING", "UPGRADING") else 0
        version = {"id": svc.id[:8] + "-v1", "version": svc.body.get("version") or "v1",
                   "description": svc.body.get("description") or "", "predict_url": svc.url,
                   "runtime_config": {"service_invoke": {"port": int(units[0].get("port") or 8080),
                                                         "protocol": "HTTP", "auth_type": "NONE"}},
                   "instance_groups": [{"id": svc.id[:8] + "-g0", "name": group.get("name") or "default",
                                        "count": svc.count, "running_count": running, "status": status,
                                        "unit_configs": [{k: v for k, v in u.items() if k in UNIT_KEYS}
                                                         for u in units]}]}
        since = int(wall(svc.timeline.since(now)) * 1000)
        return {"id": svc.id, "name": svc.name, "workspace_id": svc.workspace_id, "type": "REAL_TIME",
                "deploy_type": svc.body.get("deploy_type") or "SINGLE", "status": status,
                "failure_reason": "", "version": version,
                "predict_url": [{"type": "INTERNET", "urls": [svc.url]}] if running else [],
                "tags": list(svc.body.get("tags") or []), "create_at": str(svc.create_ms),
                "update_at": str(since), "task_type": svc.body.get("task_type") or "INFERENCE",
                "provider": "ModelArts"}

    def _gone(self, svc: Service, now: float) -> bool:
        """A deleted service is DELETING for a while (the SDK lists that status), then not found."""
        return svc.deleted_at is not None and now >= svc.deleted_at + self._s(DELETING_SECONDS)

    def _service(self, request: web.Request) -> Service | None:
        svc = self.services.get(request.match_info["service_id"])
        if svc is None or self._gone(svc, time.monotonic()) or svc.project_id != request.match_info["project_id"]:
            return None
        return svc

    async def _service_target(self, request: web.Request) -> Service | web.Response:
        if (denied := await self._auth(request)) is not None:
            return denied
        svc = self._service(request)
        if svc is None:
            return _fail(404, SERVICE_NOT_FOUND, f"Service {request.match_info['service_id']} not found.")
        return svc

    async def create_service(self, request: web.Request) -> web.Response:
        """POST /v2/{project_id}/services: deploy an image as a real-time service."""
        if (denied := await self._auth(request)) is not None:
            return denied
        body = await self._object(request, "ModelArts.0101")
        if isinstance(body, web.Response):
            return body
        name = body.get("name")
        if not isinstance(name, str) or not SERVICE_NAME.match(name):
            return _fail(400, "ModelArts.0101", "Invalid parameter name: 1-128 letters, Chinese characters, "
                         "digits, _ or -.")
        groups = body.get("group_configs")
        units = (groups[0].get("unit_configs") if isinstance(groups, list) and groups and
                 isinstance(groups[0], dict) else None) or []
        unit = units[0] if units and isinstance(units[0], dict) else {}
        if not ((unit.get("image") or {}).get("swr_path")):
            return _fail(400, "ModelArts.0101", "Invalid parameter group_configs[0].unit_configs[0].image.swr_path.")
        flavor = unit.get("flavor")
        if flavor is not None and flavor not in self.flavor_ids:
            return _fail(400, "ModelArts.2781", f"Flavor {flavor} not found.")
        project = request.match_info["project_id"]
        if any(s.name == name and s.project_id == project and not self._gone(s, time.monotonic())
               for s in self.services.values()):
            return _fail(400, "ModelArts.3505", f"Service name {name} already exists.")
        sid = str(uuid.uuid4())
        now = time.monotonic()
        svc = Service(id=sid, project_id=project, name=name,
                      workspace_id=str(request.query.get("workspace_id") or body.get("workspace_id") or "0"),
                      body=body, create_ms=int(time.time() * 1000),
                      timeline=Timeline(now, [(0, "INIT"), (self._s(0.2), "DEPLOYING"), (self._s(0.6), "RUNNING")]),
                      url=f"{request.url.origin()}/_serve/{sid}/", user=self.caller(request))
        self.services[sid] = svc
        request[COMMITTED] = True
        return _reply(200, self.service_record(svc, now))

    async def show_service(self, request: web.Request) -> web.Response:
        svc = await self._service_target(request)
        if isinstance(svc, web.Response):
            return svc
        return _reply(200, self.service_record(svc, time.monotonic()))

    async def list_services(self, request: web.Request) -> web.Response:
        """GET /v2/{project_id}/services with name/status filters and offset/limit paging."""
        if (denied := await self._auth(request)) is not None:
            return denied
        q = request.query
        try:  # (the SDK: limit 1-500, offset a multiple of limit)
            offset, limit = int(q.get("offset", "0")), int(q.get("limit", "10"))
            if offset < 0 or not 1 <= limit <= 500 or offset % limit:
                raise ValueError
        except ValueError:
            return _fail(400, "ModelArts.0101", "Invalid parameter offset/limit (limit 1-500, offset a multiple of "
                         "limit).")
        keys = [k.strip() for k in (q.get("sort_key") or "update_at").split(",") if k.strip()]
        if not keys or any(k not in SERVICE_SORT_KEYS for k in keys):
            return _fail(400, "ModelArts.0101", "Invalid parameter sort_key: create_at, update_at.")
        now = time.monotonic()
        rows = [s for s in self.services.values() if not self._gone(s, now)
                and s.project_id == request.match_info["project_id"]
                and (not q.get("name") or q["name"].lower() in s.name.lower())
                and (not q.get("user_name") or q["user_name"] == s.user)
                and (not q.get("status") or self.service_record(s, now)["status"] == q["status"])]

        def sort_value(s: Service, key: str) -> int:
            return s.create_ms if key == "create_at" else int(wall(s.timeline.since(now)) * 1000)

        rows.sort(key=lambda s: tuple(sort_value(s, k) for k in keys),
                  reverse=(q.get("sort_dir") or "DESC").upper() == "DESC")
        page = rows[offset: offset + limit]
        data = [{k: v for k, v in self.service_record(s, now).items() if k in ITEM_KEYS} |
                {"version": "v1", "version_count": 1, "create_at": s.create_ms,
                 "update_at": sort_value(s, "update_at"), "user_name": s.user, "auth_type": "NONE",
                 "description": s.body.get("description") or ""} for s in page]
        return _reply(200, {"data": data, "current": offset // limit, "size": len(page),
                            "pages": (len(rows) + limit - 1) // limit, "total": len(rows)})

    async def service_action(self, request: web.Request) -> web.Response:
        """POST .../services/{id}/stop or /start."""
        svc = await self._service_target(request)
        if isinstance(svc, web.Response):
            return svc
        now = time.monotonic()
        status = svc.timeline.current(now)
        if request.path.endswith("/stop"):
            if status not in ("STOPPING", "STOPPED"):
                svc.timeline.cut(now, [(0, "STOPPING"), (self._s(0.3), "STOPPED")])
        elif status in ("STOPPED", "STOPPING", "FAILED"):
            svc.timeline.cut(now, [(0, "DEPLOYING"), (self._s(0.4), "RUNNING")])
        request[COMMITTED] = True
        return _reply(200, self.service_record(svc, now))

    async def update_service(self, request: web.Request) -> web.Response:
        """PUT .../services/{id}: e.g. a new instance count for the group (a rolling upgrade)."""
        svc = await self._service_target(request)
        if isinstance(svc, web.Response):
            return svc
        try:
            body = await request.json()
        except ValueError:
            body = None
        groups = body.get("group_configs") if isinstance(body, dict) else None
        if not isinstance(groups, list) or not groups or not isinstance(groups[0], dict):
            return _fail(400, "ModelArts.0101", "Invalid parameter group_configs.")
        count = groups[0].get("count")
        if count is not None and (not isinstance(count, int) or count < 1 or count > 128):
            return _fail(400, "ModelArts.0101", "Invalid parameter group_configs[0].count: 1-128.")
        merged = {**svc.group, **groups[0]}
        svc.body = {**svc.body, "group_configs": [merged]}
        now = time.monotonic()
        if svc.timeline.current(now) in ("RUNNING", "CONCERNING"):
            svc.timeline.cut(now, [(0, "UPGRADING"), (self._s(0.3), "RUNNING")])
        request[COMMITTED] = True
        return _reply(200, self.service_record(svc, now))

    async def delete_services(self, request: web.Request) -> web.Response:
        """POST /v2/{project_id}/services/delete {service_ids}: each answered on its own."""
        if (denied := await self._auth(request)) is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            body = None
        ids = body.get("service_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids:
            return _fail(400, "ModelArts.0101", "Invalid parameter service_ids.")
        now = time.monotonic()
        out = []
        for sid in ids:
            svc = self.services.get(str(sid))
            if svc is None or svc.deleted_at is not None or svc.project_id != request.match_info["project_id"]:
                out.append({"id": str(sid), "status": "FAILED", "failure_reason": f"Service {sid} not found."})
                continue
            svc.deleted_at = now
            out.append(self.service_record(svc, now))
        request[COMMITTED] = True
        return _reply(200, {"service_responses": out})

    async def serve(self, request: web.Request) -> web.Response:
        """The model server behind a running service's URL."""
        svc = self.services.get(request.match_info["service_id"])
        if svc is None or svc.deleted_at is not None or svc.timeline.current(time.monotonic()) not in ("RUNNING", "CONCERNING",
                                                                                          "UPGRADING"):
            return _reply(503, {"error_code": "ModelArts.4503", "error_msg": "Service is not running."})
        body = await request.read()
        return _reply(200, {"model": svc.name, "service": svc.id, "path": "/" + request.match_info["tail"],
                            "method": request.method, "instances": svc.count, "received_bytes": len(body)})

    async def sim_flavors(self, _: web.Request) -> web.Response:
        return web.json_response(sorted(self.flavor_ids))

    async def sim_preempt(self, request: web.Request) -> web.Response:
        """POST /_sim/preempt/{id}: take a running job's nodes back as ModelArts does (it fails, preempted)."""
        j = self.jobs.get(request.match_info["job_id"])
        now = time.monotonic()
        if j is None or j.deleted or self.state(j, now)[0] != "Running":
            return web.json_response({"error": "no running training job with that id"}, status=409)
        if j.claim is None or j.claim.key not in self.sched.running:
            self._preempted(j.claim or self._claim(j), now, None)
        else:
            self.sched.preempt(j.id, now)
        self.revision += 1
        return web.json_response({"phase": self.state(j, now)[0]})

    async def pools(self, request: web.Request) -> web.Response:
        """GET /v2/{project_id}/pools: the project's dedicated resource pools. The simulated project has none
        (its jobs run in the public pool, whose flavors `training-job-flavors` reports), so the list is empty."""
        if (denied := await self._auth(request)) is not None:
            return denied
        return _reply(200, {"apiVersion": "v2", "kind": "PoolList", "items": []})

    async def job_flavors(self, request: web.Request) -> web.Response:
        """GET /v2/{project_id}/training-job-flavors: the public pool's flavors; max_num is how many nodes of
        each can be had now (a flavor with no GPU count configured is never short)."""
        if (denied := await self._auth(request)) is not None:
            return denied
        kind = request.query.get("flavor_type")
        self.sched.advance(time.monotonic())
        out = []
        for f in self.flavor_ids.values():
            ftype = "GPU" if f.gpus else "CPU"
            if kind and kind != ftype:
                continue
            free = self.sched.free(f.id)
            nodes = 64 if free == float("inf") or not f.gpus else int(free // f.gpus)
            info: dict[str, Any] = {"max_num": nodes, "cpu": {"arch": "x86", "core_num": int(f.cpu)},
                                    "memory": {"size": int(f.memory_gi), "unit": "GB"}}
            if f.gpus:
                info["gpu"] = {"unit_num": f.gpus, "product_name": f.gpu_type or "", "memory": "80GiB"}
            out.append({"flavor_id": f.id, "flavor_name": f.id, "flavor_type": ftype, "max_num": nodes,
                        "billing": {"code": f.id, "unit_num": 1}, "flavor_info": info,
                        "support_engines": "", "support_groups": "", "attributes": {}})
        return _reply(200, {"total_count": len(out), "flavors": out})

    def routes(self, app: web.Application) -> None:
        r = app.router
        base = "/v2/{project_id}"
        r.add_post(base + "/training-jobs", self.create)
        r.add_post(base + "/training-job-searches", self.search)
        r.add_get(base + "/training-jobs/{job_id}", self.show)
        r.add_delete(base + "/training-jobs/{job_id}", self.delete)
        r.add_post(base + "/training-jobs/{job_id}/actions", self.action)
        r.add_get(base + "/training-jobs/{job_id}/tasks/{task_id}/logs/preview", self.logs)
        r.add_get(base + "/training-jobs/{job_id}/events", self.events)
        r.add_get(base + "/training-jobs/{job_id}/metrics/{task_id}", self.metrics)
        r.add_get("/_sim/flavors", self.sim_flavors)
        r.add_post("/_sim/preempt/{job_id}", self.sim_preempt)
        r.add_post("/_sim/bulk", self.sim_bulk)
        r.add_post("/_sim/finish", self.sim_finish)
        r.add_get(base + "/training-job-flavors", self.job_flavors)
        r.add_get(base + "/pools", self.pools)
        r.add_post(base + "/services", self.create_service)
        r.add_get(base + "/services", self.list_services)
        r.add_post(base + "/services/delete", self.delete_services)
        r.add_get(base + "/services/{service_id}", self.show_service)
        r.add_put(base + "/services/{service_id}", self.update_service)
        r.add_post(base + "/services/{service_id}/stop", self.service_action)
        r.add_post(base + "/services/{service_id}/start", self.service_action)
        r.add_route("*", "/_serve/{service_id}/{tail:.*}", self.serve)


SIM_KEY = web.AppKey("modelarts_sim", ModelArtsSimulator)


def create_simulator(credentials: list[tuple[str, str]] | None = None, faults: dict[str, float] | None = None,
                     seed: int | None = None, speed: float = 1.0, state_file: str | None = None,
                     sample_seconds: float = 60.0, gpus: dict[str, float] | None = None,
                     search_offset: str = "pages") -> web.Application:
    """The ModelArts simulator as an aiohttp app (its jobs kept in `state_file` when given); `gpus` gives
    flavors of the public pool their GPU counts (every flavor is unlimited without)."""
    state = FaultState(seed=seed)
    state.set(faults or {})
    stats: Counter[str] = Counter()

    def err(status: int, msg: str) -> dict[str, Any]:
        return error(status, msg)

    sim = ModelArtsSimulator(credentials, speed=speed, sample_seconds=sample_seconds, gpus=gpus,
                             search_offset=search_offset)

    def changed() -> None:
        sim.revision += 1

    app = web.Application(middlewares=sim_middlewares(state, stats, err, changed),
                          client_max_size=8 * 1024 * 1024)
    app[SIM_KEY] = sim
    if state_file:
        persist(app, sim, state_file)
    sim.routes(app)
    sim_admin_routes(app, state, stats)
    return app
