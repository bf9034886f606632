"""Client commands of `tjg`: submit, list, get, wait, cancel, suspend, resume, events, delete, logs,
migrate, backends."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Awaitable
from typing import Any

from gateway.cli.output import JOB_FAILED, OK, UsageError, emit, is_tty
from gateway.core.errors import GatewayError, GatewayUnreachable, ValidationError
from gateway.wire import GatewayClient

COLUMNS = (("ID", "id"), ("NAME", "name"), ("BACKEND", "backend"), ("PHASE", "phase"), ("VENDOR", "vendor"),
           ("AGE", "age"), ("ORIGIN", "origin"))


def _age(created: str) -> str:
    from datetime import UTC, datetime

    try:
        secs = (datetime.now(UTC) - datetime.fromisoformat(created)).total_seconds()
    except ValueError:
        return "?"
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= n:
            return f"{int(secs // n)}{unit}"
    return f"{int(secs)}s"


WIDE = (*COLUMNS, ("REASON", "reason"), ("EXIT", "exit"), ("GPU%", "gpu_util"), ("IDLE", "idle"),
        ("ATTEMPT", "attempt"), ("KIND", "kind"), ("PROJECT", "project"), ("VENDOR ID", "vendor_id"),
        ("LABELS", "labels"), ("ENDPOINT", "endpoint"))


def _row(job: dict[str, Any]) -> dict[str, str]:
    st = job.get("status") or {}
    phase = st.get("phase", "?") + ("*" if st.get("stale") else "") + (" (deleted)" if job.get("deleted") else "")
    return {"id": job["id"], "name": job["name"], "backend": job["backend"], "phase": phase,
            "vendor": str(st.get("vendor_phase") or "-"), "age": _age(job["created_at"]),
            "origin": job.get("origin", "gateway"), "project": str(job.get("project") or "-"),
            "vendor_id": str(job.get("backend_job_id") or "-"), "kind": str(job.get("kind") or "training"),
            "endpoint": str(st.get("endpoint") or "-"), "reason": str(st.get("reason") or "-"),
            "exit": "-" if st.get("exit_code") is None else str(st["exit_code"]),
            "gpu_util": "-" if st.get("gpu_utilization") is None else f"{float(st['gpu_utilization']):.0f}",
            "idle": "idle" if st.get("idle") else "-", "attempt": str(job.get("attempt") or 1),
            "labels": ",".join(f"{k}={v}" for k, v in (job.get("labels") or {}).items()) or "-"}


COLOURS = {"RUNNING": "32", "SUCCEEDED": "34", "FAILED": "31", "QUEUED": "33", "STARTING": "33",
           "SUSPENDED": "35", "SUSPENDING": "35", "CANCELLED": "2", "CANCELLING": "2"}


def colour_on() -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (https://no-color.org)."""
    return is_tty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _paint(key: str, text: str) -> str:
    code = COLOURS.get(text.split("*")[0].split(" ")[0].strip()) if key == "phase" else None
    return f"\033[{code}m{text}\033[0m" if code else text


