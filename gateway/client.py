"""A small HTTP client of the gateway, used by the CLI's client commands."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar
from urllib.parse import quote

from gateway import DEFAULT_TIMEOUT
from gateway.core.errors import GatewayUnreachable
from gateway.core.models import DryRun, Job, JobSpec
from gateway.wire import GatewayClient, check_url, decode, iter_sse, problem_error

__all__ = ["AsyncClient", "Client", "GatewayClient", "check_url", "decode", "iter_sse", "problem_error"]


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
