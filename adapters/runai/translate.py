"""Neutral JobSpec -> Run:ai TrainingCreationRequest / DistributedCreationRequest, and back."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import structlog

import mappings
from adapters.runai.config import RunaiConfig, project_problem
from gateway.core.errors import ValidationError
from gateway.core.models import JobSpec, JobStatus, Phase, Reason, Serving
from gateway.core.translation import (
    ReportBuilder,
    Translation,
    deep_merge,
    mounts,
    shell_join,
    subpath_env,
    vendor_extension,
    vendor_name,
)
from mappings import (
    PhaseTable,
    canonical_gpu_type,
    gpu_types,
    load_phase_table,
    load_reason_table,
    priorities,
    rewrite_image,
    rewrite_uri,
)

log = structlog.get_logger(__name__)

TRAININGS = "/api/v1/workloads/trainings"
DISTRIBUTED = "/api/v1/workloads/distributed"
INFERENCES = "/api/v1/workloads/inferences"
FRAMEWORKS = {"pytorch": "PyTorch", "tf": "TF", "mpi": "MPI", "xgboost": "XGBoost", "jax": "JAX"}
JOB_ID_ANNOTATION = "trainjob-gateway/job-id"
KIND = "runai"
# Run:ai's own workload phases (VENDORS.md): the phase table must map each one, or it does not load.
PHASES = ("Creating", "Initializing", "Resuming", "Pending", "Deleting", "Running", "Updating",
          "Stopped", "Stopping", "Degraded", "Failed", "Completed", "Terminating", "Unknown")
PHASE_FILE = mappings.HERE / "phases_runai.yaml"
REASON_FILE = mappings.HERE / "reasons_runai.yaml"
PHASE_REASONS = ("NonPreemptibleOverQuota", "OverLimit")  # the OpenAPI's PhaseReason enum


def phase_table() -> PhaseTable:
    """Run:ai's phase table (trainings, distributed and inferences share the workload phases)."""
    return load_phase_table(PHASE_FILE, PHASES)


def reason_table() -> dict[str, dict[str, str]]:
    """Run:ai's reason table: phaseReason and condition reasons -> neutral reason."""
    return load_reason_table(REASON_FILE, (("phase_reason", PHASE_REASONS),))


def reason_of(phase_reason: str | None, conditions: list[tuple[str | None, str | None]],
              phase_message: str | None) -> tuple[Reason | None, str | None]:
    """The neutral reason and the vendor's words for it: phaseReason first, then the conditions' reasons in
    the vendor's order; a reason the table does not know is None (its words kept)."""
    table = reason_table()
    if phase_reason:
        got = table["phase_reason"].get(phase_reason)
        return (Reason(got) if got else None), phase_message
    for reason, message in conditions:
        got = table["condition"].get(reason or "")
        if got:
            return Reason(got), message or phase_message
    return None, None


def node_pools_of(gpu_type: str) -> list[str]:
    """The Run:ai node pools that carry a GPU type of mappings/gpus.yaml."""
    return list(gpu_types().get(gpu_type, {}).get("runai_node_pools") or [])


def gpu_type_of_node_pool(pool: str) -> str | None:
    """The GPU type whose Run:ai node pools include `pool`."""
    return next((name for name in gpu_types() if pool in node_pools_of(name)), None)


def _err(loc: list[str], msg: str) -> ValidationError:
    return ValidationError(f"{'.'.join(loc)}: {msg}", errors=[{"loc": loc, "msg": msg}])


