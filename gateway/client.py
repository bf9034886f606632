"""A small HTTP client of the gateway, used by the CLI's client commands."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, ParamSpec, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp

from gateway import DEFAULT_TIMEOUT
from gateway.core.errors import GatewayError, GatewayUnreachable, ValidationError
from gateway.core.models import DryRun, Job, JobSpec


def check_url(url: str, source: str = "--url") -> str:
    """The gateway's base URL, or a ValidationError saying what is wrong with it (and where it came from)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError as err:  # e.g. an unclosed IPv6 bracket
        raise ValidationError(f"{source} {url!r} is not a URL: {err}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        hint = f" (did you mean http://{url.strip()}?)" if "://" not in url and url.strip() else ""
        raise ValidationError(f"{source} {url!r} is not an http:// or https:// URL{hint}")
    try:
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as err:
        raise ValidationError(f"{source} {url!r} has a bad port: {err}") from None
    return url.strip().rstrip("/")


class GatewayClient:
    """Calls a running gateway; problem documents become GatewayErrors, and a gateway that cannot be
    reached (refused, dropped, silent, or not a gateway at all) is a GatewayUnreachable."""

    def __init__(self, url: str, api_key: str, timeout: float = DEFAULT_TIMEOUT, url_source: str = "--url") -> None:
        self.url = check_url(url, url_source)
        self.api_key = api_key
        self.timeout = timeout

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", **(extra or {})}

    def _unreachable(self, err: BaseException) -> GatewayUnreachable:
        if isinstance(err, TimeoutError | asyncio.TimeoutError):
            why = f"no answer within {self.timeout:g}s (--timeout)"
        elif isinstance(err, aiohttp.ClientConnectorError):
            why = f"connection refused or host unknown ({err.os_error.strerror or err.os_error})" \
                if err.os_error is not None else "cannot connect"
        elif isinstance(err, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
            why = "the connection was closed before the answer was complete"
        else:
            why = str(err) or type(err).__name__
        return GatewayUnreachable(f"cannot reach the gateway at {self.url}: {why}. "
                                  "Is `tjg serve` running there? (set --url or TJG_URL)")

    async def acall(self, method: str, path: str, *, params: Any = None, body: Any = None,
                    headers: dict[str, str] | None = None) -> Any:
        timeout = aiohttp.ClientTimeout(total=self.timeout, connect=min(10.0, self.timeout))
        try:
            async with aiohttp.ClientSession(timeout=timeout) as s, s.request(
                    method, self.url + path, params=params, json=body, headers=self._headers(headers)) as r:
                raw = await r.read()
                ctype = r.headers.get("Content-Type", "")
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as err:
            raise self._unreachable(err) from err
        return decode(status, ctype, raw, self.url)

    def call(self, method: str, path: str, **kw: Any) -> Any:
        """acall, synchronously (for the CLI)."""
        return asyncio.run(self.acall(method, path, **kw))

    async def stream(self, path: str, params: Any = None) -> AsyncIterator[tuple[str, Any]]:
        """Follow a Server-Sent Events endpoint: yields (event, data). Ends when the server ends the
        stream; a connection that cannot be made or is cut is a GatewayUnreachable."""
        timeout = aiohttp.ClientTimeout(total=None, connect=min(10.0, self.timeout), sock_read=None)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as s, s.get(
                    self.url + path, params=params, headers=self._headers({"Accept": "text/event-stream"})) as r:
                if r.status >= 400 or not r.headers.get("Content-Type", "").startswith("text/event-stream"):
                    decode(r.status, r.headers.get("Content-Type", ""), await r.read(), self.url)
                    raise GatewayUnreachable(f"{self.url}{path} did not answer with an event stream: "
                                             "is --url a trainjob-gateway?")
                async for item in iter_sse(r.content):
                    yield item
        except (aiohttp.ClientError, TimeoutError) as err:
            raise self._unreachable(err) from err


def decode(status: int, ctype: str, raw: bytes, url: str) -> Any:
    """A gateway answer as JSON, a problem document as a GatewayError, anything else as unreachable."""
    if status == 204 or (not raw and status < 400):
        return None
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
        if status < 400 or "json" not in ctype:
            raise GatewayUnreachable(f"{url} answered HTTP {status} with {ctype or 'no content type'}, not the "
                                     "gateway's JSON: is --url (or TJG_URL) a trainjob-gateway?") from None
    if status >= 400:
        raise problem_error(status, data)
    return data


async def iter_sse(lines: AsyncIterable[bytes]) -> AsyncIterator[tuple[str, Any]]:
    """Parse a Server-Sent Events stream into (event, JSON data) pairs."""
    event, data = "message", ""
    async for raw in lines:
        line = raw.decode().rstrip("\n")
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif line == "" and data:
            yield event, json.loads(data)
            event, data = "message", ""


def _error_classes() -> dict[str, type[GatewayError]]:
    out: dict[str, type[GatewayError]] = {}
    todo: list[type[GatewayError]] = [GatewayError]
    while todo:
        cls = todo.pop()
        out.setdefault(str(getattr(cls, "type_slug", "")), cls)
        todo.extend(cls.__subclasses__())
    return out


def problem_error(status: int, data: Any) -> GatewayError:
    """A problem document (or any error answer) as the error tree's exception for its type (NotFound,
    Conflict, ValidationError, ...), with the same status, detail and extra members."""
    if isinstance(data, dict) and "detail" in data:
        slug = str(data.get("type", "error")).rsplit("/", 1)[-1]
        cls = _error_classes().get(slug, GatewayError)
        err = cls.__new__(cls)
        GatewayError.__init__(err, str(data["detail"]), errors=data.get("errors"))
        err.title = str(data.get("title", "Error"))
        err.type_slug = str(data.get("type", "error")).rsplit("/", 1)[-1]
        err.extra = {k: v for k, v in data.items() if k not in ("type", "title", "status", "detail", "errors")}
    else:
        err = GatewayError(f"HTTP {status}")
        err.title = "Error"
    err.status = status
    return err


# -- the typed client ------------------------------------------------------------------------------------------
class AsyncClient:
    """A typed asyncio client of a running gateway: jobs come back as `Job` models, and every problem
    answer raises the error tree's exception (NotFound, Conflict, ValidationError, ...); a gateway that
    cannot be reached raises GatewayUnreachable.

        async with AsyncClient("http://127.0.0.1:8080", "demo-key") as tjg:
            job = await tjg.submit({"name": "r50", "backend": "runai", "image": "pytorch:24"})
            done = await tjg.wait(job.id)
    """

    def __init__(self, url: str, api_key: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._http = GatewayClient(url, api_key, timeout)

    @property
    def url(self) -> str:
        """The gateway's base URL."""
        return self._http.url

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def _job(self, method: str, path: str, body: Any = None, params: Any = None,
                   headers: dict[str, str] | None = None) -> Job:
        return Job.model_validate(await self._http.acall(method, path, body=body, params=params, headers=headers))

    async def submit(self, spec: dict[str, Any] | JobSpec, *, strict: bool = False,
                     idempotency_key: str | None = None) -> Job:
        """Submit a job (exactly once for one idempotency key)."""
        body = spec.model_dump(mode="json", exclude_none=True) if isinstance(spec, JobSpec) else spec
        params = {"strict": "true"} if strict else None
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return await self._job("POST", "/v1/jobs", body, params, headers)

    async def dry_run(self, spec: dict[str, Any] | JobSpec, *, strict: bool = False) -> DryRun:
        """The vendor request a spec becomes, and its report; nothing is stored or sent."""
        body = spec.model_dump(mode="json", exclude_none=True) if isinstance(spec, JobSpec) else spec
        params = {"dry_run": "true", **({"strict": "true"} if strict else {})}
        return DryRun.model_validate(await self._http.acall("POST", "/v1/jobs", body=body, params=params))

    async def get(self, job_id: str) -> Job:
        """One job."""
        return await self._job("GET", f"/v1/jobs/{quote(job_id, safe='')}")

    async def list_jobs(self, *, backend: str | None = None, phase: str | None = None, kind: str | None = None,
                   project: str | None = None, name_prefix: str | None = None, labels: dict[str, str] | None = None,
                   limit: int = 500) -> list[Job]:
        """Every job matching the filters, newest first (all pages)."""
        params: list[tuple[str, str]] = [(k, v) for k, v in (("backend", backend), ("phase", phase), ("kind", kind),
                                                             ("project", project), ("name_prefix", name_prefix))
                                         if v]
        params += [("label", f"{k}={v}") for k, v in (labels or {}).items()] + [("limit", str(limit))]
        jobs: list[Job] = []
        token = None
        while True:
            page = await self._http.acall("GET", "/v1/jobs", params=params + ([("page_token", token)] if token else []))
            jobs += [Job.model_validate(j) for j in page["jobs"]]
            token = page.get("next_page_token")
            if not token:
                return jobs

    async def cancel(self, job_id: str) -> Job:
        """Stop a job for good (the record stays)."""
        return await self._job("POST", f"/v1/jobs/{quote(job_id, safe='')}/cancel")

    async def suspend(self, job_id: str) -> Job:
        """Pause a job where its backend can."""
        return await self._job("POST", f"/v1/jobs/{quote(job_id, safe='')}/suspend")

    async def resume(self, job_id: str) -> Job:
        """Resume a suspended job."""
        return await self._job("POST", f"/v1/jobs/{quote(job_id, safe='')}/resume")

    async def scale(self, job_id: str, replicas: int) -> Job:
        """Set an inference workload's replicas."""
        return await self._job("POST", f"/v1/jobs/{quote(job_id, safe='')}/scale", {"replicas": replicas})

    async def delete(self, job_id: str) -> None:
        """Remove a job from its backend (the record stays, marked deleted)."""
        await self._http.acall("DELETE", f"/v1/jobs/{quote(job_id, safe='')}")

    async def migrate(self, job_id: str, backend: str, *, source_action: str = "keep", strict: bool = False,
                      overrides: dict[str, Any] | None = None, idempotency_key: str | None = None) -> Job:
        """Move a job to another backend (exactly once); see migrate_dry_run for the comparison."""
        body = {"backend": backend, "source_action": source_action, "strict": strict, "overrides": overrides or {}}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return await self._job("POST", f"/v1/jobs/{quote(job_id, safe='')}/migrate", body, headers=headers)

    async def migrate_dry_run(self, job_id: str, backend: str, **kw: Any) -> dict[str, Any]:
        """What a migration would send, with the field-by-field comparison."""
        result: dict[str, Any] = await self._http.acall(
            "POST", f"/v1/jobs/{quote(job_id, safe='')}/migrate", params={"dry_run": "true"},
            body={"backend": backend, **kw})
        return result

    async def events(self, job_id: str, vendor: bool = True) -> list[dict[str, Any]]:
        """A job's transitions (merged with the vendor's events unless vendor=False)."""
        res = await self._http.acall("GET", f"/v1/jobs/{quote(job_id, safe='')}/events",
                                     params={"vendor": "true" if vendor else "false"})
        return list(res["events"])

    async def logs(self, job_id: str, task: str | None = None, tail: int | None = None) -> str:
        """A preview of a job's log."""
        params = {k: str(v) for k, v in (("task", task), ("tail", tail)) if v is not None}
        return str((await self._http.acall("GET", f"/v1/jobs/{quote(job_id, safe='')}/logs", params=params))
                   ["content"])

    async def metrics(self, job_id: str, names: list[str] | None = None, since: str | None = None) -> dict[str, Any]:
        """A job's resource metrics (see GET /v1/jobs/{id}/metrics)."""
        params = {k: v for k, v in (("names", ",".join(names or [])), ("since", since)) if v}
        result: dict[str, Any] = await self._http.acall("GET", f"/v1/jobs/{quote(job_id, safe='')}/metrics",
                                                        params=params)
        return result

    async def usage(self, group_by: str = "backend", since: str | None = None,
                    until: str | None = None) -> dict[str, Any]:
        """GPU-hours, utilization and cost by group."""
        params = {k: v for k, v in (("group_by", group_by), ("since", since), ("until", until)) if v}
        result: dict[str, Any] = await self._http.acall("GET", "/v1/usage", params=params)
        return result

    async def backends(self) -> list[dict[str, Any]]:
        """The configured backends: health, circuit and capabilities."""
        return list(await self._http.acall("GET", "/v1/backends"))

    async def wait(self, job_id: str) -> Job:
        """Follow a job's event stream until it ends; the job as it ended."""
        async for event, _data in self._http.stream(f"/v1/jobs/{quote(job_id, safe='')}/events",
                                                    params={"watch": "true"}):
            if event == "end":
                break
            if event == "shutdown":
                raise GatewayUnreachable(f"the gateway at {self.url} shut down while watching {job_id}")
        return await self.get(job_id)


P = ParamSpec("P")
R = TypeVar("R")


def _blocking(fn: Callable[P, Awaitable[R]]) -> Callable[P, R]:
    """A coroutine method as a blocking call with the same signature."""
    @functools.wraps(fn)
    def call(*args: P.args, **kw: P.kwargs) -> R:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(fn(*args, **kw))  # type: ignore[arg-type]
        # Called from inside a running loop (a notebook, a browser driver): run on a thread of its own.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, fn(*args, **kw)).result()  # type: ignore[arg-type]
    return call


class Client:
    """The same calls as AsyncClient, blocking (each one runs its own event loop): for scripts and notebooks.

        tjg = Client("http://127.0.0.1:8080", "demo-key")
        for job in tjg.list_jobs(kind="inference"):
            print(job.name, job.status.phase, job.status.endpoint)
    """

    def __init__(self, url: str, api_key: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        a = AsyncClient(url, api_key, timeout)
        self.url = a.url
        self.submit = _blocking(a.submit)
        self.dry_run = _blocking(a.dry_run)
        self.get = _blocking(a.get)
        self.list_jobs = _blocking(a.list_jobs)
        self.cancel = _blocking(a.cancel)
        self.suspend = _blocking(a.suspend)
        self.resume = _blocking(a.resume)
        self.scale = _blocking(a.scale)
        self.delete = _blocking(a.delete)
        self.migrate = _blocking(a.migrate)
        self.migrate_dry_run = _blocking(a.migrate_dry_run)
        self.events = _blocking(a.events)
        self.logs = _blocking(a.logs)
        self.metrics = _blocking(a.metrics)
        self.usage = _blocking(a.usage)
        self.backends = _blocking(a.backends)
        self.wait = _blocking(a.wait)
