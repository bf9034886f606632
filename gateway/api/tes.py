"""GA4GH Task Execution Service 1.1 under /ga4gh/tes/v1, over the same JobService as /v1.

A TES task is a gateway job: it is submitted, synced, listed, watched and sent to webhooks like any
other, and every /v1 job can be read as a TES task. This module holds the whole mapping, as data and
code: tesTask -> JobSpec (with the usual report: exact / approximated / defaulted / dropped), neutral
phase + vendor reason -> TES state, and the job's history -> TES logs.

Several executors run in order in one container: an entry script (POSIX sh) does each one's workdir,
env, stdin/stdout/stderr and ignore_error, writes inline input contents and creates the task's volumes.
So every executor of a task must use the same image; otherwise the task is refused with the reason.
"""

from __future__ import annotations

import copy
import posixpath
import re
import shlex
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import pydantic
from aiohttp import web

from gateway import __version__
from gateway.api.http import (
    CONFIG,
    PRINCIPAL,
    SERVICE,
    dumps,
    only_query,
    qint,
    read_json,
    reply,
    reply_list,
)
from gateway.api.tes_models import TesTask, first_error
from gateway.core.errors import BadRequest, Conflict, GatewayError
from gateway.core.models import ENV_NAME_RE, LABEL_KEY_RE, Phase, ReportEntry
from gateway.core.slices import Slices
from gateway.core.translation import subpath_env
from gateway.service.attempts import attempt_windows
from gateway.service.jobs import JobService
from gateway.service.principal import Principal
from gateway.service.rows import dt
from gateway.store import ListFilters

PREFIX = "/ga4gh/tes/v1"
SCHEMES = ("s3", "obs", "pvc", "nfs")
BACKEND_PARAMETERS = ("backend", "gpus", "gpu_type", "flavor", "project", "priority")
MAX_CONTENT = 128 * 1024  # TES: "Implementations should support a minimum of 128 KiB in this field"
VIEWS = ("MINIMAL", "BASIC", "FULL")
TASK_FIELDS = ("name", "description", "inputs", "outputs", "resources", "executors", "volumes", "tags")

# Neutral phase -> TES state; FAILED is refined by the vendor's reason (see tes_state).
STATES: dict[str, str] = {
    "QUEUED": "QUEUED", "STARTING": "INITIALIZING", "RUNNING": "RUNNING", "SUSPENDING": "PAUSED",
    "SUSPENDED": "PAUSED", "SUCCEEDED": "COMPLETE", "FAILED": "EXECUTOR_ERROR", "CANCELLING": "CANCELING",
    "CANCELLED": "CANCELED", "UNKNOWN": "UNKNOWN",
}
# TES state -> the neutral phases it can come from (for GET /tasks?state=).
PHASES_OF: dict[str, tuple[str, ...]] = {}
for _phase, _state in STATES.items():
    PHASES_OF.setdefault(_state, ())
    PHASES_OF[_state] += (_phase,)
for _state in ("SYSTEM_ERROR", "PREEMPTED"):
    PHASES_OF[_state] = ("FAILED",)
PREEMPTED = re.compile(r"preempt", re.IGNORECASE)
# A failure's neutral reason -> TES state: the executor failed (EXECUTOR_ERROR), or the platform did before
# or around it (SYSTEM_ERROR: an image that cannot be pulled, a node lost), or the job was PREEMPTED.
STATE_OF_REASON = {"preempted": "PREEMPTED", "image-pull": "SYSTEM_ERROR", "node-failure": "SYSTEM_ERROR",
                   "vendor-error": "SYSTEM_ERROR", "oom": "EXECUTOR_ERROR", "user-error": "EXECUTOR_ERROR",
                   "runtime-limit": "EXECUTOR_ERROR"}
PLATFORM_FAILURES = ("Abnormal",)  # vendor phases that mean the platform failed, not the program


def _bad(loc: list[str | int], msg: str) -> BadRequest:
    return BadRequest(f"{'.'.join(map(str, loc))}: {msg}", errors=[{"loc": ["body", *loc], "msg": msg}])


def _note(report: list[dict[str, str]], field: str, outcome: str, detail: str) -> None:
    report.append({"field": f"tes.{field}", "outcome": outcome, "detail": detail})