def translate(spec: JobSpec, backend: RunaiConfig, job_id: str) -> Translation:
    """Build the Run:ai create request for `spec` on `backend`."""
    rep = ReportBuilder(spec)
    name = vendor_name(spec.name, job_id)
    rep.add("name", "exact", f"workload name {name} (spec name + short job id, so a retry can find it)")
    rep.add("backend", "exact", f"Run:ai backend {backend.name}")

    project = spec.project or backend.default_project
    if not project:
        raise _err(["project"], f"required: backend {backend.name} has no default_project")
    if why := project_problem(project):
        raise _err(["project"], why)
    if spec.project:
        rep.add("project", "exact", "projectId")
    else:
        rep.add("project", "defaulted", f"projectId {project} from backend default_project")
    if not backend.cluster_id:
        raise ValidationError(f"backend {backend.name} has no cluster_id configured",
                              errors=[{"loc": ["config", "backends", backend.name, "cluster_id"],
                                       "msg": "required for Run:ai"}])

    image = rewrite_image(spec.image, "runai")
    s: dict[str, Any] = {"image": image or spec.image}
    if image:
        rep.add("image", "approximated", f"spec.image {image} (registry rewritten by mappings/images.yaml)")
    else:
        rep.add("image", "exact", "spec.image")
    if spec.command:
        s["command"] = shell_join(spec.command)
        rep.add("command", "exact", "spec.command (shell-quoted)")
    if spec.args:
        s["args"] = shell_join(spec.args)
        rep.add("args", "exact", "spec.args (shell-quoted)")
    if spec.working_dir:
        s["workingDir"] = spec.working_dir
        rep.add("working_dir", "exact", "spec.workingDir")
    if spec.env is not None:
        s["environmentVariables"] = [{"name": k, "value": v} for k, v in spec.env.items()]
        rep.add("env", "exact", "spec.environmentVariables")

    r = spec.resources
    compute: dict[str, Any] = {}
    if r.gpus is not None:
        if 0 < r.gpus < 1:
            compute.update(gpuDevicesRequest=1, gpuRequestType="portion", gpuPortionRequest=r.gpus)
            rep.add("resources.gpus", "exact", f"GPU portion {r.gpus} of one device")
        else:
            compute["gpuDevicesRequest"] = int(r.gpus)
            rep.add("resources.gpus", "exact", "compute.gpuDevicesRequest")
    if r.cpu is not None:
        compute["cpuCoreRequest"] = r.cpu
        rep.add("resources.cpu", "exact", "compute.cpuCoreRequest")
    if r.memory is not None:
        compute["cpuMemoryRequest"] = r.memory
        rep.add("resources.memory", "exact", "compute.cpuMemoryRequest")
    if compute:
        s["compute"] = compute

    if r.flavor:
        s["nodePools"] = [r.flavor]
        rep.add("resources.flavor", "exact", f"nodePools [{r.flavor}]")
        if r.gpu_type:
            rep.add("resources.gpu_type", "approximated", f"superseded by resources.flavor={r.flavor}")
    elif r.gpu_type:
        canon = canonical_gpu_type(r.gpu_type)
        pools = node_pools_of(canon or "")
        if not canon or not pools:
            known = ", ".join(k for k in gpu_types() if node_pools_of(k))
            raise _err(["resources", "gpu_type"],
                       f"no Run:ai node pool carries {r.gpu_type!r} (mapped: {known}); "
                       "set resources.flavor to a node pool or extend mappings/gpus.yaml")
        s["nodePools"] = list(pools)
        rep.add("resources.gpu_type", "exact", f"nodePools {pools} from mappings/gpus.yaml")

    storage: dict[str, list[dict[str, Any]]] = {}
    subpaths: dict[str, str] = {}
    for m in mounts(spec):
        field = f"{m.kind}[{m.index}]"
        uri, note = m.uri, ""
        rewritten = rewrite_uri(uri, "runai", backend.uri_rules())
        if rewritten:
            uri = rewritten[0]
            note = f"; rewritten {m.uri} -> {uri} by {rewritten[1].origin}"
        parts = urlsplit(uri)
        sub = parts.path.strip("/")
        extra = ("; " + ", ".join(m.defaults)) if m.defaults else ""
        if parts.scheme == "pvc":
            storage.setdefault("pvc", []).append({
                "name": m.name, "claimName": parts.netloc, "path": m.path, "readOnly": m.read_only,
                "existingPvc": True})
            if sub:
                var = subpath_env(m.name)
                subpaths[var] = sub
                rep.add(field, "approximated",
                        f"storage.pvc claim {parts.netloc} mounted whole at {m.path}: Run:ai has no sub-path, "
                        f"data is under {m.path}/{sub} (${var}){note}{extra}")
            else:
                rep.add(field, "approximated" if note else "exact", f"storage.pvc {parts.netloc}{note}{extra}")
        elif parts.scheme == "nfs":
            storage.setdefault("nfs", []).append({
                "name": m.name, "server": parts.netloc, "path": parts.path, "mountPath": m.path,
                "readOnly": m.read_only})
            rep.add(field, "approximated" if note else "exact", f"storage.nfs {parts.netloc}:{parts.path}{note}{extra}")
        else:  # s3 and obs: Run:ai mounts S3-compatible buckets
            item: dict[str, Any] = {"name": m.name, "bucket": parts.netloc, "path": m.path}
            detail = f"storage.s3 bucket {parts.netloc}"
            lossy = bool(note)
            if parts.scheme == "obs":
                item["url"] = backend.obs_endpoint
                detail += f" through OBS's S3-compatible endpoint {backend.obs_endpoint}"
                lossy = True
            if sub:
                var = subpath_env(m.name)
                subpaths[var] = sub
                detail += f"; Run:ai mounts whole buckets, data is under {m.path}/{sub} (${var})"
                lossy = True
            storage.setdefault("s3", []).append(item)
            rep.add(field, "approximated" if lossy else "exact", detail + note + extra)
    if storage:
        s["storage"] = storage
    if subpaths:  # where each whole-mounted URI's data lies, for the program (a TES entry script stages by it)
        s.setdefault("environmentVariables", []).extend({"name": k, "value": v} for k, v in subpaths.items())

    if spec.labels is not None:
        s["labels"] = [{"name": k, "value": v} for k, v in spec.labels.items()]
        rep.add("labels", "exact", "spec.labels")
    s["annotations"] = [{"name": JOB_ID_ANNOTATION, "value": job_id}]
    if spec.priority:
        s["priorityClass"] = priorities()["runai"][spec.priority]
        rep.add("priority", "exact", f"priorityClass {s['priorityClass']}")
    if spec.preemptible is not None:
        s["preemptibility"] = "preemptible" if spec.preemptible else "non-preemptible"
        rep.add("preemptible", "exact", f"preemptibility {s['preemptibility']}")
    if spec.max_retries is not None:
        s["backoffLimit"] = spec.max_retries
        rep.add("max_retries", "exact", "spec.backoffLimit")
    if spec.max_runtime_seconds is not None:
        rep.add("max_runtime_seconds", "dropped", "Run:ai trainings have no run-time limit field")

    body: dict[str, Any] = {"name": name, "projectId": str(project), "clusterId": backend.cluster_id}
    path = TRAININGS
    kind = "training"
    if spec.kind == "inference":
        assert spec.serving is not None  # enforced by parse_spec
        path, kind = INFERENCES, "inference"
        s.update(_serving(spec.serving, rep))
        rep.add("kind", "exact", "a Run:ai inference workload (/api/v1/workloads/inferences)")
        rep.add("resources.nodes", "exact", "one replica's resources; serving.min/max_replicas set the count")
    elif r.nodes > 1:
        assert spec.distributed is not None  # enforced by JobSpec
        fw = spec.distributed.framework
        s["distributedFramework"] = FRAMEWORKS[fw]
        workers = r.nodes if fw == "mpi" else r.nodes - 1
        s["numWorkers"] = workers
        body["masterSpecSameAsWorker"] = True
        path, kind = DISTRIBUTED, "distributed"
        role = "an MPI launcher plus" if fw == "mpi" else "a master plus"
        rep.add("resources.nodes", "exact", f"distributed workload: {role} {workers} workers, same spec")
        rep.add("distributed.framework", "exact", f"distributedFramework {FRAMEWORKS[fw]}")
    else:
        rep.add("kind", "exact", "a Run:ai training")
        rep.add("resources.nodes", "exact", "single-node training")
        if spec.distributed:
            rep.add("distributed.framework", "dropped", "ignored for a single-node job (nodes = 1)")
    body["spec"] = s

    ext = vendor_extension(spec, KIND, rep, "the request body")
    if ext is not None:
        for key in ("name", "useGivenNameAsPrefix"):
            if key in ext:
                raise _err(["extensions", KIND, key], "the workload name is set by the gateway: it is how a create whose answer was lost finds its job again; name the job with `name`")
        body = deep_merge(body, ext)
    return Translation("POST", path, body, rep.finish(), name, kind, str(body.get("projectId", project)))


