"""In-process sliding-window counters for the rate limiter.

The algorithm is the ``limits`` library's sliding-window counter (the one its
Redis storage runs, so limits mean the same with and without Redis): a count
per fixed window, and a call is allowed while the current window's count plus
the previous window's, weighted by the part of it still in view, stays within
the limit.

Why not ``limits``' own in-memory storage: after a hit it schedules a sweep
over every counter it holds whenever the previous sweep has finished, so
with thousands of keys (heartbeat tokens) the sweeps run back to back and
took 36-47 % of the server's CPU in bench/heartbeats.py. Here a counter is
renewed lazily when it is used, and stale ones are dropped in one pass at
most once a minute.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

from limits import RateLimitItem

SWEEP_SEC = 60.0


class Outcome(NamedTuple):
    allowed: bool
    remaining: int
    reset_time: float  # epoch seconds


class LocalWindows:
    def __init__(self) -> None:
        # key → [window index, count in it, count in the window before, window length]
        self._windows: dict[str, list[int]] = {}
        self._next_sweep = time.monotonic() + SWEEP_SEC

    def __len__(self) -> int:
        return len(self._windows)

    def hit(self, item: RateLimitItem, key: str, now: float | None = None) -> Outcome:
        """Counts one call for ``key`` under ``item`` (when allowed)."""
        now = time.time() if now is None else now
        period = item.get_expiry()
        index = int(now // period)
        entry = self._windows.get(key)
        if entry is None or entry[0] < index - 1 or entry[3] != period:
            previous, current = 0, 0
        elif entry[0] == index - 1:
            previous, current = entry[1], 0
        else:
            previous, current = entry[2], entry[1]
        previous_ttl = period - now % period
        weighted = previous * previous_ttl / period + current
        allowed = math.floor(weighted) + 1 <= item.amount
        if allowed:
            current += 1
            weighted += 1
        self._windows[key] = [index, current, previous, period]
        remaining = max(0, item.amount - math.floor(weighted))
        resets = [previous_ttl % (period / previous)] if previous else []
        if current:
            resets.append(previous_ttl % period)  # the current window's end
        if time.monotonic() >= self._next_sweep:
            self._sweep(now)
        return Outcome(allowed, remaining, now + min(resets) if resets else now)

    def _sweep(self, now: float) -> None:
        self._next_sweep = time.monotonic() + SWEEP_SEC
        stale = [k for k, (index, _, _, period) in self._windows.items() if index < int(now // period) - 1]
        for key in stale:
            del self._windows[key]
