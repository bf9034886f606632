"""Neutral JobSpec -> ModelArts v2 training-job create body, and back."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import structlog

import mappings
from adapters.modelarts.config import ModelArtsConfig
from gateway.core.errors import ValidationError
from gateway.core.models import JobSpec, JobStatus, Phase, Reason
from gateway.core.translation import (
    ReportBuilder,
    Translation,
    deep_merge,
    mounts,
    parse_memory_gi,
    shell_join,
    vendor_extension,
    vendor_name,
)
from mappings import (
    Flavor,
    PhaseTable,
    canonical_gpu_type,
    flavors,
    load_phase_table,
    load_reason_table,
    priorities,
    rewrite_image,
    rewrite_uri,
)

log = structlog.get_logger(__name__)

KIND = "modelarts"
RETRY_ANNOTATION = "fault-tolerance/job-retry-num"
FRAMEWORK_NOTE = ("ModelArts starts node_count replicas of the same command and sets MA_NUM_HOSTS, "
                  "VC_WORKER_HOSTS and friends; the launcher in the image must read them")
# ModelArts' own job phases, secondary phases and service statuses (VENDORS.md, the SDK): each table must
# map every one, or it does not load.
PHASES = ("Creating", "Pending", "Running", "Failed", "Completed", "Terminating", "Terminated", "Abnormal")
SECONDARY = ("Creating", "Queuing", "Running", "Failed", "Completed", "Terminating", "Terminated", "CreateFailed",
             "TerminatedFailed", "Unknown", "Lost")
SERVICE_STATUSES = ("INIT", "DEPLOYING", "RUNNING", "CONCERNING", "UPGRADING", "STOPPING", "STOPPED", "DELETING",
                    "FAILED", "ERROR")


def phase_table() -> PhaseTable:
    """The training-job phase table (primary and secondary phases)."""
    return load_phase_table(mappings.HERE / "phases_modelarts.yaml", PHASES, SECONDARY)


def reason_table() -> dict[str, dict[str, str]]:
    """ModelArts' reason table: secondary phases and the runs' end reasons -> neutral reason."""
    return load_reason_table(mappings.HERE / "reasons_modelarts.yaml")


def service_table() -> PhaseTable:
    """The real-time service status table (v2 services API, ShowInferServiceResponse.status)."""
    return load_phase_table(mappings.HERE / "phases_modelarts_services.yaml", SERVICE_STATUSES)


def _err(loc: list[str], msg: str) -> ValidationError:
    return ValidationError(f"{'.'.join(loc)}: {msg}", errors=[{"loc": loc, "msg": msg}])


def choose_flavor(gpus: float | None, gpu_type: str | None, cpu: float | None,
                  memory: str | None) -> Flavor:
    """Smallest flavor with the GPUs asked for and at least the CPU and memory; 422 when none."""
    want = math.ceil(gpus) if gpus else 0
    canon = None
    if gpu_type:
        canon = canonical_gpu_type(gpu_type)
        if canon is None:
            raise _err(["resources", "gpu_type"], f"unknown GPU type {gpu_type!r}; extend mappings/gpus.yaml")
    mem = parse_memory_gi(memory) if memory else 0.0
    for f in flavors():
        if f.gpus != want:
            continue
        if want and canon and f.gpu_type != canon:
            continue
        if want == 0 and (f.gpu_type is not None or canon is not None):
            continue
        if f.cpu >= (cpu or 0) and f.memory_gi >= mem:
            return f
    desc = f"{want} x {canon or 'any GPU'}" if want else ("0 GPUs" if not canon else f"0 x {canon}")
    raise _err(["resources"], f"no ModelArts flavor in mappings/flavors.yaml offers {desc} with at least "
               f"{cpu or 0} cores and {memory or '0'} memory; set resources.flavor or extend the table")


def obs_url(uri: str) -> str:
    """obs://bucket/prefix -> /bucket/prefix/ as ModelArts writes OBS paths."""
    p = urlsplit(uri)
    path = p.path.strip("/")
    return f"/{p.netloc}/{path}/" if path else f"/{p.netloc}/"


