"""The retry policies the gateway's loops share, built on tenacity: full-jitter backoff that never waits less
than a vendor's Retry-After. What is safe to retry stays with each caller (the domain predicates)."""

from __future__ import annotations

from typing import Any

from tenacity import RetryCallState, wait_random_exponential
from tenacity.wait import wait_base


class full_jitter(wait_base):
    """uniform(0, min(cap, base * 2**attempt)) after the attempt-th failure, but at least the failure's own
    `retry_after` (seconds, capped at `retry_after_cap`) when it carries one."""

    def __init__(self, base: float, cap: float, retry_after_cap: float = 30.0) -> None:
        self.jitter = wait_random_exponential(multiplier=base * 2, max=cap)
        self.retry_after_cap = retry_after_cap

    def __call__(self, retry_state: RetryCallState) -> float:
        delay = float(self.jitter(retry_state))
        err: Any = retry_state.outcome.exception() if retry_state.outcome is not None else None
        retry_after = getattr(err, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after > 0:
            delay = max(delay, min(float(retry_after), self.retry_after_cap))
        return delay


def last_error(retry_state: RetryCallState) -> BaseException | None:
    """The exception of the attempt that made the loop give up."""
    return retry_state.outcome.exception() if retry_state.outcome is not None else None
