"""Managed recovery's rules, as pure functions: an ended attempt + the job's `retry` + its history -> what next.

A job's attempts are its vendor jobs, one at a time. An attempt that ends FAILED (or, with failover, one a
vendor keeps requeued after a preemption) is followed by another while the failure matches `retry.on` or
`retry.exit_codes` and neither `max_attempts` nor `within` is spent; otherwise the job ends, and
`retry_outcome` says which rule stopped it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gateway.core.models import Reason, RetrySpec

Outcome = Literal["not-retryable", "max-attempts", "within", "cancelled"]


@dataclass(frozen=True)
class Failure:
    """How an attempt failed, as its last status says."""

    reason: Reason | None
    exit_code: int | None = None


@dataclass(frozen=True)
class Decision:
    """Retry (a next attempt follows) or stop, with `outcome` saying why, and words for the job's status."""

    retry: bool
    message: str
    outcome: Outcome | None = None


def matches(policy: RetrySpec, failure: Failure) -> bool:
    """Whether the rules retry this failure: its reason is in `on`, or its exit code in `exit_codes`."""
    if failure.reason is not None and failure.reason.value in policy.on:
        return True
    return failure.exit_code is not None and failure.exit_code in (policy.exit_codes or [])


def decide(policy: RetrySpec, failure: Failure, attempt: int, accepted_at: float, now: float,
           cancelled: bool = False) -> Decision:
    """What follows attempt number `attempt` (1 first) of a job accepted at `accepted_at` that failed so."""
    what = failure.reason.value if failure.reason is not None else "unknown reason"
    if failure.exit_code is not None:
        what += f", exit code {failure.exit_code}"
    if cancelled:
        return Decision(False, f"attempt {attempt} ended ({what}) after a cancel: not retried", "cancelled")
    if not matches(policy, failure):
        return Decision(False, f"attempt {attempt} failed ({what}), which retry.on and retry.exit_codes do not "
                        "list: not retried", "not-retryable")
    if attempt >= policy.max_attempts:
        return Decision(False, f"attempt {attempt} failed ({what}); retry.max_attempts ({policy.max_attempts}) "
                        "spent", "max-attempts")
    if policy.within is not None and now - accepted_at >= float(policy.within):
        return Decision(False, f"attempt {attempt} failed ({what}); retry.within ({float(policy.within):g} s) "
                        f"spent ({now - accepted_at:.0f} s since the job was accepted)", "within")
    return Decision(True, f"attempt {attempt} failed ({what}); attempt {attempt + 1} follows")


def policy_of(stored: dict[str, Any] | None) -> RetrySpec | None:
    """The retry rules as stored beside a job row (None: the job has none)."""
    return None if not stored else RetrySpec.model_validate(stored)


def failure_of(status: dict[str, Any]) -> Failure:
    """The failure a stored status describes."""
    reason = status.get("reason")
    try:
        r = Reason(reason) if reason else None
    except ValueError:
        r = None
    code = status.get("exit_code")
    return Failure(r, int(code) if isinstance(code, int) else None)


def attempt_name(spec_name: str, attempt: int, limit: int = 54) -> str:
    """The name an attempt's vendor job is made from: the spec's name for the first, then `<name>-a<N>`,
    cut so that the suffix survives the vendor name's length limit (`limit`: before the id suffix)."""
    if attempt <= 1:
        return spec_name
    suffix = f"-a{attempt}"
    return f"{spec_name[: limit - len(suffix)].rstrip('-')}{suffix}"