def job_name(name: Any) -> str:
    """A TES name as a JobSpec name (lowercase letters, digits and '-', starting with a letter)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", str(name or "").lower()).strip("-")
    slug = re.sub(r"-{2,}", "-", slug)[:50].strip("-")
    if not slug or not slug[0].isalpha():
        slug = f"tes-{slug}".strip("-")
    return slug


def _data_url(url: str, loc: list[str | int]) -> str:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.netloc:
        raise _bad(loc, f"url must be {', '.join(s + '://' for s in SCHEMES)}: the backends mount these")
    return url


STAGE = "/tjg/stage"  # where a task's storage is mounted; its entry script copies between it and the task's paths
MARK = "tjg:v1"  # the entry script's lines for the gateway (executor exit codes, outputs written): see results_of
MARK_FN = f"tjg_mark() {{ printf '{MARK} %s\\n' \"$*\"; }}"  # (the script's first function: _scripted finds it)


@dataclass
class Staged:
    """One TES input or output with a URL: its storage is mounted at `mount` (STAGE/in<i> or out<i>) and the
    entry script copies between `rel` under it (beneath the backend's sub-path, see subpath_env) and `path`."""

    kind: str  # in | out
    index: int
    type: str  # FILE | DIRECTORY
    mount: str
    rel: str  # the file's name in the mounted folder ("" for a directory: the folder itself)
    path: str
    prefix: str | None = None  # an output's path_prefix: `path` is a pattern, each match goes to url + its rest

    @property
    def name(self) -> str:
        return f"{self.kind}{self.index}"

    def root(self) -> str:
        """Where the URI's data is, as a shell word ending in '/': the mount, below the backend's sub-path when
        it mounts more."""
        var = subpath_env(self.name)
        return f'"{self.mount}/${{{var}:+${var}/}}"'

    def source(self) -> str:
        """The mounted file (or directory) as a shell word."""
        return self.root() + (shlex.quote(self.rel) if self.rel else "")


def _script(executors: list[dict[str, Any]], inline: list[tuple[str, str]], volumes: list[str],
            staged: list[Staged] | None = None) -> str:
    """The entry script that runs the executors in order in one container: volumes and inline contents made,
    inputs copied from their mounts to their paths before the first executor, outputs copied to their mounts
    after the last, and one MARK line per executor that ran (its exit code, start and end) and per file
    written out, for the task's logs."""
    staged = staged or []
    lines = ["set -u", MARK_FN,
             "tjg_now() { date +%s 2>/dev/null || echo 0; }",
             "tjg_fail() { echo \"tjg: $*\" >&2; tjg_mark stage-failed; exit 1; }",
             # Every executor's result again on one last line, however the script ends: a log read from its
             # end (a preview) has them all even when earlier lines were cut.
             "tjg_codes=''", "trap 'tjg_mark codes $tjg_codes' EXIT"]
    for path in volumes:
        lines.append(f"mkdir -p {shlex.quote(path)}")
    for path, content in inline:
        lines.append(f"mkdir -p {shlex.quote(posixpath.dirname(path) or '/')} && "
                     f"printf '%s' {shlex.quote(content)} > {shlex.quote(path)}")
    for st in (x for x in staged if x.kind == "in"):
        dest = shlex.quote(st.path)
        if st.type == "DIRECTORY":
            lines.append(f"mkdir -p {dest} && cp -R {st.source()}. {dest}/ "
                         f"|| tjg_fail {shlex.quote(f'inputs[{st.index}]: cannot copy the directory to {st.path}')}")
        else:
            lines.append(f"mkdir -p {shlex.quote(posixpath.dirname(st.path) or '/')} && cp {st.source()} {dest} "
                         f"|| tjg_fail {shlex.quote(f'inputs[{st.index}]: cannot copy the file to {st.path}')}")
    for i, ex in enumerate(executors):
        cmd = " ".join(shlex.quote(a) for a in ex["command"])
        env = " ".join(shlex.quote(f"{k}={v}") for k, v in (ex.get("env") or {}).items())  # one argv each
        step = f"env {env} {cmd}" if env else cmd
        if ex.get("workdir"):
            step = f"cd {shlex.quote(ex['workdir'])} && {step}"
        for stream, op in (("stdin", "<"), ("stdout", ">"), ("stderr", "2>")):
            if ex.get(stream):
                step += f" {op} {shlex.quote(ex[stream])}"
        lines.append(f"tjg_s=$(tjg_now); ( {step} ); tjg_rc=$?; tjg_e=$(tjg_now); "
                     f"tjg_mark executor {i} $tjg_rc $tjg_s $tjg_e; tjg_codes=\"$tjg_codes {i}:$tjg_rc:$tjg_s:$tjg_e\"")
        if ex.get("ignore_error"):
            lines.append(f"# executor {i}: ignore_error")
        else:
            lines.append(f"[ $tjg_rc -eq 0 ] || exit $tjg_rc  # executor {i}")
    for st in (x for x in staged if x.kind == "out"):
        lines.extend(_stage_out(st))
    return "\n".join(lines) + "\n"


def _stage_out(st: Staged) -> list[str]:
    """The lines that copy one output to its mount, a MARK line per file (its size and where it went)."""
    into = st.root()
    if st.type == "FILE" and st.prefix is None:
        src = shlex.quote(st.path)
        return [f"[ -f {src} ] || tjg_fail {shlex.quote(f'outputs[{st.index}]: {st.path} was not written')}",
                f"mkdir -p {into} && cp {src} {into}{shlex.quote(st.rel)} "
                f"|| tjg_fail {shlex.quote(f'outputs[{st.index}]: cannot copy {st.path}')}",
                f"tjg_mark output {st.index} $(wc -c < {src}) {shlex.quote(st.rel)}"]
    if st.prefix is None:  # a directory: every file under it, by its path below it
        root = shlex.quote(st.path.rstrip("/") or "/")
        find = f"[ -d {root} ] || tjg_fail {shlex.quote(f'outputs[{st.index}]: {st.path} was not written')}\n" \
               f"find {root} -type f | while IFS= read -r f; do r=${{f#{root}/}}"
    else:  # path_prefix: the files the pattern matches, by their path after the prefix
        pre = shlex.quote(st.prefix.rstrip("/"))
        find = f"for f in {_glob(st.path)}; do [ -f \"$f\" ] || continue; r=${{f#{pre}/}}"
    return [find + f'; mkdir -p "$(dirname {into}"$r")" && cp "$f" {into}"$r" '
            f"|| tjg_fail \"outputs[{st.index}]: cannot copy $f\"; "
            f'tjg_mark output {st.index} $(wc -c < "$f") "$r"; done || exit 1']


def _glob(pattern: str) -> str:
    """A path pattern as a shell word: its wildcards expand, the rest is quoted."""
    return "".join(c if c in "*?[]" else shlex.quote(c) if not c.isalnum() and c not in "/._-" else c
                   for c in pattern)


def _staged(kind: str, i: int, item: dict[str, Any], url: str) -> tuple[Staged, str]:
    """A TES input or output with a URL as a mount of its own (a file's folder, or the directory) and what the
    entry script copies; an output file keeps the name its URL gives it."""
    parts = urlsplit(url)
    is_file = _is_file(item)
    where = parts.path.rstrip("/")
    folder, rel = (posixpath.dirname(where), posixpath.basename(where)) if is_file else (where, "")
    if is_file and not rel:
        raise _bad([f"{kind}puts", i, "url"], "a FILE needs a file name in its URL")
    if parts.scheme == "nfs" and not folder:
        folder = "/"
    uri = f"{parts.scheme}://{parts.netloc}{folder}"
    return Staged(kind, i, "FILE" if is_file else "DIRECTORY", f"{STAGE}/{kind}{i}", rel, item["path"],
                  item.get("path_prefix") if kind == "out" else None), uri


def _is_file(item: dict[str, Any]) -> bool:
    """Whether a TES input or output is one file (not a directory, not an output's path_prefix pattern)."""
    return item.get("type", "FILE") == "FILE" and not item.get("path_prefix")


def _check_shape(task: dict[str, Any]) -> None:
    """Every field the TES schema types has that type (a 400 naming the first that does not), before any
    mapping: the TES request models say what the official OpenAPI says."""
    try:
        TesTask.model_validate(task)
    except pydantic.ValidationError as err:
        loc, msg = first_error(err)
        raise _bad(loc, msg) from None
    for i, ex in enumerate(task.get("executors") or []):
        for name in ex.get("env") or {}:  # they become names in the entry script and the container
            if not ENV_NAME_RE.match(name):
                raise _bad(["executors", i, "env", name], "an environment variable name: letters, digits, "
                           "'_', '.', '-', not starting with a digit")


def backend_parameters(given: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The supported backend_parameters by their names (TES: "Keys are case insensitive"), and the keys given
    that are not supported."""
    params: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in given.items():
        if _supported(key):
            params.setdefault(key.lower(), value)
        else:
            unknown.append(key)
    return params, sorted(unknown)


def _supported(key: str) -> bool:
    return key.lower() in BACKEND_PARAMETERS


def stored_task(task: dict[str, Any]) -> dict[str, Any]:
    """The task as it is kept and read back: the fields TES defines, without explicit nulls (every answer
    must match the TES schema, which allows none) and without unsupported backend_parameters (TES: "Backends
    shall not store or return unsupported keys")."""
    def bare(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: bare(x) for k, x in v.items() if x is not None}
        if isinstance(v, list):
            return [bare(x) for x in v if x is not None]
        return v

    doc: dict[str, Any] = bare({k: v for k, v in task.items() if k in TASK_FIELDS})
    res = doc.get("resources")
    if isinstance(res, dict) and isinstance(res.get("backend_parameters"), dict):
        res["backend_parameters"] = {k: v for k, v in res["backend_parameters"].items() if _supported(k)}
    return doc


def task_to_spec(task: Any, backend: str | None) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """A tesTask as a JobSpec (as JSON) and the TES part of the report. Raises a 400 naming the field for
    what no backend can do."""
    if not isinstance(task, dict):
        raise _bad([], "a task must be a JSON object")
    _check_shape(task)
    report: list[dict[str, str]] = []
    executors = task["executors"]
    images = {ex["image"] for ex in executors}
    if len(images) > 1:
        raise _bad(["executors"], "executors run in order in one container on Run:ai and ModelArts, so they must "
                   f"share one image (got {', '.join(sorted(images))}); split the task or use one image")
    res = task.get("resources") or {}
    params, unknown = backend_parameters(res.get("backend_parameters") or {})
    if unknown and res.get("backend_parameters_strict"):
        raise _bad(["resources", "backend_parameters", unknown[0]],
                   f"not supported (backend_parameters_strict); supported: {', '.join(BACKEND_PARAMETERS)}")
    for k in unknown:
        _note(report, f"resources.backend_parameters.{k}", "dropped",
              f"not a parameter this gateway takes ({', '.join(BACKEND_PARAMETERS)})")

    spec: dict[str, Any] = {"name": job_name(task.get("name")), "backend": params.get("backend") or backend,
                            "image": next(iter(images))}
    if task.get("name") and spec["name"] != task["name"]:
        _note(report, "name", "approximated", f"job name {spec['name']} (the TES name is kept in the task)")
    single = len(executors) == 1 and not any(executors[0].get(k) for k in ("stdin", "stdout", "stderr"))
    inline: list[tuple[str, str]] = []
    staged: list[Staged] = []
    inputs, outputs = [], []
    for i, item in enumerate(task.get("inputs") or []):
        if item.get("content") is not None:
            if len(item["content"]) > MAX_CONTENT:
                raise _bad(["inputs", i, "content"], f"a string of at most {MAX_CONTENT} characters")
            inline.append((item["path"], item["content"]))
            _note(report, f"inputs[{i}].content", "exact", "written to the path by the task's entry script")
            continue
        st, uri = _staged("in", i, item, _data_url(str(item.get("url") or ""), ["inputs", i, "url"]))
        staged.append(st)
        inputs.append({"name": st.name, "uri": uri, "path": st.mount, "read_only": True})
        _note(report, f"inputs[{i}]", "exact", f"{uri} is mounted at {st.mount} and the entry script copies "
              f"{'the directory' if st.type == 'DIRECTORY' else st.rel} to {item['path']} before the first executor")
    for i, item in enumerate(task.get("outputs") or []):
        st, uri = _staged("out", i, item, _data_url(str(item.get("url") or ""), ["outputs", i, "url"]))
        staged.append(st)
        outputs.append({"name": st.name, "uri": uri, "path": st.mount, "read_only": False})
        _note(report, f"outputs[{i}]", "exact", f"{uri} is mounted at {st.mount} and the entry script copies "
              f"{item.get('path')} there after the last executor")
    if inputs:
        spec["inputs"] = inputs
    if outputs:
        spec["outputs"] = outputs
    volumes = [v for v in task.get("volumes") or [] if isinstance(v, str)]
    if volumes:
        _note(report, "volumes", "exact", "directories in the task's one container, shared by its executors")

    if single and not inline and not volumes and not staged:
        ex = executors[0]
        spec["command"] = list(ex["command"])
        if ex.get("workdir"):
            spec["working_dir"] = ex["workdir"]
        if ex.get("env"):
            spec["env"] = dict(ex["env"])
        _note(report, "executors", "exact", "one executor: the job's command, working_dir and env")
    else:
        spec["command"] = ["/bin/sh", "-c", _script(executors, inline, volumes, staged)]
        common = dict(executors[0].get("env") or {})
        for ex in executors[1:]:
            common = {k: v for k, v in common.items() if (ex.get("env") or {}).get(k) == v}
        if common:
            spec["env"] = common  # what every executor shares is the job's environment too
        _note(report, "executors", "exact", f"{len(executors)} executor(s) run in order by an entry script (sh -c) "
              "with each one's workdir, env, stdin/stdout/stderr and ignore_error")

    resources: dict[str, Any] = {}
    if res.get("cpu_cores") is not None:
        resources["cpu"] = res["cpu_cores"]
        _note(report, "resources.cpu_cores", "exact", "resources.cpu")
    if res.get("ram_gb") is not None:
        resources["memory"] = f"{float(res['ram_gb']):.6f}".rstrip("0").rstrip(".") + "G"  # (never 1e+06)
        _note(report, "resources.ram_gb", "exact", "resources.memory (decimal GB)")
    if res.get("disk_gb") is not None:
        _note(report, "resources.disk_gb", "dropped", "neither backend takes a scratch disk size through the gateway")
    if res.get("zones"):
        _note(report, "resources.zones", "dropped", "zones are chosen by the backend; pick one with "
              "backend_parameters.backend or .flavor")
    if res.get("preemptible") is not None:
        spec["preemptible"] = bool(res["preemptible"])
    for key in ("gpus", "gpu_type", "flavor"):
        if params.get(key) is not None:
            resources[key] = params[key]
    if resources:
        spec["resources"] = resources
    for key in ("project", "priority"):
        if params.get(key):
            spec[key] = params[key]

    tags = task.get("tags") or {}
    labels = {}
    for k, v in tags.items():
        if len(k) <= 63 and LABEL_KEY_RE.match(k) and isinstance(v, str) and len(v) <= 63:
            labels[k] = v
        else:
            _note(report, f"tags.{k}", "dropped", "not a valid label (keys: 1-63 letters, digits, -, _, .; "
                  "values up to 63 characters); kept in the task")
    if labels:
        spec["labels"] = labels
        _note(report, "tags", "exact", "labels")
    return spec, report


def tes_state(row: dict[str, Any]) -> str:
    """The TES state of a job: its neutral phase, refined by the vendor's reason when it failed."""
    phase = str(row["phase"])
    status = row["status"] or {}
    if phase != Phase.FAILED.value:
        return STATES.get(phase, "UNKNOWN")
    if row.get("submit_state") == "rejected":
        return "SYSTEM_ERROR"  # the vendor refused the job: nothing of the task ran
    if status.get("reason") in STATE_OF_REASON:
        return STATE_OF_REASON[status["reason"]]
    if PREEMPTED.search(str(status.get("message") or "")):
        return "PREEMPTED"
    if status.get("vendor_phase") in PLATFORM_FAILURES:
        return "SYSTEM_ERROR"
    code = status.get("exit_code")
    return "EXECUTOR_ERROR" if code is None or code != 0 else "SYSTEM_ERROR"


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    when = dt(value) if isinstance(value, int | float) else value
    return when.isoformat() if isinstance(when, datetime) else str(when)


def _executors_of(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The executors of a job submitted through /v1: its image, command + args, working_dir and env."""
    spec = row["spec"] or {}
    ex: dict[str, Any] = {"image": spec.get("image") or "", "command": [*(spec.get("command") or []),
                                                                        *(spec.get("args") or [])]}
    if spec.get("working_dir"):
        ex["workdir"] = spec["working_dir"]
    if spec.get("env"):
        ex["env"] = spec["env"]
    return [ex]


def _document(row: dict[str, Any]) -> dict[str, Any]:
    """The task as it was sent (TES jobs) or as a /v1 job reads as one."""
    if row.get("tes_task"):
        return copy.deepcopy(dict(row["tes_task"]))  # rows may be the store's kept objects
    spec = row["spec"] or {}
    doc: dict[str, Any] = {"name": spec.get("name") or row["name"], "executors": _executors_of(row)}
    res = spec.get("resources") or {}
    resources: dict[str, Any] = {"backend_parameters": {"backend": row["backend"]}}
    if res.get("cpu") is not None:
        resources["cpu_cores"] = max(1, int(res["cpu"]))
    if spec.get("preemptible") is not None:
        resources["preemptible"] = spec["preemptible"]
    doc["resources"] = resources
    if row.get("labels"):
        doc["tags"] = dict(row["labels"])
    for key in ("inputs", "outputs"):
        if spec.get(key):
            doc[key] = [{"name": m["name"], "url": m["uri"], "path": m.get("path") or f"/mnt/{key}/{m['name']}",
                         "type": "DIRECTORY"} for m in spec[key]]
    return doc


async def _task(svc: JobService, who: Principal, row: dict[str, Any], view: str, stdout: bool = False,
                phases: list[tuple[float, str]] | None = None,
                ended_attempts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A job as a tesTask in the given view; `phases` are its phase changes when the caller read them already
    (a list reads a whole page's in one query). With `stdout` (one task's GET) an ended task's log is read
    from the backend once: its entry script's MARK lines give each executor's exit code and the outputs."""
    state = tes_state(row)
    doc = _document(row)
    if view == "MINIMAL":
        # The view names id and state; tesTask also requires executors, and every answer must match the schema.
        return {"id": row["id"], "state": state, "executors": doc["executors"]}
    task: dict[str, Any] = {**{k: v for k, v in doc.items() if k not in ("id", "state", "logs", "creation_time")},
                            "id": row["id"], "state": state, "creation_time": _iso(row["created_at"])}
    if view == "BASIC":
        for item in task.get("inputs") or []:
            item.pop("content", None)
    if phases is None:
        phases = (await svc.store.events.phases_of([row["id"]])).get(row["id"], [])
    if ended_attempts is None:
        ended_attempts = (await svc.store.attempts.of([row["id"]])).get(row["id"], []) \
            if int(row.get("attempt") or 1) > 1 else []
    read, said = None, None
    if stdout and row["terminal"] and row["backend_job_id"] and (view == "FULL" or _scripted(row)):
        read, said = await _read_log(svc, who, row)  # (BASIC needs it only for the script's lines)
    results = results_of(read) if read is not None else None
    if results is not None and results.stage_failed and state == "EXECUTOR_ERROR":
        task["state"] = "SYSTEM_ERROR"  # an input or output could not be copied: not the executors' doing
    # One TesTaskLog per attempt (as TES means `logs`: "each attempt of the task"), oldest first.
    windows = attempt_windows(row, ended_attempts, time.time())
    last = len(windows) - 1
    logs = [_attempt_log(row, doc, a, [p for p in phases if (i == 0 or lo <= p[0]) and (i == last or p[0] <= hi)],
                         view, last=i == last, results=results if i == last else None)
            for i, (a, lo, hi) in enumerate(windows)]
    log = logs[-1]
    if view == "FULL" and said is not None:
        log["system_logs"].append(f"stdout: {said}")
    if view == "FULL" and read is not None and log["logs"]:
        program = [line for line in read.splitlines() if not MARK_LINE.match(line)]
        log["logs"][-1]["stdout"] = "".join(line + "\n" for line in program[-200:])
    task["logs"] = logs
    return task


async def _read_log(svc: JobService, who: Principal, row: dict[str, Any]) -> tuple[str | None, str | None]:
    """An ended job's log as the backend keeps it (read once per job and kept), or why there is none."""
    key = (row["id"], int(row.get("attempt") or 1))
    if key in _LOGS:
        return _LOGS[key], None
    try:
        content = str((await svc.logs(who, row["id"], None, None))["content"])
    except GatewayError as err:  # Run:ai has no log endpoint; say why instead
        return None, err.detail
    if len(_LOGS) >= 256:
        _LOGS.pop(next(iter(_LOGS)))
    _LOGS[key] = content
    return content, None


UNREAD = "none were read (the backend gives no log, as Run:ai, or its log has none of them)"
_LOGS: dict[tuple[str, int], str] = {}  # ended tasks' logs: a GET of one reads the vendor once, not every time
MARK_LINE = re.compile(r"^(?:\[[^\]]*\]\s*)*tjg:v1 (?:executor (\d+) (-?\d+) (\d+) (\d+)|output (\d+) (\d+) (.+)|"
                       r"(stage-failed)|codes((?: \d+:-?\d+:\d+:\d+)*))\s*$")


@dataclass
class Results:
    """What an entry script's MARK lines said: each executor that ran (exit code, start, end: epoch seconds,
    0 when the image has no `date`) and each file copied out (output index, size, path below the output)."""

    executors: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    outputs: list[tuple[int, int, str]] = field(default_factory=list)
    stage_failed: bool = False


def results_of(text: str) -> Results | None:
    """The MARK lines of a log, or None when it has none (a task before them, or a log cut short)."""
    res, found = Results(), False
    for line in text.splitlines():
        m = MARK_LINE.match(line)
        if m is None:
            continue
        found = True
        if m.group(1) is not None:
            res.executors[int(m.group(1))] = (int(m.group(2)), int(m.group(3)), int(m.group(4)))
        elif m.group(5) is not None:
            res.outputs.append((int(m.group(5)), int(m.group(6)), m.group(7)))
        elif m.group(8) is not None:
            res.stage_failed = True
        else:  # the last line: every executor that ran
            for item in m.group(9).split():
                i, rc, t0, t1 = (int(x) for x in item.split(":"))
                res.executors[i] = (rc, t0, t1)
    if found and sorted(res.executors) != list(range(len(res.executors))):
        res.executors = {}  # a log cut short: the first executors' lines are gone, and logs are by position
    return res if found else None


def _scripted(row: dict[str, Any]) -> bool:
    """Whether the job runs an entry script that writes MARK lines."""
    cmd = (row["spec"] or {}).get("command") or []
    return len(cmd) == 3 and cmd[:2] == ["/bin/sh", "-c"] and MARK_FN in str(cmd[2])


def _executor_logs(row: dict[str, Any], doc: dict[str, Any], code: int | None, started: float | None,
                   ended: float | None, results: Results | None, notes: list[str]) -> list[dict[str, Any]]:
    """One TesExecutorLog per executor that ran, in order: from the MARK lines when the log was read; else
    what the task's exit code tells (every executor before an unknown one), the rest said in `notes`."""
    if results is not None and results.executors:
        out = []
        for i in sorted(results.executors):
            rc, t0, t1 = results.executors[i]
            entry: dict[str, Any] = {"exit_code": rc}
            if t0 and t1:
                entry["start_time"], entry["end_time"] = _iso(float(t0)), _iso(float(t1))
            out.append(entry)
        return out
    if code is None:
        return []
    executors = doc.get("executors") or []
    if len(executors) <= 1 or not _scripted(row):  # the job's exit code is the executor's
        entry = {"exit_code": int(code)}
        if started is not None:
            entry["start_time"] = _iso(started)
        if ended is not None:
            entry["end_time"] = _iso(ended)
        return [entry]
    known: list[dict[str, Any]] = []
    if code == 0:  # every executor ran; those without ignore_error exited 0
        for i, ex in enumerate(executors):
            if ex.get("ignore_error"):
                notes.append(f"executors[{i}:] ran; executor {i} has ignore_error, so its exit code (and the "
                             f"next ones') is known only from the entry script's lines in the task's log: {UNREAD}")
                break
            known.append({"exit_code": 0})
        return known
    notes.append(f"the task's entry script exited {code}: an executor without ignore_error failed, or an input "
                 f"or output could not be copied; which one is known only from the entry script's lines in the "
                 f"task's log: {UNREAD}")
    return known


def _output_logs(doc: dict[str, Any], results: Results | None) -> list[dict[str, Any]]:
    """One TesOutputFileLog per file the entry script copied out (from its MARK lines)."""
    if results is None:
        return []
    outs = doc.get("outputs") or []
    got = []
    for i, size, rel in results.outputs:
        if i >= len(outs):
            continue
        o = outs[i]
        if _is_file(o):
            url, path = o["url"], o["path"]
        else:
            url = f"{str(o['url']).rstrip('/')}/{rel}"
            path = f"{str(o.get('path_prefix') or o['path']).rstrip('/')}/{rel}"
        got.append({"url": url, "path": path, "size_bytes": str(size)})
    return got


def _attempt_log(row: dict[str, Any], doc: dict[str, Any], attempt: dict[str, Any], phases: list[tuple[float, str]],
                 view: str, last: bool, results: Results | None = None) -> dict[str, Any]:
    """The TesTaskLog of one attempt: its times, its executors' exit codes once it ended, the files it wrote
    out, its vendor job."""
    started = next((at for at, to in phases if to in ("STARTING", "RUNNING")), None)
    ended = next((at for at, to in reversed(phases) if to in ("SUCCEEDED", "FAILED", "CANCELLED")), None)
    status = attempt["status"] or {}
    done = bool(row["terminal"]) or not last
    if not last:  # an earlier attempt ended when the next began, whatever phase the job then showed
        ended = ended if ended is not None else float(attempt["ended_at"])
    notes: list[str] = []
    code = status.get("exit_code")
    log: dict[str, Any] = {"logs": _executor_logs(row, doc, code, started, ended, results, notes) if done else [],
                           "outputs": _output_logs(doc, results) if done else [],
                           "metadata": {"backend": attempt["backend"], "gateway_job_id": row["id"],
                                        **({"attempt": str(attempt["n"])} if row.get("retry") or not last
                                           or int(attempt["n"]) > 1 else {}),
                                        **({"vendor_job_id": attempt["backend_job_id"]} if attempt["backend_job_id"]
                                           else {}),
                                        **({"vendor_phase": status["vendor_phase"]} if status.get("vendor_phase")
                                           else {})}}
    if done and results is None and doc.get("outputs") and row["phase"] == "SUCCEEDED" and last:
        notes.append("outputs: copied to their URLs; which files and their sizes are known only from the entry "
                     f"script's lines in the task's log: {UNREAD}")
    if started is not None:
        log["start_time"] = _iso(started)
    if ended is not None:
        log["end_time"] = _iso(ended)
    if view == "FULL":
        more = [f"{e['outcome']}: {e['field']}: {e['detail']}" for e in row["report"] or []
                if e.get("outcome") in ("dropped", "approximated")] if last else []
        if status.get("message"):
            more.append(f"{status.get('vendor_phase') or status.get('phase') or row['phase']}: {status['message']}")
        if status.get("reason"):
            more.append(f"reason: {status['reason']}" + (f": {status['reason_message']}"
                                                         if status.get("reason_message") else ""))
        log["system_logs"] = more + notes
    return log


def _view(request: web.Request) -> str:
    view = (request.query.get("view") or "MINIMAL").upper()
    if view not in VIEWS:
        raise BadRequest(f"view must be one of {', '.join(VIEWS)}", errors=[{"loc": ["query", "view"],
                                                                             "msg": "unknown view"}])
    return view


def _storage(request: web.Request) -> list[str]:
    """The URL schemes some configured backend can stage (each task is refused where its backend cannot)."""
    svc = request.app[SERVICE]
    have = {s for b in request.app[CONFIG].backends for s in svc.adapter(b.name).storage}
    return [f"{s}://" for s in SCHEMES if s in have]


async def service_info(request: web.Request) -> web.Response:
    """GET /service-info."""
    return reply({
        "id": "dev.trainjob-gateway.tes", "name": "trainjob-gateway (GA4GH TES over Run:ai and ModelArts)",
        "type": {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"},
        "description": "Runs TES tasks on NVIDIA Run:ai and Huawei ModelArts; pick one with "
                       "resources.backend_parameters.backend.",
        "organization": {"name": "trainjob-gateway", "url": "https://github.com/trainjob-gateway"},
        "version": __version__, "storage": _storage(request),
        "tesResources_backend_parameters": list(BACKEND_PARAMETERS),
        "documentationUrl": f"{request.url.origin()}/openapi.json",
        "environment": "backends: " + ", ".join(b.name for b in request.app[CONFIG].backends),
    })


async def create_task(request: web.Request) -> web.Response:
    """POST /tasks: submit the task as a gateway job (exactly once, as /v1)."""
    only_query(request)
    svc, who = request.app[SERVICE], request[PRINCIPAL]
    task = await read_json(request)
    spec, notes = task_to_spec(task, request.app[CONFIG].default_backend(who.tenant))
    doc = stored_task(task)  # what a client sent, in the spec's terms
    try:
        res = await svc.submit(who, spec, False, request.headers.get("Idempotency-Key"), tes_task=doc,
                               extra_report=_entries(notes), fingerprint={"tes": task},
                               keep=("inputs", "outputs"))
    except BadRequest as err:
        raise _as_tes_field(err, spec) from None
    return reply({"id": res.job.id})


def _as_tes_field(err: BadRequest, spec: dict[str, Any]) -> BadRequest:
    """A refusal naming a mount of the job (inputs[k]) as one naming the TES field it came from (the mount
    in<i> / out<i> is the task's inputs[i] / outputs[i])."""
    loc = (err.errors or [{}])[0].get("loc") or []
    if len(loc) >= 3 and loc[1] in ("inputs", "outputs") and str(loc[2]).isdigit():
        name = str(spec[loc[1]][int(loc[2])]["name"])
        detail = str(err.detail)
        index = int(re.sub(r"\D", "", name))  # the mount in<i> / out<i>
        return _bad([str(loc[1]), index], detail.split(": ", 1)[1] if ": " in detail else detail)
    return err


def _entries(notes: list[dict[str, str]]) -> list[ReportEntry]:
    return [ReportEntry.model_validate(n) for n in notes]


async def get_task(request: web.Request) -> web.Response:
    """GET /tasks/{id}."""
    only_query(request, "view")
    svc, who = request.app[SERVICE], request[PRINCIPAL]
    view = _view(request)
    row = await svc.row(who, request.match_info["id"])
    return reply(await _task(svc, who, row, view, stdout=True))


async def list_tasks(request: web.Request) -> web.Response:
    """GET /tasks: newest first, with name_prefix, state, tag_key/tag_value filters and page tokens."""
    only_query(request, "name_prefix", "state", "tag_key", "tag_value", "page_size", "page_token", "view")
    svc, who = request.app[SERVICE], request[PRINCIPAL]
    view = _view(request)
    state = request.query.get("state")
    if state is not None and state not in PHASES_OF:
        raise BadRequest(f"unknown state {state!r}", errors=[{"loc": ["query", "state"], "msg": "unknown state"}])
    keys, values = request.query.getall("tag_key", []), request.query.getall("tag_value", [])
    if len(values) > len(keys):
        raise BadRequest("tag_value without its tag_key", errors=[{"loc": ["query", "tag_value"],
                                                                  "msg": "more values than keys"}])
    # Tags as given (any key, any value); an empty value matches any value. The name prefix is matched
    # case-sensitively against the task's name as given: an unnamed task matches no prefix.
    tags = [(k, values[i] if i < len(values) and values[i] else None) for i, k in enumerate(keys)]
    prefix = request.query.get("name_prefix")
    f = ListFilters(phases=list(PHASES_OF[state]) if state else [], tes_tags=tags,
                    tes_name_prefix=prefix if prefix else None)
    size = qint(request, "page_size", 256, 1, 2048)
    jobs, token = await svc.list_rows(who, f, size, request.query.get("page_token") or None)
    rows = [row for row in jobs if state is None or tes_state(row) == state]
    # One query for the whole page's phase changes, however many tasks it holds.
    changes = await svc.store.events.phases_of([r["id"] for r in rows]) if view != "MINIMAL" else {}
    retried = [r["id"] for r in rows if int(r.get("attempt") or 1) > 1]
    earlier = await svc.store.attempts.of(retried) if retried and view != "MINIMAL" else {}
    slices = Slices()
    tasks = []
    for row in rows:
        tasks.append(await _task(svc, who, row, view, phases=changes.get(row["id"], []),
                                 ended_attempts=earlier.get(row["id"], [])))
        await slices.turn()
    return await reply_list("tasks", tasks, dumps, {"next_page_token": token} if token else None)


async def cancel_task(request: web.Request) -> web.Response:
    """POST /tasks/{id}:cancel (a task that has ended stays as it is)."""
    only_query(request)
    svc, who = request.app[SERVICE], request[PRINCIPAL]
    try:
        await svc.cancel(who, request.match_info["id"])
    except Conflict:
        row = await svc.row(who, request.match_info["id"])
        if not row["terminal"]:
            raise
    return reply({})


def add_routes(r: web.UrlDispatcher) -> None:
    """The TES 1.1 routes."""
    r.add_get(f"{PREFIX}/service-info", service_info)
    r.add_post(f"{PREFIX}/tasks", create_task)
    r.add_get(f"{PREFIX}/tasks", list_tasks)
    r.add_post(PREFIX + "/tasks/{id:[^/:]+}:cancel", cancel_task)
    r.add_get(PREFIX + "/tasks/{id:[^/:]+}", get_task)
