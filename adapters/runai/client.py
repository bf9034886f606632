"""Async Run:ai API client: token auth with single-flight refresh, and the workload endpoints."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from adapters.http import Query, Response, Transport, classify, seg
from adapters.runai.config import RunaiConfig
from adapters.runai.records import Workload, WorkloadPage
from gateway.core.errors import BackendAuthError, BackendError, BackendUnavailable, ValidationError
from gateway.core.retrying import full_jitter, last_error, run

log = structlog.get_logger(__name__)


def jwt_exp(token: str) -> float | None:
    """The `exp` claim of a JWT, decoded as base64url (runapy's plain base64 is a bug)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp")
        return float(exp) if exp is not None else None
    except (IndexError, ValueError):
        return None


def parse_error(backend: str) -> Any:
    """Run:ai error body -> gateway error (code, message and compliance issues kept)."""
    def parse(status: int, body: Any, headers: dict[str, str]) -> BackendError:
        body = body if isinstance(body, dict) else {}
        message = str(body.get("message") or f"HTTP {status}")
        if body.get("details"):
            message += f": {body['details']}"
        issues = body.get("complianceIssues") or []
        if issues:
            message += " [" + "; ".join(f"{i.get('field')}: {i.get('details')}" for i in issues[:5]) + "]"
        code = str(body["code"]) if body.get("code") is not None else None
        # A taken name comes back as 409 or, as the create operation's documented codes allow, as a 400
        # whose compliance issue is the name's uniqueness: both mean an earlier create went through. The
        # issue's `rule` names policy rules only (PolicyRuleEnum), so its words say it.
        taken = status == 400 and (any(i.get("field") == "name" and (i.get("rule") == "unique" or _says_taken(
            str(i.get("details") or ""))) for i in issues if isinstance(i, dict))
            # (an inference's 400 is a plain Error: its details say it)
            or (not issues and str(body.get("details") or "").startswith("name:")
                and _says_taken(str(body.get("details")))))
        return classify(status, backend, code, message, headers, conflict=taken)
    return parse


def _says_taken(words: str) -> bool:
    """Whether an error's words say a name is taken."""
    return any(w in words.lower() for w in ("exist", "unique", "taken", "in use"))


class _TokenTryAgain(Exception):
    """A token request that may be sent again: a network error, a 429 or a 5xx."""


class TokenAuth:
    """Bearer tokens from /api/v1/token: fetched on first use, refreshed before `exp`, one fetch
    at a time however many callers wait, and refreshed once after a 401."""

    def __init__(self, config: RunaiConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.session = session
        self.token: str | None = None
        self.expires_at = 0.0
        self.refresh_at = 0.0
        self.lock = asyncio.Lock()
        self.fetches = 0

    def _fresh(self) -> bool:
        return self.token is not None and time.time() < self.refresh_at

    async def current(self) -> str:
        """A valid access token, fetching one if needed (single-flight)."""
        if self._fresh():
            assert self.token is not None
            return self.token
        async with self.lock:
            if not self._fresh():
                await self._fetch()
            assert self.token is not None
            return self.token

    async def _fetch(self) -> None:
        creds = self.config.credentials
        if not creds.client_id or creds.client_secret is None:
            raise BackendAuthError(f"{self.config.name}: credentials.client_id and client_secret are required",
                                   backend=self.config.name)
        body = {"grantType": "client_credentials", "clientID": creds.client_id,
                "clientSecret": creds.client_secret.get_secret_value()}
        timeout = aiohttp.ClientTimeout(sock_connect=self.config.connect_timeout, sock_read=self.config.read_timeout)

        async def once() -> None:
            self.fetches += 1
            try:
                async with self.session.post(self.config.url + "/api/v1/token", json=body, timeout=timeout) as r:
                    data = await r.json(content_type=None)
                    status = r.status
            except (TimeoutError, aiohttp.ClientError, ValueError) as err:
                raise _TokenTryAgain(type(err).__name__) from err
            if status == 200 and isinstance(data, dict) and data.get("accessToken"):
                token = str(data["accessToken"])
                now = time.time()
                exp = jwt_exp(token) or now + float(data.get("expiresIn") or 300)
                lifetime = max(exp - now, 0.0)
                self.token, self.expires_at = token, exp
                self.refresh_at = exp - min(60.0, lifetime * 0.2)
                log.info("runai_token_fetched", backend=self.config.name, expires_in=round(lifetime))
                return
            if status == 429 or status >= 500:
                raise _TokenTryAgain("server errors")
            raise BackendAuthError(f"{self.config.name}: token request refused (HTTP {status}) for client "
                                   f"{creds.client_id}", backend=self.config.name, vendor_status=status)

        def give_up(state: RetryCallState) -> None:
            raise BackendUnavailable(f"{self.config.name}: token endpoint unavailable ({last_error(state)})",
                                     backend=self.config.name)

        await run(AsyncRetrying(retry=retry_if_exception_type(_TokenTryAgain), wait=full_jitter(0.05, 2.0),
                                stop=stop_after_attempt(self.config.retry.attempts), retry_error_callback=give_up), once)

    async def headers(self, method: str, path: str, query: Query, body: bytes,
                      base: dict[str, str]) -> dict[str, str]:
        return {**base, "Authorization": f"Bearer {await self.current()}"}

    async def unauthorized(self, sent: dict[str, str]) -> bool:
        async with self.lock:
            if sent.get("Authorization") == f"Bearer {self.token}":
                self.token = None
                self.refresh_at = 0
        return True


def filter_expr(field: str, op: str, value: str) -> str:
    """One filterBy expression. Run:ai joins expressions with commas and has no escape, so a value with a
    comma, an edge space or nothing at all cannot be asked for: refused here (a 422 naming the field) rather
    than sent as a query that matches something else, or nothing, forever."""
    if not value or "," in value or value != value.strip() or any(c in value for c in "\r\n\x00"):
        raise ValidationError(f"{field} {value!r} cannot be looked up on Run:ai (filterBy has no escape for it)",
                              errors=[{"loc": [field], "msg": "no comma, edge space or control character"}])
    return f"{field}{op}{value}"


class RunaiClient:
    """The Run:ai endpoints the adapter uses."""

    def __init__(self, config: RunaiConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.auth = TokenAuth(config, session)
        self.transport = Transport(config, session, self.auth, parse_error(config.name))

    async def create(self, kind: str, body: dict[str, Any]) -> Response:
        """POST /api/v1/workloads/{trainings|distributed} (never retried blindly)."""
        return await self.transport.request("POST", f"/api/v1/workloads/{_plural(kind)}", body=body, idempotent=False)

    async def workload(self, workload_id: str, attempts: int | None = None) -> Workload:
        """GET /api/v1/workloads/{id}."""
        r = await self.transport.request("GET", f"/api/v1/workloads/{seg(workload_id)}", attempts=attempts)
        return r.decode(Workload)

    async def training(self, kind: str, workload_id: str) -> dict[str, Any]:
        """GET /api/v1/workloads/{kind}/{id} (Training1 with the spec), whole (to rebuild an imported spec)."""
        r = await self.transport.request("GET", f"/api/v1/workloads/{_plural(kind)}/{seg(workload_id)}")
        return dict(r.body or {})

    async def list_workloads(self, offset: int = 0, limit: int = 50, filters: list[str] | None = None,
                   deleted: bool | None = None, sort_by: str | None = None,
                   attempts: int | None = None) -> WorkloadPage:
        """GET /api/v1/workloads with filterBy (comma-joined)."""
        q: Query = [("offset", str(offset)), ("limit", str(limit))]
        if filters:
            q.append(("filterBy", ",".join(filters)))
        if deleted is not None:
            q.append(("deleted", "true" if deleted else "false"))
        if sort_by:
            q += [("sortBy", sort_by), ("sortOrder", "asc")]
        r = await self.transport.request("GET", "/api/v1/workloads", query=q, attempts=attempts)
        return r.decode(WorkloadPage)

    async def action(self, kind: str, workload_id: str, action: str) -> None:
        """POST …/{id}/suspend or …/resume."""
        await self.transport.request("POST", f"/api/v1/workloads/{_plural(kind)}/{seg(workload_id)}/{action}")

    async def update_inference(self, workload_id: str, body: dict[str, Any]) -> None:
        """PATCH /api/v1/workloads/inferences/{id}."""
        await self.transport.request("PATCH", f"/api/v1/workloads/inferences/{seg(workload_id)}", body=body)

    async def delete(self, kind: str, workload_id: str) -> None:
        """DELETE /api/v1/workloads/{kind}/{id}."""
        await self.transport.request("DELETE", f"/api/v1/workloads/{_plural(kind)}/{seg(workload_id)}")

    async def metrics(self, workload_id: str, types: list[str], start: str, end: str,
                      samples: int) -> list[dict[str, Any]]:
        """GET /api/v1/workloads/{id}/metrics: the measurements of each type (per GPU for GPU types)."""
        r = await self.transport.request("GET", f"/api/v1/workloads/{seg(workload_id)}/metrics", query=[
            ("metricType", ",".join(types)), ("start", start), ("end", end), ("numberOfSamples", str(samples))])
        return list((r.body or {}).get("measurements") or [])

    async def node_pools(self) -> list[dict[str, Any]]:
        """GET /api/v1/node-pools."""
        r = await self.transport.request("GET", "/api/v1/node-pools")
        return list((r.body or {}).get("nodepools") or [])

    async def node_pool_metrics(self, cluster: str, pool: str, types: list[str]) -> dict[str, float]:
        """GET /api/v1/clusters/{cluster}/nodepools/{pool}/metrics: the latest value of each type present."""
        now = datetime.now(UTC)
        r = await self.transport.request(
            "GET", f"/api/v1/clusters/{seg(cluster)}/nodepools/{seg(pool)}/metrics",
            query=[("metricType", ",".join(types)), ("start", _iso(now - timedelta(minutes=5))),
                   ("end", _iso(now)), ("numberOfSamples", "1")])
        out: dict[str, float] = {}
        for m in (r.body or {}).get("measurements") or []:
            values = m.get("values") or []
            try:
                out[str(m.get("type"))] = float(values[-1]["value"])
            except (IndexError, KeyError, TypeError, ValueError):
                continue
        return out

    async def projects(self) -> list[dict[str, Any]]:
        """GET /api/v1/org-unit/projects (quotas per node pool and their use)."""
        r = await self.transport.request("GET", "/api/v1/org-unit/projects")
        return list((r.body or {}).get("projects") or [])

    async def count_workloads(self, filters: list[str]) -> int:
        """GET /api/v1/workloads/count with filterBy."""
        r = await self.transport.request("GET", "/api/v1/workloads/count", query=[("filterBy", ",".join(filters))])
        return int((r.body or {}).get("count") or 0)

    async def events(self, workload_id: str, limit: int = 500) -> list[dict[str, Any]]:
        """GET /api/v1/workloads/{id}/events, oldest first."""
        r = await self.transport.request("GET", f"/api/v1/workloads/{seg(workload_id)}/events",
                                         query=[("limit", str(limit)), ("sortOrder", "asc")])
        return list((r.body or {}).get("events") or [])


def _iso(t: datetime) -> str:
    """A timestamp as Run:ai writes them (2022-01-01T03:49:52.531Z)."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _plural(kind: str) -> str:
    return {"distributed": "distributed", "inference": "inferences"}.get(kind, "trainings")