def table(rows: list[dict[str, str]], columns: tuple[tuple[str, str], ...] = COLUMNS) -> str:
    """Aligned columns, header first; phases coloured on a terminal."""
    widths = [max([len(h)] + [len(r[k]) for r in rows]) for h, k in columns]
    paint = colour_on()
    lines = ["  ".join(h.ljust(w) for (h, _), w in zip(columns, widths, strict=True)).rstrip()]
    for r in rows:
        cells = [(_paint(k, r[k].ljust(w)) if paint else r[k].ljust(w)) for (_, k), w in zip(columns, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def show_job(job: dict[str, Any]) -> str:
    """A job, human-readable."""
    st = job.get("status") or {}
    out = [f"id:           {job['id']}", f"name:         {job['name']}",
           f"backend:      {job['backend']}  (vendor id {job.get('backend_job_id') or '-'}, "
           f"name {job.get('vendor_name') or '-'})",
           f"phase:        {st.get('phase')}{' (terminal)' if st.get('terminal') else ''}"
           f"{' [stale]' if st.get('stale') else ''}{' [degraded]' if st.get('degraded') else ''}",
           f"vendor phase: {st.get('vendor_phase') or '-'}"
           + (f" / {st['vendor_secondary_phase']}" if st.get("vendor_secondary_phase") else ""),
           f"message:      {st.get('message') or '-'}",
           *([f"reason:       {st.get('reason') or '-'}"
              + (f" ({st['reason_message']})" if st.get("reason_message") else "")
              + (f"; waiting since {st['pending_since']}" if st.get("pending_since") else "")]
             if st.get("reason") or st.get("pending_since") else []),
           *([f"exit code:    {st['exit_code']}"] if st.get("exit_code") not in (None, 0) else []),
           *([f"GPU util:     {float(st['gpu_utilization']):.0f}% mean"
              + (f"; idle since {st['idle_since']}" if st.get("idle") else "")]
             if st.get("gpu_utilization") is not None or st.get("idle") else []),
           f"created:      {job['created_at']}",
           *([f"kind:         inference, {st.get('ready_replicas') if st.get('ready_replicas') is not None else '?'}"
              f"/{st.get('desired_replicas') if st.get('desired_replicas') is not None else '?'} replicas ready",
              f"endpoint:     {st.get('endpoint') or '-'}"] if job.get("kind") == "inference" else []),
           *([f"deleted:      yes (updated {job['updated_at']})"] if job.get("deleted") else []),
           f"labels:       {', '.join(f'{k}={v}' for k, v in (job.get('labels') or {}).items()) or '-'}"]
    for key in ("migrated_from", "migrated_to"):
        if job.get(key):
            out.append(f"{key}: {job[key]}")
    placed = job.get("placement")
    if placed:
        out.append(f"placed:       {placed['chosen']} by {placed['policy']}: {placed['why']}")
        out += [f"  {c['backend']}: {'can run it' if c['feasible'] else 'cannot'} - {c['why']}"
                + (f"; {c['price_per_hour']:g}/h" if c.get("price_per_hour") is not None else "")
                for c in placed["candidates"]]
    tries = job.get("attempts") or []
    if tries:
        spent = st.get("retry_outcome")
        out.append(f"attempts:     {len(tries)}" + (f" (no more: {spent})" if spent else ""))
        for a in tries:
            how = (a.get("phase") or "?") + (f" ({a['reason']})" if a.get("reason") else "") + \
                (f", exit {a['exit_code']}" if a.get("exit_code") is not None else "")
            out.append(f"  #{a['n']} {a['backend']} {a.get('vendor_name') or '-'}: {how}, "
                       f"{a.get('gpu_hours') or 0:.4f} GPU-h, {a['started_at']} -> {a.get('ended_at') or 'now'}")
    lossy = [e for e in job.get("report") or [] if e["outcome"] in ("approximated", "dropped")]
    if lossy:
        out.append("translation notes:")
        out += [f"  {e['field']}: {e['outcome']} - {e['detail']}" for e in lossy]
    return "\n".join(out)


def _gpus(v: Any) -> str:
    return "?" if v is None else f"{float(v):g}"


def show_why(res: dict[str, Any]) -> str:
    """`tjg why`: the reason, since when, the capacity seen on every backend, and what would help."""
    out = [f"{res['job_id']} ({res['name']}): {res['summary']}"]
    if res.get("reason"):
        out.append(f"reason:   {res['reason']}" + (f" - {res['reason_message']}" if res.get("reason_message") else ""))
    if res.get("since"):
        out.append(f"since:    {res['since']} ({res.get('waiting_seconds', '?')} s)")
    asks = res.get("asks") or {}
    out.append(f"asks:     {_gpus(asks.get('gpus'))} {asks.get('gpu_type') or ''} GPU(s) on {asks.get('nodes', 1)} "
               f"node(s), priority {asks.get('priority')}")
    rows = [{"backend": c["backend"], "free": _gpus(c.get("free_gpus")), "total": _gpus(c.get("total_gpus")),
             "queued": str(c.get("queued_jobs") if c.get("queued_jobs") is not None else "?"),
             "age": "never read" if c.get("age_seconds") is None else f"{c['age_seconds']:g} s",
             "note": c.get("error") or ""} for c in res.get("capacity") or []]
    if rows:
        out += ["", f"capacity for {asks.get('gpu_type') or 'any'} GPUs, as last seen:",
                table(rows, (("BACKEND", "backend"), ("FREE", "free"), ("TOTAL", "total"), ("QUEUED", "queued"),
                             ("AGE", "age"), ("NOTE", "note")))]
    hints = res.get("suggestions") or []
    if hints:
        out += ["", "what would help:", *[f"  - {h}" for h in hints]]
    return "\n".join(out)


def show_capacity(caps: list[dict[str, Any]]) -> str:
    """`tjg backends --capacity`: pools and quotas of each backend, with the figures' age."""
    out: list[str] = []
    for c in caps:
        age = "never read yet" if c.get("age_seconds") is None else f"read {c['age_seconds']:g} s ago"
        out.append(f"{c['backend']}: {age}; {c.get('queued_jobs') or 0} of your jobs queued there"
                   + (f"; last read failed: {c['error']}" if c.get("error") else ""))
        rows = [{"pool": p["pool"], "type": p.get("gpu_type") or "-", "free": _gpus(p.get("free_gpus")),
                 "total": _gpus(p.get("total_gpus")), "queued": str(p["queued"]) if p.get("queued") is not None
                 else "-"} for p in c.get("pools") or []]
        if rows:
            out.append(table(rows, (("POOL", "pool"), ("GPU TYPE", "type"), ("FREE", "free"), ("TOTAL", "total"),
                                    ("QUEUED", "queued"))))
        q = [{"project": x["project"], "pool": x["pool"], "deserved": _gpus(x.get("deserved_gpus")),
              "used": _gpus(x.get("used_gpus")), "requested": _gpus(x.get("requested_gpus"))}
             for x in c.get("quotas") or []]
        if q:
            out.append(table(q, (("PROJECT", "project"), ("POOL", "pool"), ("DESERVED", "deserved"),
                                 ("USED", "used"), ("REQUESTED", "requested"))))
        out.append("")
    return "\n".join(out).rstrip() or "no backend reports its capacity"


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 24) -> str:
    """The last `width` values as block characters, scaled between their min and max."""
    vs = values[-width:]
    if not vs:
        return ""
    lo, hi = min(vs), max(vs)
    return "".join(SPARKS[0 if hi == lo else int((v - lo) / (hi - lo) * (len(SPARKS) - 1))] for v in vs)


def _amount(value: float, unit: str) -> str:
    if unit == "bytes":
        for suffix, size in (("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
            if abs(value) >= size:
                return f"{value / size:.1f}{suffix}"
        return f"{value:.0f}B"
    return f"{value:.1f}%"


def show_metrics(res: dict[str, Any]) -> str:
    """`tjg metrics` as a table of series and the backend's notes."""
    rows = []
    for s in res["series"]:
        vs = [float(p[1]) for p in s["points"]]
        unit = str(s["unit"])
        figures = {k: _amount(v, unit) if vs else "-" for k, v in (
            ("latest", vs[-1] if vs else 0.0), ("min", min(vs, default=0.0)),
            ("avg", sum(vs) / len(vs) if vs else 0.0), ("max", max(vs, default=0.0)))}
        rows.append({"metric": s["name"], **figures, "points": str(len(vs)), "trend": sparkline(vs)})
    text = table(rows, (("METRIC", "metric"), ("LATEST", "latest"), ("MIN", "min"), ("AVG", "avg"), ("MAX", "max"),
                        ("POINTS", "points"), ("TREND", "trend"))) if rows else "no metrics yet"
    notes = [f"  {n['name']}: {n['outcome']} - {n['detail']}" for n in res["report"] if n["outcome"] != "exact"]
    return text + ("\n" + f"{res['backend']} says:\n" + "\n".join(notes) if notes else "")


def show_usage(res: dict[str, Any]) -> str:
    """`tjg usage` as a table with a total row."""
    def row(key: str, f: dict[str, Any]) -> dict[str, str]:
        util = f.get("avg_gpu_utilization")
        return {"key": key, "jobs": str(f["jobs"]), "gpu_hours": f"{f['gpu_hours']:.3f}",
                "util": "-" if util is None else f"{util:.1f}%",
                "cost": f"{f['cost']:.2f} {res['currency']}" + (" +unpriced" if f["unpriced_gpu_hours"] else "")}
    rows = [row(g["key"], g) for g in res["groups"]] + [row("TOTAL", res["total"])]
    return table(rows, ((res["group_by"].upper(), "key"), ("JOBS", "jobs"), ("GPU-HOURS", "gpu_hours"),
                        ("AVG GPU", "util"), ("COST", "cost")))


FULL_ID = re.compile(r"[0-9a-f]{32}")


def resolve_id(client: GatewayClient, ref: str) -> str:
    """A job given by its id, a unique prefix of its id, or its unique name (as docker and sky take them); a
    usage error names the candidates when there are several, and one that matches nothing is asked for as it
    is (the gateway's 404 says it)."""
    if FULL_ID.fullmatch(ref):
        return ref
    by_id = client.call("GET", "/v1/jobs", params=[("id_prefix", ref), ("limit", "3"), ("deleted", "true")])["jobs"] \
        if re.fullmatch(r"[0-9a-f]{1,31}", ref) else []
    if len(by_id) == 1:
        return str(by_id[0]["id"])
    named = [j for j in client.call("GET", "/v1/jobs", params=[("name_prefix", ref), ("limit", "500"),
                                                               ("deleted", "true")])["jobs"] if j["name"] == ref]
    live = [j for j in named if not j.get("deleted")]
    if len(named) == 1 or len(live) == 1:
        return str((live or named)[0]["id"])
    if by_id or named:
        ids = ", ".join(f"{j['id']} ({j['name']})" for j in (by_id or named)[:5])
        raise UsageError(f"{ref!r} matches more than one job: {ids}; give more of the id")
    return ref  # no match: the gateway says so (404), as for any id


def run(args: argparse.Namespace, client: GatewayClient) -> int:
    """Dispatch one client command; returns the exit code."""
    cmd = args.client_command
    out = args.output
    if getattr(args, "id", None):
        args.id = resolve_id(client, args.id)
    if cmd == "submit":
        return _submit(args, client)
    if cmd == "list":
        return _list(args, client)
    if cmd == "get":
        if args.watch:
            return _watch(client, args.id, out)
        job = client.call("GET", f"/v1/jobs/{args.id}")
        emit(job, out, lambda: show_job(job))
        return OK
    if cmd == "wait":
        return _watch(client, args.id, out, quiet=True)
    if cmd in ("cancel", "suspend", "resume"):
        job = client.call("POST", f"/v1/jobs/{args.id}/{cmd}")
        emit(job, out, lambda: f"{job['id']}: {job['status']['phase']}")
        return OK
    if cmd == "migrate":
        return _migrate(args, client)
    if cmd == "logs" and args.follow:
        return _follow_logs(client, args)
    if cmd == "logs":
        params = {k: str(v) for k, v in (("task", args.task), ("tail", args.tail)) if v is not None}
        res = client.call("GET", f"/v1/jobs/{args.id}/logs", params=params)
        emit(res, out, lambda: res["content"].rstrip("\n"))
        return OK
    if cmd == "delete":
        job = client.call("GET", f"/v1/jobs/{args.id}")
        if job.get("deleted"):
            print(f"{args.id}: already deleted", file=sys.stderr)
            return OK
        client.call("DELETE", f"/v1/jobs/{args.id}")
        print(f"{args.id}: deleted (the record stays: tjg get {args.id})")
        return OK
    if cmd == "events":
        evs = client.call("GET", f"/v1/jobs/{args.id}/events")["events"]
        rows = [{"seq": str(e.get("seq") or "-"), "at": str(e.get("at") or "-"),
                 "from": str(e.get("from_phase") or "-"), "to": str(e.get("to_phase") or e.get("reason") or "-"),
                 "vendor": str(e.get("vendor_phase") or e.get("type") or "-"), "source": str(e["source"]),
                 "reason": str(e.get("reason") or "-") if e.get("kind") != "vendor" else "-",
                 "message": str(e.get("message") or "")} for e in evs]
        emit(evs, out, lambda: table(rows, (("SEQ", "seq"), ("AT", "at"), ("FROM", "from"), ("TO", "to"),
                                            ("VENDOR", "vendor"), ("REASON", "reason"), ("SOURCE", "source"),
                                            ("MESSAGE", "message"))))
        return OK
    if cmd == "scale":
        job = client.call("POST", f"/v1/jobs/{args.id}/scale", body={"replicas": args.replicas})
        emit(job, out, lambda: f"{job['id']}: scaling to {args.replicas} replica(s); "
                               f"{job['status'].get('ready_replicas') or 0} ready now")
        return OK
    if cmd == "metrics":
        params = {k: v for k, v in (("names", args.names), ("since", args.since)) if v}
        res = client.call("GET", f"/v1/jobs/{args.id}/metrics", params=params)
        emit(res, out, lambda: show_metrics(res))
        return OK
    if cmd == "usage":
        params = {k: v for k, v in (("group_by", args.group_by), ("since", args.since), ("until", args.until)) if v}
        res = client.call("GET", "/v1/usage", params=params)
        emit(res, out, lambda: show_usage(res))
        return OK
    if cmd == "why":
        res = client.call("GET", f"/v1/jobs/{args.id}/why")
        emit(res, out, lambda: show_why(res))
        return OK
    if cmd == "backends" and args.capacity:
        bs = client.call("GET", "/v1/backends")
        caps = [client.call("GET", f"/v1/backends/{b['name']}/capacity") for b in bs
                if (b.get("capabilities") or {}).get("capacity") is True]
        emit(caps, out, lambda: show_capacity(caps))
        return OK
    if cmd == "backends":
        bs = client.call("GET", "/v1/backends")
        def cannot(caps: dict[str, Any] | None) -> str:
            return ", ".join(k for k, v in (caps or {}).items() if v is not True) or "-"

        # What each backend cannot do, per kind of workload: scaling, say, is for inferences only, and a
        # backend that cannot pause a training may pause an inference.
        rows = [{"name": b["name"], "kind": b["kind"], "healthy": "yes" if b.get("healthy") else "no",
                 "circuit": str(b.get("circuit", "-")), "url": str(b.get("url", "-")),
                 "cannot": cannot(b.get("capabilities")), "cannot_inf": cannot(b.get("inference_capabilities"))}
                for b in bs]
        emit(bs, out, lambda: table(rows, (("NAME", "name"), ("KIND", "kind"), ("HEALTHY", "healthy"),
                                           ("CIRCUIT", "circuit"), ("URL", "url"), ("TRAININGS CANNOT", "cannot"),
                                           ("INFERENCES CANNOT", "cannot_inf"))))
        return OK
    raise UsageError(f"unknown command {cmd}")


def _submit(args: argparse.Namespace, client: GatewayClient) -> int:
    from gateway.cli.specfile import read_spec_file  # (YAML: only a submit reads a file)

    try:
        raw = read_spec_file(args.spec)
    except ValidationError as err:
        raise UsageError(f"submit: {err.detail}") from None
    if args.backend:
        raw["backend"] = args.backend
    params = {"dry_run": "true"} if args.dry_run else {}
    if args.strict:
        params["strict"] = "true"
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
    backend = str(raw.get("backend") or "the backend")
    res = asyncio.run(_progress(client.acall("POST", "/v1/jobs", params=params, body=raw, headers=headers),
                                f"handing the job to {backend}"))
    if args.output in ("json", "yaml") or args.dry_run:
        emit(res, "yaml" if args.output == "yaml" else "json", lambda: "")
        return OK
    st = res["status"]
    print(f"submitted {res['id']} ({res['name']}) to {res['backend']}: {st['phase']}")
    if not res.get("backend_job_id") and not st.get("terminal"):
        print(f"  accepted, but {res['backend']} has not confirmed it yet: the gateway keeps trying and never "
              f"creates it twice. Follow it: tjg get {res['id']} --watch", file=sys.stderr)
    for e in res.get("report") or []:
        if e["outcome"] in ("approximated", "dropped"):
            print(f"  note: {e['field']} {e['outcome']}: {e['detail']}")
    return OK


async def _progress(call: Awaitable[Any], doing: str) -> Any:
    """Await `call`, saying on stderr what is being waited for once it takes more than a moment."""
    task = asyncio.ensure_future(call)
    started = time.monotonic()
    tty = is_tty(sys.stderr)
    shown = False
    next_line = 2.0
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.5)
        if done:
            break
        elapsed = time.monotonic() - started
        if tty and elapsed >= 1.0:
            sys.stderr.write(f"\r{doing}: waiting for the gateway... {elapsed:.0f}s ")
            sys.stderr.flush()
            shown = True
        elif not tty and elapsed >= next_line:
            print(f"{doing}: waiting for the gateway... {elapsed:.0f}s", file=sys.stderr, flush=True)
            next_line += 5.0
    if shown:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()
    return task.result()


def _migrate(args: argparse.Namespace, client: GatewayClient) -> int:
    body: dict[str, Any] = {"backend": args.to, "source_action": args.source_action, "strict": args.strict}
    if args.override:
        try:
            body["overrides"] = json.loads(args.override)
        except ValueError as err:
            raise UsageError(f"migrate: --override is not JSON: {err}") from None
    params = {"dry_run": "true"} if args.dry_run else None
    res = client.call("POST", f"/v1/jobs/{args.id}/migrate", params=params, body=body)
    if args.output in ("json", "yaml"):
        emit(res, args.output, lambda: "")
    elif args.dry_run:
        rows = [{"field": c["field"], "src": f"{c['source']['outcome'] or '-'}",
                 "tgt": f"{c['target']['outcome'] or '-'}", "detail": c["target"]["detail"]}
                for c in res["comparison"]]
        print(f"{res['source']['backend']} -> {res['backend']}: {res['request']['method']} {res['request']['path']}")
        print(table(rows, (("FIELD", "field"), ("SOURCE", "src"), ("TARGET", "tgt"), ("TARGET DETAIL", "detail"))))
    else:
        print(f"migrated {args.id} -> {res['id']} on {res['backend']}: {res['status']['phase']}")
        for w in res.get("warnings") or []:
            print(f"  warning: {w}")
    return OK


def _list(args: argparse.Namespace, client: GatewayClient) -> int:
    params: list[tuple[str, str]] = [("limit", str(args.limit))]
    for name in ("backend", "phase", "project", "name_prefix", "kind"):
        value = getattr(args, name)
        if value:
            params.append((name, value))
    params += [("label", lb) for lb in args.label or []]
    if getattr(args, "deleted", False):
        params.append(("deleted", "true"))
    jobs: list[dict[str, Any]] = []
    token = args.page_token
    while True:
        page = client.call("GET", "/v1/jobs", params=params + ([("page_token", token)] if token else []))
        jobs += page["jobs"]
        token = page.get("next_page_token")
        if not token or not args.all:
            break
    out = args.output
    emit({"jobs": jobs, "next_page_token": token}, out,
         lambda: table([_row(j) for j in jobs], WIDE if out == "wide" else COLUMNS) if jobs else "no jobs")
    if token and out in ("table", "wide"):
        print(f"(more: tjg list --page-token {token} ..., or --all)", file=sys.stderr)
    if args.watch:
        return _watch_all(client, out)
    return OK


def _watch_all(client: GatewayClient, out: str) -> int:
    async def follow() -> None:
        print("watching for transitions (Ctrl-C to stop)...", file=sys.stderr, flush=True)
        async for event, data in client.stream("/v1/events"):
            if event == "shutdown":
                break
            if event not in ("transition", "idle", "active"):
                continue
            if out in ("json", "yaml"):
                print(json.dumps(data), flush=True)
            elif event != "transition":
                print(f"{data['job_id']}  {data['job_name']:<24} {data['backend']:<10} {event.upper():>10}    "
                      f"{data['message'] or ''}", flush=True)
            else:
                print(f"{data['job_id']}  {data['job_name']:<24} {data['backend']:<10} "
                      f"{data['from_phase'] or '-':>10} -> {data['to_phase']:<10} {data['message'] or ''}",
                      flush=True)

    asyncio.run(follow())
    raise _stream_lost(client)


def new_lines(printed: list[str], content: str) -> list[str]:
    """The lines of a log preview not printed yet. A preview may be a window that moved on (its start cut
    off): the new lines are those after where the tail of what was printed ends in it."""
    lines = content.splitlines()
    if lines[:len(printed)] == printed:  # the usual case: the log only grew
        return lines[len(printed):]
    tail = printed[-20:]
    for end in range(len(lines), 0, -1):  # the last place the printed tail ends, whole or cut by the window
        m = min(len(tail), end)
        if lines[end - m:end] == tail[-m:]:
            return lines[end:]
    return lines  # nothing in common: the window moved past all that was printed


def _follow_logs(client: GatewayClient, args: argparse.Namespace) -> int:
    """`tjg logs -f`: print the log as it grows, until the job has ended and its last lines are out."""
    params = {"task": args.task} if args.task else {}
    printed: list[str] = []
    first = True
    try:
        while True:
            job = client.call("GET", f"/v1/jobs/{args.id}")
            res = client.call("GET", f"/v1/jobs/{job['id']}/logs", params=params)
            fresh = new_lines(printed, res["content"])
            if first and args.tail is not None:
                fresh = fresh[len(fresh) - args.tail:] if args.tail else []
            first = False
            for line in fresh:
                print(line, flush=True)
            printed = (printed + fresh)[-10_000:]
            if job["status"]["terminal"]:  # read after the job's status: its last lines are in this read
                print(f"-- {job['id']}: {job['status']['phase']}", file=sys.stderr)
                return OK
            time.sleep(max(0.2, args.interval))
    except KeyboardInterrupt:
        return 130


def _stream_lost(client: GatewayClient) -> GatewayError:
    return GatewayUnreachable(f"the gateway at {client.url} closed the stream (shutting down or restarting); "
                              "run the command again to go on watching")


def _watch(client: GatewayClient, job_id: str, out: str, quiet: bool = False) -> int:
    """Follow a job until it ends: exit 0 when it SUCCEEDED, 4 when it FAILED or was CANCELLED."""
    ended: dict[str, Any] = {}

    async def follow() -> None:
        tty = is_tty(sys.stderr) and not quiet and out not in ("json", "yaml")
        phase = "?"
        started = time.monotonic()
        async for event, data in client.stream(f"/v1/jobs/{job_id}/events", params={"watch": "true"}):
            if tty:
                sys.stderr.write("\r\033[K")
            if event == "end":
                ended.update(data)
                return
            if event == "shutdown":
                return
            if out in ("json", "yaml"):
                print(json.dumps({"event": event, "data": data}), flush=True)
            elif event in ("idle", "active") and not quiet:
                print(f"{data['at']}  {event.upper():>10}    {data['message'] or ''}", flush=True)
            elif event == "transition":
                phase = data["to_phase"]
                if not quiet:
                    print(f"{data['at']}  {data['from_phase'] or '-':>10} -> {data['to_phase']:<10} "
                          f"{data['vendor_phase'] or ''}  {data['message'] or ''}", flush=True)
            if tty:
                sys.stderr.write(f"watching {job_id}: {phase}, {time.monotonic() - started:.0f}s (Ctrl-C to stop)")
                sys.stderr.flush()

    asyncio.run(follow())
    if not ended:
        raise _stream_lost(client)
    phase = ended.get("phase")
    if out in ("json", "yaml"):
        print(json.dumps({"event": "end", "data": ended}), flush=True)
    else:
        print(f"{job_id} ended {phase}", flush=True)
    return OK if phase == "SUCCEEDED" else JOB_FAILED
