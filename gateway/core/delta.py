"""Reading a vendor's "changed since" list without missing a change.

A vendor that stamps each phase change (Run:ai's `phaseUpdatedAt`) can be asked for the records stamped
at or after a mark. Two things make that subtle, and this module is where they are handled:

- Paging by offset through a list sorted by the stamp skips records: a record that changes between two
  pages moves to the end, and every record after it shifts back by one. Pages are read by key instead
  (each page asks from the last stamp of the one before), so a record that changes meanwhile is met again
  further on.
- The mark must never pass a change not yet read. Stamps come from the vendor's clock, so the mark after
  a delta is the newest stamp it read (every later change carries a later stamp); after a whole-list read
  it is when that read began on this host's clock, less the clock-skew allowance (and never earlier than
  when the last delta began, less the same). Each query starts `overlap` seconds before the mark, for a
  change that becomes visible after a later one.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

# fetch(since, offset) -> one page, in ascending stamp order, of (stamp, key, item) stamped at or after since
Fetch = Callable[[float, int], Awaitable[list[tuple[float, str, T]]]]


@dataclass
class ChangeCursor(Generic[T]):
    """Where the next "changed since" query starts (epoch seconds on the vendor's clock)."""

    overlap: float = 2.0  # seconds re-read before the mark: changes that become visible late
    skew: float = 5.0  # how far the vendor's clock may run behind this host's
    mark: float | None = None
    clock: Callable[[], float] = time.time

    def reconciled(self, started: float) -> None:
        """A whole-list read that began at `started` (this host's clock) has completed: every change
        before then has been read."""
        floor = started - self.skew
        self.mark = floor if self.mark is None else max(self.mark, floor)

    def forget(self) -> None:
        """Nothing read can be trusted any more (e.g. a delta failed half-way): the next sync reads all."""
        self.mark = None

    async def changes(self, fetch: Fetch[T], limit: int) -> tuple[dict[str, T], int] | None:
        """The items changed since the mark, by key (the newest read of each), and the requests made;
        None when there is no mark yet. Moves the mark only when every page has been read."""
        if self.mark is None:
            return None
        # Every change from now on is stamped after this (a vendor clock at most `skew` behind): without it,
        # a burst of changes followed by quiet would be read again by every query for as long as the quiet.
        floor = self.clock() - self.skew
        since = self.mark - self.overlap
        newest = self.mark
        found: dict[str, T] = {}
        offset, requests = 0, 0
        hold: float | None = None
        while True:
            page = await fetch(since, offset)
            requests += 1
            for stamp, key, item in page:
                found[key] = item
                newest = max(newest, stamp)
            if len(page) < limit:
                break
            last = page[-1][0]
            # From the last stamp read, not by offset. A page all of one stamp can only page on by offset,
            # which skips a record when one before it changes meanwhile: the mark then stays at that stamp,
            # so the next delta reads from there again.
            if last > since:
                since, offset = last, 0
            else:
                offset += limit
                hold = since if hold is None else min(hold, since)
        mark = max(newest, floor)
        self.mark = mark if hold is None else min(mark, hold)
        return found, requests