def translate_service(spec: JobSpec, backend: ModelArtsConfig, job_id: str) -> Translation:
    """Build the ModelArts create-real-time-service request (v2 services API, the image deployed directly:
    no model registration is needed) for an inference `spec`."""
    assert spec.serving is not None  # enforced by parse_spec
    sv = spec.serving
    rep = ReportBuilder(spec)
    name = vendor_name(spec.name, job_id)
    rep.add("name", "exact", f"service name {name} (spec name + short job id, so a retry can find it)")
    rep.add("kind", "exact", "a ModelArts real-time service (/v2/{project_id}/services)")
    rep.add("backend", "exact", f"ModelArts backend {backend.name}")
    if not backend.project_id:
        raise ValidationError(f"backend {backend.name} has no project_id configured",
                              errors=[{"loc": ["config", "backends", backend.name, "project_id"],
                                       "msg": "required for ModelArts"}])
    workspace = spec.project or backend.default_project or "0"
    rep.add("project", "exact" if spec.project else "defaulted", f"workspace_id {workspace}")
    image = rewrite_image(spec.image, "modelarts")
    unit: dict[str, Any] = {"name": "model", "image": {"source": "SWR", "swr_path": image or spec.image},
                            "port": sv.port, "count": 1}
    rep.add("image", "approximated" if image else "exact",
            f"unit image.swr_path {image} (registry rewritten by mappings/images.yaml)" if image else
            "unit image.swr_path")
    argv = (spec.command or []) + (spec.args or [])
    if argv:
        unit["cmd"] = shell_join(argv)
    if spec.command:
        rep.add("command", "exact", "unit cmd (shell-quoted)")
    if spec.args:
        rep.add("args", "approximated", "appended to the unit's cmd: ModelArts has one command string")
    if spec.working_dir:
        rep.add("working_dir", "dropped", "a service unit has no working directory; cd in the command instead")
    if spec.env is not None:
        unit["envs"] = dict(spec.env)
        rep.add("env", "exact", "unit envs")
    r = spec.resources
    rep.add("resources.nodes", "exact", "one instance's resources; serving.min_replicas sets the instance count")
    if r.flavor:
        unit["flavor"] = r.flavor
        rep.add("resources.flavor", "exact", "unit flavor")
        for f in ("gpus", "gpu_type", "cpu", "memory"):
            rep.add(f"resources.{f}", "approximated", f"decided by resources.flavor={r.flavor}")
    else:
        fl = choose_flavor(r.gpus, r.gpu_type, r.cpu, r.memory)
        unit["flavor"] = fl.id
        for f, value in (("gpus", r.gpus), ("gpu_type", r.gpu_type), ("cpu", r.cpu), ("memory", r.memory)):
            if value is not None:
                rep.add(f"resources.{f}", "exact" if f != "gpus" or value == fl.gpus else "approximated",
                        f"flavor {fl.id}")
    rep.add("serving.port", "exact", "unit port and runtime_config.service_invoke.port")
    rep.add("serving.protocol", "exact", "runtime_config.service_invoke.protocol")
    rep.add("serving.path", "approximated", "ModelArts serves the port at the service's predict URL; the path is "
            "part of the URLs you call")
    count = max(sv.min_replicas, 1)
    rep.add("serving.min_replicas", "exact" if sv.min_replicas >= 1 else "approximated",
            f"group_configs[0].count {count}" + ("" if sv.min_replicas >= 1 else " (ModelArts cannot scale to zero)"))
    if sv.max_replicas is not None:
        rep.add("serving.max_replicas", "exact" if sv.max_replicas == count else "approximated",
                f"runs {count} instance(s); a ModelArts service keeps a fixed count (change it with tjg scale)")
    if sv.autoscaling is not None:
        rep.add("serving.autoscaling", "dropped", "ModelArts real-time services have no metric autoscaling in "
                "this API; the instance count is fixed")
    if sv.readiness is not None:
        unit["readiness_health"] = {"check_method": "HTTP", "url": sv.readiness.path, "protocol": "HTTP",
                                    "initial_delay_seconds": sv.readiness.initial_delay_seconds,
                                    "period_seconds": sv.readiness.period_seconds, "timeout_seconds": 3,
                                    "failure_threshold": 3}
        rep.add("serving.readiness", "exact", "unit readiness_health (HTTP)")
    for i, _ in enumerate(spec.inputs or []):
        rep.add(f"inputs[{i}]", "dropped", "mounting data into a real-time service is not offered through the gateway")
    if spec.priority:
        rep.add("priority", "dropped", "real-time services have no priority")
    if spec.preemptible is not None:
        rep.add("preemptible", "dropped", "real-time services are not preemptible")
    body: dict[str, Any] = {
        "name": name, "description": f"trainjob-gateway job {job_id}", "workspace_id": workspace,
        "group_configs": [{"name": "default", "count": count, "unit_configs": [unit]}],
        "runtime_config": {"service_invoke": {"port": sv.port, "protocol": sv.protocol.upper(), "auth_type": "NONE"}},
    }
    if spec.labels is not None:
        body["tags"] = [{"key": k, "value": v} for k, v in spec.labels.items()]
        rep.add("labels", "exact", "tags")
    ext = vendor_extension(spec, KIND, rep, "the create body")
    if ext is not None:
        if "name" in ext:
            raise _err(["extensions", KIND, "name"], "the service name is set by the gateway: it is how a "
                       "create whose answer was lost finds its service again; name the job with `name`")
        body = deep_merge(body, ext)
    return Translation("POST", f"/v2/{backend.project_id}/services", body, rep.finish(), name, "service", workspace)


