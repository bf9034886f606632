"""Finding which of many jobs left a phase, with a vendor that can count but not say "changed since".

ModelArts' job search filters by phase and by a creation-time range and answers with the `total` that
matched besides one page of records. So one request can confirm that all N jobs believed Running still
are (the count matches); when it does not, halving the creation-time window finds the jobs that left in
about log2(N / page) + 1 requests per change, instead of N / page requests for reading every page. A
window small enough for one page is read whole, which also shows jobs the gateway does not know (another
client's), so they are counted from then on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

# query(lo_ms, hi_ms) -> (how many jobs in the phase were created in [lo_ms, hi_ms], the first page of them
# as (id, creation ms, record))
Item = tuple[str, int, T]
Query = Callable[[int, int], Awaitable[tuple[int, list[Item[T]]]]]


@dataclass
class CensusResult(Generic[T]):
    """What a census learnt."""

    seen: dict[str, T] = field(default_factory=dict)  # records read (jobs still in the phase), by id
    left: list[str] = field(default_factory=list)  # member ids no longer in the phase
    strangers: dict[str, tuple[int, T]] = field(default_factory=dict)  # in the phase, not members: (born ms, record)
    unsure: list[str] = field(default_factory=list)  # members a window could not settle (read them one by one)
    deferred: int = 0  # members in windows left for the next census (max_requests reached)
    requests: int = 0


async def census(members: list[tuple[int, str]], query: Query[T], page: int,
                 max_requests: int | None = None) -> CensusResult[T]:
    """Which `members` ((creation ms, id), the jobs believed in one phase) have left it."""
    out: CensusResult[T] = CensusResult()
    ms = sorted(members)
    if not ms:
        return out

    async def ask(lo: int, hi: int) -> tuple[int, list[Item[T]]]:
        out.requests += 1
        return await query(lo, hi)

    def settle(i: int, j: int, items: list[Item[T]]) -> None:
        ids = {m[1] for m in ms[i:j]}
        read = {key: (born, item) for key, born, item in items}
        out.left.extend(m for _, m in ms[i:j] if m not in read)
        for key, (born, item) in read.items():
            if key in ids:
                out.seen[key] = item
            else:
                out.strangers[key] = (born, item)

    async def visit(i: int, j: int, lo: int, hi: int, total: int, items: list[Item[T]] | None) -> None:
        expected = j - i
        if items is not None and total <= page:  # the whole window is in hand
            settle(i, j, items)
            return
        if total == expected:
            return
        if total == 0:
            out.left.extend(m for _, m in ms[i:j])
            return
        if max_requests is not None and out.requests >= max_requests:
            out.deferred += expected  # still miscounted next time: found then
            return
        if expected <= page and total <= page:
            total, items = await ask(lo, hi)
            await visit(i, j, lo, hi, total, items)
            return
        # Split at a creation-ms boundary near the middle member, so each member falls in one half.
        mid = (i + j) // 2
        while mid > i and ms[mid - 1][0] == ms[mid][0]:
            mid -= 1
        if mid == i:
            mid = (i + j) // 2
            while mid < j and ms[mid][0] == ms[(i + j) // 2][0]:
                mid += 1
        if mid in (i, j) or lo >= hi:
            # One creation ms holds more than a page of jobs: the counts cannot tell them apart.
            out.unsure.extend(m for _, m in ms[i:j])
            return
        cut = ms[mid][0]  # left: [lo, cut - 1], right: [cut, hi]
        left_total, left_items = await ask(lo, cut - 1)
        await visit(i, mid, lo, cut - 1, left_total, left_items)
        await visit(mid, j, cut, hi, total - left_total, None)

    lo, hi = ms[0][0], ms[-1][0]
    total, items = await ask(lo, hi)
    await visit(0, len(ms), lo, hi, total, items)
    return out
