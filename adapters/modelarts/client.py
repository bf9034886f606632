"""Async ModelArts client: AK/SK signing (or IAM token) and the training-job endpoints."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import aiohttp

from adapters.http import Query, Response, Transport, classify, seg
from adapters.modelarts.config import ModelArtsConfig
from adapters.modelarts.records import JobSearchPage, Service, TrainingJob
from adapters.modelarts.signer import sign
from gateway.core.errors import BackendAuthError, BackendError

NOT_FOUND = "ModelArts.2775"
DUPLICATE = "ModelArts.2751"
SERVICE_NOT_FOUND = "ModelArts.3502"
SERVICE_DUPLICATE = "ModelArts.3505"
NOT_STOPPABLE = "ModelArts.2796"
STATUS_CHANGED = "ModelArts.2878"


def parse_error(backend: str) -> Any:
    """ModelArts error body -> gateway error; 2775 is a not-found even though it is a 400."""
    def parse(status: int, body: Any, headers: dict[str, str]) -> BackendError:
        body = body if isinstance(body, dict) else {}
        code = body.get("error_code")
        message = body.get("error_msg") or f"HTTP {status}"
        rid = headers.get("X-Request-Id") if headers else None
        if rid:
            message = f"{message} (request id {rid})"
        return classify(status, backend, code, message, headers, not_found=code in (NOT_FOUND, SERVICE_NOT_FOUND),
                        conflict=code in (DUPLICATE, SERVICE_DUPLICATE, STATUS_CHANGED, NOT_STOPPABLE))
    return parse


class AkSkAuth:
    """Signs every request with the AK/SK (SDK-HMAC-SHA256), or sends an IAM token."""

    def __init__(self, config: ModelArtsConfig) -> None:
        c = config.credentials
        self.config = config
        self.host = urlsplit(config.url).netloc
        self.ak = c.ak
        self.sk = c.sk.get_secret_value() if c.sk else None
        self.security_token = c.security_token.get_secret_value() if c.security_token else None
        self.iam_token = c.iam_token.get_secret_value() if c.iam_token else None
        if not self.iam_token and not (self.ak and self.sk):
            raise BackendAuthError(f"{config.name}: credentials need ak and sk, or iam_token", backend=config.name)

    async def headers(self, method: str, path: str, query: Query, body: bytes,
                      base: dict[str, str]) -> dict[str, str]:
        h = {**base, "Host": self.host, "X-Project-Id": self.config.project_id or ""}
        if self.iam_token:
            return {**h, "X-Auth-Token": self.iam_token}
        if self.security_token:
            h["X-Security-Token"] = self.security_token
        assert self.ak and self.sk
        return sign(method, path, query, h, body, self.ak, self.sk)

    async def unauthorized(self, sent: dict[str, str]) -> bool:
        return False


class ModelArtsClient:
    """The ModelArts v2 training-job endpoints the adapter uses."""

    def __init__(self, config: ModelArtsConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.base = f"/v2/{config.project_id}"
        self.transport = Transport(config, session, AkSkAuth(config), parse_error(config.name))

    async def create(self, body: dict[str, Any]) -> Response:
        """POST /v2/{project}/training-jobs (never retried blindly)."""
        return await self.transport.request("POST", f"{self.base}/training-jobs", body=body, idempotent=False)

    async def show(self, job_id: str, attempts: int | None = None) -> dict[str, Any]:
        """GET one job, as plain JSON (the log and metric readers walk parts the status does not need)."""
        r = await self.transport.request("GET", f"{self.base}/training-jobs/{seg(job_id)}", attempts=attempts)
        return dict(r.body or {})

    async def job(self, job_id: str, attempts: int | None = None) -> TrainingJob:
        """GET one job, decoded as the sync reads it."""
        r = await self.transport.request("GET", f"{self.base}/training-jobs/{seg(job_id)}", attempts=attempts)
        return r.decode(TrainingJob)

    async def job_flavors(self) -> list[dict[str, Any]]:
        """GET /v2/{project}/training-job-flavors?flavor_type=GPU: the public pool's GPU flavors (max_num: nodes
        to be had now)."""
        r = await self.transport.request("GET", f"{self.base}/training-job-flavors", query=[("flavor_type", "GPU")])
        return list((r.body or {}).get("flavors") or [])

    # -- real-time services (v2) --------------------------------------------------------------
    async def create_service(self, body: dict[str, Any]) -> Response:
        """POST /v2/{project}/services (never retried blindly)."""
        return await self.transport.request("POST", f"{self.base}/services", body=body, idempotent=False)

    async def service(self, service_id: str, attempts: int | None = None) -> Service:
        """GET one service."""
        r = await self.transport.request("GET", f"{self.base}/services/{seg(service_id)}", attempts=attempts)
        return r.decode(Service)

    async def services(self, name: str | None = None, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """GET /v2/{project}/services (name matches as a substring)."""
        q = [("offset", str(offset)), ("limit", str(limit))] + ([("name", name)] if name else [])
        r = await self.transport.request("GET", f"{self.base}/services", query=q)
        return dict(r.body or {})

    async def service_action(self, service_id: str, action: str) -> None:
        """POST …/services/{id}/stop or /start."""
        await self.transport.request("POST", f"{self.base}/services/{seg(service_id)}/{seg(action)}")

    async def update_service(self, service_id: str, body: dict[str, Any]) -> None:
        """PUT …/services/{id}."""
        await self.transport.request("PUT", f"{self.base}/services/{seg(service_id)}", body=body)

    async def delete_services(self, service_ids: list[str]) -> list[dict[str, Any]]:
        """POST …/services/delete: one answer per service."""
        r = await self.transport.request("POST", f"{self.base}/services/delete", body={"service_ids": service_ids})
        return list((r.body or {}).get("service_responses") or [])

    async def search(self, offset: int = 0, limit: int = 50, filters: list[dict[str, Any]] | None = None,
                     order: str = "asc", attempts: int | None = None) -> JobSearchPage:
        """POST training-job-searches (a read: retried like any idempotent call). `offset` is sent as it is:
        the SDK documents it as the page number (from 0, `limit` 1-50 per page); see docs/vendors.md."""
        body = {"offset": offset, "limit": limit, "sort_by": "create_time", "order": order,
                "filters": filters or []}
        r = await self.transport.request("POST", f"{self.base}/training-job-searches", body=body, attempts=attempts)
        return r.decode(JobSearchPage)

    async def terminate(self, job_id: str) -> None:
        """POST actions {action_type: terminate}."""
        await self.transport.request("POST", f"{self.base}/training-jobs/{seg(job_id)}/actions",
                                     body={"action_type": "terminate"})

    async def delete(self, job_id: str) -> None:
        """DELETE one job."""
        await self.transport.request("DELETE", f"{self.base}/training-jobs/{seg(job_id)}")

    async def log_preview(self, job_id: str, task: str) -> dict[str, Any]:
        """GET …/tasks/{task}/logs/preview."""
        r = await self.transport.request("GET", f"{self.base}/training-jobs/{seg(job_id)}/tasks/{seg(task)}/logs/preview")
        return dict(r.body or {})

    async def metrics(self, job_id: str, task: str) -> list[dict[str, Any]]:
        """GET …/training-jobs/{id}/metrics/{task}: per-minute averages of each running metric."""
        r = await self.transport.request("GET", f"{self.base}/training-jobs/{seg(job_id)}/metrics/{seg(task)}")
        return list((r.body or {}).get("metrics") or [])

    async def events(self, job_id: str) -> list[dict[str, Any]]:
        """GET …/events, oldest first."""
        r = await self.transport.request("GET", f"{self.base}/training-jobs/{seg(job_id)}/events",
                                         query=[("limit", "100"), ("offset", "0"), ("order", "asc")])
        return list((r.body or {}).get("events") or [])