def translate(spec: JobSpec, backend: ModelArtsConfig, job_id: str) -> Translation:
    """Build the ModelArts create request for `spec` on `backend`: a training job, or a real-time service
    for an inference spec."""
    if spec.kind == "inference":
        return translate_service(spec, backend, job_id)
    rep = ReportBuilder(spec)
    rep.add("kind", "exact", "a ModelArts training job")
    name = vendor_name(spec.name, job_id)
    rep.add("name", "exact", f"metadata.name {name} (spec name + short job id, so a retry can find it)")
    rep.add("backend", "exact", f"ModelArts backend {backend.name}")
    workspace = spec.project or backend.default_project or "0"
    if spec.project:
        rep.add("project", "exact", "metadata.workspace_id")
    else:
        rep.add("project", "defaulted", f"metadata.workspace_id {workspace}")
    if not backend.project_id:
        raise ValidationError(f"backend {backend.name} has no project_id configured",
                              errors=[{"loc": ["config", "backends", backend.name, "project_id"],
                                       "msg": "required for ModelArts"}])

    metadata: dict[str, Any] = {"name": name, "workspace_id": workspace,
                                "description": f"trainjob-gateway job {job_id}"}
    image = rewrite_image(spec.image, "modelarts")
    algorithm: dict[str, Any] = {"engine": {"image_url": image or spec.image}}
    if image:
        rep.add("image", "approximated", f"algorithm.engine.image_url {image} (registry rewritten by "
                "mappings/images.yaml)")
    else:
        rep.add("image", "exact", "algorithm.engine.image_url")
    argv = (spec.command or []) + (spec.args or [])
    if argv:
        algorithm["command"] = shell_join(argv)
    if spec.command:
        rep.add("command", "exact", "algorithm.command (shell-quoted)")
        if spec.args:
            rep.add("args", "approximated", "appended to algorithm.command: ModelArts has one command string")
    elif spec.args:
        rep.add("args", "approximated", "used as algorithm.command: ModelArts has no separate argv")
    if spec.working_dir:
        algorithm["working_dir"] = spec.working_dir
        rep.add("working_dir", "exact", "algorithm.working_dir")
    if spec.env is not None:
        algorithm["environments"] = dict(spec.env)
        rep.add("env", "exact", "algorithm.environments")

    r = spec.resources
    resource: dict[str, Any] = {"node_count": r.nodes}
    rep.add("resources.nodes", "exact", f"spec.resource.node_count {r.nodes}")
    if r.flavor:
        resource["flavor_id"] = r.flavor
        rep.add("resources.flavor", "exact", "spec.resource.flavor_id")
        for f in ("gpus", "gpu_type", "cpu", "memory"):
            rep.add(f"resources.{f}", "approximated", f"decided by resources.flavor={r.flavor}")
    else:
        fl = choose_flavor(r.gpus, r.gpu_type, r.cpu, r.memory)
        resource["flavor_id"] = fl.id
        if r.gpus is not None:
            if r.gpus == fl.gpus:
                rep.add("resources.gpus", "exact", f"flavor {fl.id}: {fl.gpus} GPUs")
            else:
                rep.add("resources.gpus", "approximated",
                        f"flavor {fl.id}: a whole GPU; ModelArts has no GPU portions")
        if r.gpu_type:
            rep.add("resources.gpu_type", "exact", f"flavor {fl.id}: {fl.gpu_type}")
        if r.cpu is not None:
            rep.add("resources.cpu", "exact" if fl.cpu == r.cpu else "approximated",
                    f"flavor {fl.id}: {fl.cpu:g} cores")
        if r.memory is not None:
            same = abs(fl.memory_gi - parse_memory_gi(r.memory)) < 1e-9
            rep.add("resources.memory", "exact" if same else "approximated",
                    f"flavor {fl.id}: {fl.memory_gi:g}Gi")
        if not (r.gpus or r.gpu_type or r.cpu or r.memory):
            rep.add("resources", "defaulted", f"flavor {fl.id}")
    if backend.pool_id:
        resource["pool_id"] = backend.pool_id

    if spec.distributed:
        if r.nodes > 1:
            rep.add("distributed.framework", "approximated", FRAMEWORK_NOTE)
        else:
            rep.add("distributed.framework", "dropped", "ignored for a single-node job (nodes = 1)")

    job_spec: dict[str, Any] = {"resource": resource}
    inputs: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    for m in mounts(spec):
        field = f"{m.kind}[{m.index}]"
        uri, note = m.uri, ""
        rewritten = rewrite_uri(uri, "modelarts", backend.uri_rules())
        if rewritten:
            uri = rewritten[0]
            note = f"; rewritten {m.uri} -> {uri} by {rewritten[1].origin}"
        parts = urlsplit(uri)
        extra = ("; " + ", ".join(m.defaults)) if m.defaults else ""
        if parts.scheme == "obs":
            channel = {"name": m.name, "local_dir": m.path, "remote": {"obs": {"obs_url": obs_url(uri)}}}
            (inputs if m.kind == "inputs" else outputs).append(channel)
            rep.add(field, "approximated" if note else "exact",
                    f"algorithm.{m.kind} OBS {obs_url(uri)}{note}{extra}")
        elif parts.scheme == "nfs":
            volumes.append({"nfs": {"nfs_server_path": f"{parts.netloc}:{parts.path}", "local_path": m.path,
                                    "read_only": m.read_only}})
            rep.add(field, "approximated" if note else "exact", f"spec.volumes nfs{note}{extra}")
        else:
            rep.add(field, "dropped",
                    f"ModelArts mounts OBS and NFS only; no rule (the backend's storage_rules, "
                    f"mappings/storage.yaml) maps {m.uri}")
    if inputs:
        algorithm["inputs"] = inputs
    if outputs:
        algorithm["outputs"] = outputs
    if volumes:
        job_spec["volumes"] = volumes

    if spec.labels is not None:
        rep.add("labels", "dropped", "ModelArts training jobs have no labels; the gateway still filters on them")
    policy: dict[str, Any] = {}
    if spec.priority:
        policy["priority"] = priorities()["modelarts"][spec.priority]
        rep.add("priority", "exact", f"spec.schedule_policy.priority {policy['priority']}")
    if spec.preemptible is not None:
        policy["preemptible"] = spec.preemptible
        rep.add("preemptible", "exact", "spec.schedule_policy.preemptible")
    if policy:
        job_spec["schedule_policy"] = policy
    if spec.max_retries is not None:
        metadata["annotations"] = {RETRY_ANNOTATION: str(spec.max_retries)}
        rep.add("max_retries", "exact", f"metadata.annotations[{RETRY_ANNOTATION}]")
    if spec.max_runtime_seconds is not None:
        hours = math.ceil(spec.max_runtime_seconds / 3600)
        job_spec["auto_stop"] = {"time_unit": "HOURS", "duration": hours}
        exact = spec.max_runtime_seconds == hours * 3600
        rep.add("max_runtime_seconds", "exact" if exact else "approximated",
                f"spec.auto_stop {hours} h" + ("" if exact else " (ModelArts counts whole hours, rounded up)"))

    body: dict[str, Any] = {"kind": "job", "metadata": metadata, "algorithm": algorithm, "spec": job_spec}
    ext = vendor_extension(spec, KIND, rep, "the create body")
    if ext is not None:
        meta = ext.get("metadata")
        if isinstance(meta, dict) and "name" in meta:
            raise _err(["extensions", KIND, "metadata", "name"], "the job name is set by the gateway: it is how a create whose answer was lost finds its job again; name the job with `name`")
        body = deep_merge(body, ext)
    path = f"/v2/{backend.project_id}/training-jobs"
    return Translation("POST", path, body, rep.finish(), name, "training", workspace)


