"""The retry policies the gateway's loops share, built on tenacity: full-jitter backoff that never waits less
than a vendor's Retry-After. What is safe to retry stays with each caller (the domain predicates)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, wait_random_exponential
from tenacity.wait import wait_base

R = TypeVar("R")


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


async def run(retrying: AsyncRetrying, fn: Callable[..., Awaitable[R]], *args: Any) -> R:
    """`retrying(fn, *args)`, leaving no reference cycle behind."""
    try:
        result: R = await retrying(fn, *args)
        return result
    finally:
        # tenacity keeps its last step's actions (bound methods of itself) after the call: a cycle holding the
        # callbacks' closures, so every vendor call's translation and arguments (~80 objects a submit) waited for
        # the cyclic GC, whose young collections then held the event loop for 10-40 ms in a submit storm.
        retrying.iter_state.reset()
