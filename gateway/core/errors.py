"""The gateway's one error tree; the HTTP middleware turns each into problem+json."""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """Base of every error the gateway reports to a user."""

    status = 500
    title = "Internal error"
    type_slug = "internal"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.extra = extra or {}

    def problem(self) -> dict[str, Any]:
        """Render as an RFC 9457 problem document."""
        body: dict[str, Any] = {
            "type": f"https://trainjob-gateway.dev/problems/{self.type_slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


class BadRequest(GatewayError):
    status = 400
    title = "Bad request"
    type_slug = "bad-request"


class Unauthorized(GatewayError):
    status = 401
    title = "Unauthorized"
    type_slug = "unauthorized"


class Forbidden(GatewayError):
    status = 403
    title = "Forbidden"
    type_slug = "forbidden"


class NotFound(GatewayError):
    status = 404
    title = "Not found"
    type_slug = "not-found"


class Conflict(GatewayError):
    status = 409
    title = "Conflict"
    type_slug = "conflict"


class PayloadTooLarge(GatewayError):
    status = 413
    title = "Payload too large"
    type_slug = "payload-too-large"


class RequestTimeout(GatewayError):
    status = 408
    title = "Request timeout"
    type_slug = "request-timeout"


class UnsupportedMediaType(GatewayError):
    status = 415
    title = "Unsupported media type"
    type_slug = "unsupported-media-type"


class TooManyRequests(GatewayError):
    """A per-tenant limit was reached (e.g. open watch streams); Retry-After says when to try again."""

    status = 429
    title = "Too many requests"
    type_slug = "too-many-requests"


class ValidationError(GatewayError):
    status = 422
    title = "Validation failed"
    type_slug = "validation"


class UnsupportedByBackend(GatewayError):
    """The backend cannot do this at all; refused before any vendor call."""

    status = 409
    title = "Not supported by the backend"
    type_slug = "unsupported"


class BackendError(GatewayError):
    """A vendor call failed; carries the vendor's code and message, never a credential."""

    status = 502
    title = "Backend error"
    type_slug = "backend"

    def __init__(self, detail: str, *, backend: str = "", vendor_status: int | None = None,
                 vendor_code: str | None = None, vendor_message: str | None = None,
                 retry_after: float | None = None) -> None:
        extra: dict[str, Any] = {}
        if backend:
            extra["backend"] = backend
        if vendor_code is not None:
            extra["vendor_code"] = vendor_code
        if vendor_message is not None:
            extra["vendor_message"] = vendor_message
        if vendor_status is not None:
            extra["vendor_status"] = vendor_status
        super().__init__(detail, extra=extra)
        self.backend = backend
        self.vendor_status = vendor_status
        self.vendor_code = vendor_code
        self.vendor_message = vendor_message
        self.retry_after = retry_after


class BackendAuthError(BackendError):
    title = "Backend rejected the gateway's credentials"
    type_slug = "backend-auth"


class BackendUnavailable(BackendError):
    """Transient: timeouts, resets, 5xx, an open circuit."""

    status = 503
    title = "Backend unavailable"
    type_slug = "backend-unavailable"


class BackendRateLimited(BackendUnavailable):
    status = 503
    title = "Backend rate limited"
    type_slug = "backend-rate-limited"


class BackendRejected(BackendError):
    """The vendor refused the request (4xx other than auth); retrying will not help."""

    status = 422
    title = "Backend rejected the request"
    type_slug = "backend-rejected"


class BackendNotFound(BackendRejected):
    status = 404
    title = "Not found on the backend"
    type_slug = "backend-not-found"


class BackendConflict(BackendRejected):
    status = 409
    title = "Backend conflict"
    type_slug = "backend-conflict"


class AmbiguousCreate(BackendUnavailable):
    """The create may or may not have been applied: the response never arrived."""

    title = "Create outcome unknown"
    type_slug = "ambiguous-create"


class GatewayUnreachable(GatewayError):
    """Client side: the gateway could not be reached, or what answered was not the gateway."""

    status = 503
    title = "Gateway unreachable"
    type_slug = "unreachable"


class StartupError(GatewayError):
    """The gateway cannot start (a port in use, a bad address): says which setting to change."""

    title = "Cannot start"
    type_slug = "startup"