def normalize_service(status: str | None, message: str | None = None) -> JobStatus:
    """A real-time service's status -> neutral (mappings/phases_modelarts_services.yaml)."""
    rule = service_table().phases.get(status or "")
    now = datetime.now(UTC)
    if rule is None:
        log.warning("unknown_vendor_phase", vendor="modelarts_services", vendor_phase=status)
        return JobStatus(phase=Phase.UNKNOWN, vendor_phase=status, message=message, observed_at=now)
    return JobStatus(phase=Phase(rule.phase), terminal=rule.terminal, vendor_phase=status, message=message,
                     degraded=rule.degraded, observed_at=now)


def normalize_phase(phase: str | None, secondary: str | None = None, message: str | None = None,
                    exit_code: int | None = None, end_reason: str | None = None,
                    waiting_since_ms: int | None = None) -> JobStatus:
    """ModelArts status -> neutral; the primary phase decides, the secondary only when it is unknown. A
    waiting job's reason comes from its secondary phase, an ended one's from its last run's end_reason;
    a word the table does not know gives no reason (its words kept in the message)."""
    table = phase_table()
    rule = table.phases.get(phase or "")
    if rule is None:
        rule = table.secondary.get(secondary or "")
        log.warning("unknown_vendor_phase", vendor="modelarts", vendor_phase=phase, secondary=secondary)
    now = datetime.now(UTC)
    if rule is None:
        return JobStatus(phase=Phase.UNKNOWN, vendor_phase=phase, vendor_secondary_phase=secondary,
                         message=message, observed_at=now)
    reason: str | None = None
    words: str | None = None
    since: datetime | None = None
    if rule.phase == "QUEUED":
        reason = reason_table()["secondary_phase"].get(secondary or "")
        words = secondary if reason else None
        if waiting_since_ms:
            since = datetime.fromtimestamp(waiting_since_ms / 1000, UTC)
    elif rule.terminal and end_reason:
        reason = reason_table()["end_reason"].get(end_reason)
        words = message or end_reason
    return JobStatus(phase=Phase(rule.phase), terminal=rule.terminal, vendor_phase=phase,
                     vendor_secondary_phase=secondary, message=message, observed_at=now,
                     exit_code=exit_code if rule.terminal else None,
                     reason=Reason(reason) if reason else None, reason_message=words, pending_since=since)


