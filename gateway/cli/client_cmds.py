"""Client commands of `tjg`: submit, list, get, cancel, suspend, resume, events, delete."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from gateway.cli.specfile import read_spec_file
from gateway.client import GatewayClient

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


def _row(job: dict[str, Any]) -> dict[str, str]:
    st = job.get("status") or {}
    phase = st.get("phase", "?") + ("*" if st.get("stale") else "")
    return {"id": job["id"], "name": job["name"], "backend": job["backend"], "phase": phase,
            "vendor": str(st.get("vendor_phase") or "-"), "age": _age(job["created_at"]),
            "origin": job.get("origin", "gateway")}


def table(rows: list[dict[str, str]], columns: tuple[tuple[str, str], ...] = COLUMNS) -> str:
    """Aligned columns, header first."""
    widths = [max([len(h)] + [len(r[k]) for r in rows]) for h, k in columns]
    lines = ["  ".join(h.ljust(w) for (h, _), w in zip(columns, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("  ".join(r[k].ljust(w) for (_, k), w in zip(columns, widths, strict=True)).rstrip())
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
           f"message:      {st.get('message') or '-'}", f"created:      {job['created_at']}",
           f"labels:       {', '.join(f'{k}={v}' for k, v in (job.get('labels') or {}).items()) or '-'}"]
    for key in ("migrated_from", "migrated_to"):
        if job.get(key):
            out.append(f"{key}: {job[key]}")
    lossy = [e for e in job.get("report") or [] if e["outcome"] in ("approximated", "dropped")]
    if lossy:
        out.append("translation notes:")
        out += [f"  {e['field']}: {e['outcome']} - {e['detail']}" for e in lossy]
    return "\n".join(out)


def run(args: argparse.Namespace, client: GatewayClient) -> int:
    """Dispatch one client command."""
    cmd = args.client_command
    as_json = args.json
    if cmd == "submit":
        raw = read_spec_file(args.spec)
        if args.backend and isinstance(raw, dict):
            raw["backend"] = args.backend
        params = {"dry_run": "true"} if args.dry_run else {}
        if args.strict:
            params["strict"] = "true"
        headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
        res = client.call("POST", "/v1/jobs", params=params, body=raw, headers=headers)
        if as_json or args.dry_run:
            print(json.dumps(res, indent=2))
        else:
            print(f"submitted {res['id']} ({res['name']}) to {res['backend']}: {res['status']['phase']}")
            lossy = [e for e in res.get("report") or [] if e["outcome"] in ("approximated", "dropped")]
            for e in lossy:
                print(f"  note: {e['field']} {e['outcome']}: {e['detail']}")
        return 0
    if cmd == "list":
        return _list(args, client)
    if cmd == "get":
        if getattr(args, "watch", False):
            return _watch(client, args.id, as_json)
        job = client.call("GET", f"/v1/jobs/{args.id}")
        print(json.dumps(job, indent=2) if as_json else show_job(job))
        return 0
    if cmd in ("cancel", "suspend", "resume"):
        job = client.call("POST", f"/v1/jobs/{args.id}/{cmd}")
        print(json.dumps(job, indent=2) if as_json else f"{job['id']}: {job['status']['phase']}")
        return 0
    if cmd == "migrate":
        return _migrate(args, client)
    if cmd == "logs":
        params = {k: str(v) for k, v in (("task", args.task), ("tail", args.tail)) if v}
        res = client.call("GET", f"/v1/jobs/{args.id}/logs", params=params)
        if as_json:
            print(json.dumps(res, indent=2))
        else:
            sys.stdout.write(res["content"])
        return 0
    if cmd == "delete":
        client.call("DELETE", f"/v1/jobs/{args.id}")
        print(f"{args.id}: deleted")
        return 0
    if cmd == "events":
        evs = client.call("GET", f"/v1/jobs/{args.id}/events")["events"]
        if as_json:
            print(json.dumps(evs, indent=2))
        else:
            rows = [{"seq": str(e.get("seq") or "-"), "at": str(e.get("at") or "-"),
                     "from": str(e.get("from_phase") or "-"), "to": str(e.get("to_phase") or e.get("reason") or "-"),
                     "vendor": str(e.get("vendor_phase") or e.get("type") or "-"), "source": str(e["source"]),
                     "message": str(e.get("message") or "")} for e in evs]
            print(table(rows, (("SEQ", "seq"), ("AT", "at"), ("FROM", "from"), ("TO", "to"),
                               ("VENDOR", "vendor"), ("SOURCE", "source"), ("MESSAGE", "message"))))
        return 0
    print(f"tjg: unknown command {cmd}", file=sys.stderr)
    return 2


def _migrate(args: argparse.Namespace, client: GatewayClient) -> int:
    body: dict[str, Any] = {"backend": args.to, "source_action": args.source_action, "strict": args.strict}
    if args.override:
        try:
            body["overrides"] = json.loads(args.override)
        except ValueError as err:
            print(f"tjg migrate: --override is not JSON: {err}", file=sys.stderr)
            return 2
    params = {"dry_run": "true"} if args.dry_run else None
    res = client.call("POST", f"/v1/jobs/{args.id}/migrate", params=params, body=body)
    if args.json:
        print(json.dumps(res, indent=2))
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
    return 0


def _list(args: argparse.Namespace, client: GatewayClient) -> int:
    params: list[tuple[str, str]] = [("limit", str(args.limit))]
    for name in ("backend", "phase", "project", "name_prefix"):
        value = getattr(args, name)
        if value:
            params.append((name, value))
    params += [("label", lb) for lb in args.label or []]
    jobs: list[dict[str, Any]] = []
    token = None
    while True:
        page = client.call("GET", "/v1/jobs", params=params + ([("page_token", token)] if token else []))
        jobs += page["jobs"]
        token = page.get("next_page_token")
        if not token or not args.all:
            break
    if args.json:
        print(json.dumps({"jobs": jobs, "next_page_token": token}, indent=2))
    else:
        print(table([_row(j) for j in jobs]) if jobs else "no jobs")
        if token:
            print(f"(more: --all, or page_token {token})")
    if getattr(args, "watch", False):
        return _watch_all(client, args.json)
    return 0


def _watch_all(client: GatewayClient, as_json: bool) -> int:
    async def follow() -> None:
        print("watching for transitions (Ctrl-C to stop)...", file=sys.stderr, flush=True)
        async for event, data in client.stream("/v1/events"):
            if event != "transition":
                continue
            if as_json:
                print(json.dumps(data), flush=True)
            else:
                print(f"{data['job_id']}  {data['job_name']:<24} {data['backend']:<10} "
                      f"{data['from_phase'] or '-':>10} -> {data['to_phase']:<10} {data['message'] or ''}",
                      flush=True)

    try:
        asyncio.run(follow())
    except KeyboardInterrupt:
        return 130
    return 0


def _watch(client: GatewayClient, job_id: str, as_json: bool) -> int:
    async def follow() -> None:
        async for event, data in client.stream(f"/v1/jobs/{job_id}/events", params={"watch": "true"}):
            if as_json:
                print(json.dumps({"event": event, "data": data}), flush=True)
            elif event == "transition":
                print(f"{data['at']}  {data['from_phase'] or '-':>10} -> {data['to_phase']:<10} "
                      f"{data['vendor_phase'] or ''}  {data['message'] or ''}", flush=True)
            elif event == "end":
                print(f"{job_id} ended {data['phase']}", flush=True)

    asyncio.run(follow())
    return 0