EXIT_CODE = re.compile(r"exit(?:ed)? (?:with )?code (\d+)", re.IGNORECASE)


def _serving(sv: Serving, rep: ReportBuilder) -> dict[str, Any]:
    """An inference's serving settings: servingPort, autoscaling and the readiness probe."""
    out: dict[str, Any] = {"servingPort": {"container": sv.port, "protocol": sv.protocol}}
    rep.add("serving.port", "exact", "spec.servingPort.container")
    rep.add("serving.protocol", "exact", "spec.servingPort.protocol")
    rep.add("serving.path", "approximated", "Run:ai serves the whole port at the workload's URL; the path is "
            "part of the URLs you call")
    hi = sv.max_replicas or max(sv.min_replicas, 1)
    auto: dict[str, Any] = {"minReplicas": sv.min_replicas, "maxReplicas": hi}
    rep.add("serving.min_replicas", "exact", "spec.autoscaling.minReplicas")
    rep.add("serving.max_replicas", "exact", "spec.autoscaling.maxReplicas")
    if sv.autoscaling is not None:
        auto["metric"] = sv.autoscaling.metric
        auto["metricThreshold"] = max(1, round(sv.autoscaling.target))
        exact = float(sv.autoscaling.target).is_integer()
        rep.add("serving.autoscaling", "exact" if exact else "approximated",
                f"spec.autoscaling.metric {sv.autoscaling.metric}, metricThreshold {auto['metricThreshold']}"
                + ("" if exact else " (Run:ai takes a whole number)"))
    out["autoscaling"] = auto
    if sv.readiness is not None:
        rd = sv.readiness
        out["probes"] = {"readiness": {"initialDelaySeconds": rd.initial_delay_seconds,
                                       "periodSeconds": rd.period_seconds,
                                       "handler": {"httpGet": {"path": rd.path, "port": rd.port or sv.port,
                                                               "scheme": "HTTP"}}}}
        rep.add("serving.readiness", "exact", "spec.probes.readiness (httpGet)")
    return out