def spec_from_vendor(record: dict[str, Any], backend: str) -> dict[str, Any]:
    """Best-effort neutral spec from a ModelArts job record (for external jobs)."""
    import shlex

    meta = record.get("metadata") or {}
    algo = record.get("algorithm") or {}
    res = ((record.get("spec") or {}).get("resource") or {})
    out: dict[str, Any] = {"name": str(meta.get("name") or "external"), "backend": backend,
                           "image": ((algo.get("engine") or {}).get("image_url")) or "unknown"}
    if meta.get("workspace_id"):
        out["project"] = str(meta["workspace_id"])
    if algo.get("command"):
        try:
            out["command"] = shlex.split(algo["command"])
        except ValueError:
            out["command"] = [algo["command"]]
    if algo.get("environments"):
        out["env"] = environments(algo["environments"])
    resources: dict[str, Any] = {}
    if res.get("flavor_id"):
        resources["flavor"] = res["flavor_id"]
    if res.get("node_count"):
        resources["nodes"] = int(res["node_count"])
    if resources:
        out["resources"] = resources
    return out


def environments(raw: Any) -> dict[str, str]:
    """`algorithm.environments` as a dict: a create body sends one object, a job read back carries a list
    of objects (the SDK's list[dict(str, str)])."""
    items = raw if isinstance(raw, list) else [raw]
    return {str(k): str(v) for item in items if isinstance(item, dict) for k, v in item.items()}