def normalize_phase(vendor_phase: str | None, message: str | None = None, phase_reason: str | None = None,
                    conditions: list[tuple[str | None, str | None]] | None = None,
                    phase_updated_at: str | None = None) -> JobStatus:
    """Run:ai phase -> neutral status; an unseen phase is UNKNOWN, with a warning. A waiting or ended job
    gets its reason (`reason_of`); a waiting one the time it started to wait (phaseUpdatedAt)."""
    table = phase_table().phases
    rule = table.get(vendor_phase or "")
    if rule is None:
        log.warning("unknown_vendor_phase", vendor="runai", vendor_phase=vendor_phase)
        return JobStatus(phase=Phase.UNKNOWN, terminal=False, vendor_phase=vendor_phase, message=message,
                         observed_at=datetime.now(UTC))
    reason, words, since = None, None, None
    if rule.phase == "QUEUED" or rule.terminal:
        reason, words = reason_of(phase_reason, conditions or [], message)
    if rule.phase == "QUEUED" and phase_updated_at:
        since = _when(phase_updated_at)
    m = EXIT_CODE.search(message or "") if rule.terminal else None
    return JobStatus(phase=Phase(rule.phase), terminal=rule.terminal, vendor_phase=vendor_phase,
                     message=message, degraded=rule.degraded, observed_at=datetime.now(UTC),
                     exit_code=int(m.group(1)) if m else (0 if rule.phase == "SUCCEEDED" else None),
                     reason=reason, reason_message=words, pending_since=since)


def _when(iso: str) -> datetime | None:
    """A vendor timestamp (ISO 8601, Z or offset), or None when it does not parse."""
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None


def _argv(s: Any) -> list[str] | None:
    import shlex

    if not s:
        return None
    try:
        return shlex.split(str(s))
    except ValueError:
        return [str(s)]


def spec_from_vendor(record: dict[str, Any], backend: str) -> dict[str, Any]:
    """Best-effort neutral spec from a Run:ai workload or training record (for external jobs)."""
    spec_block = record.get("spec") or {}
    name = str(record.get("name") or record.get("requestedName") or "external")
    out: dict[str, Any] = {"name": name, "backend": backend, "image": spec_block.get("image") or "unknown"}
    if record.get("projectId") is not None:
        out["project"] = str(record["projectId"])
    if spec_block.get("command"):
        out["command"] = _argv(spec_block["command"])
    if spec_block.get("args"):
        out["args"] = _argv(spec_block["args"])
    if spec_block.get("environmentVariables"):
        out["env"] = {e["name"]: e.get("value") or "" for e in spec_block["environmentVariables"]
                      if e.get("name") and not str(e["name"]).startswith("TJG_SUBPATH_")}  # (ours, from mounts)
    labels = {lb["name"]: lb.get("value") or "" for lb in spec_block.get("labels") or [] if lb.get("name")}
    if labels:
        out["labels"] = labels
    compute = spec_block.get("compute") or {}
    res: dict[str, Any] = {}
    if compute.get("gpuRequestType") == "portion" and compute.get("gpuPortionRequest") is not None:
        res["gpus"] = compute["gpuPortionRequest"]
    elif compute.get("gpuDevicesRequest") is not None:
        res["gpus"] = compute["gpuDevicesRequest"]
    if spec_block.get("numWorkers"):
        res["nodes"] = int(spec_block["numWorkers"]) + 1
    if res:
        out["resources"] = res
    return out
