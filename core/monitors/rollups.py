"""Rollups of check results: per monitor, per 5-minute, hourly and daily
bucket, the counts, response-time sum/min/max and a log-scale histogram
(bins 5 % wide) from which percentiles of any union of buckets are read
within 2.5 %. Kept as results arrive, so stats never scan raw rows."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

LEVELS = (300, 3600, 86400)  # level number = index: 5 minutes, 1 hour, 1 day
_RATIO = 1.05
_LOG_RATIO = math.log(_RATIO)
_FLOOR_MS = 0.1


def bucket_start(at: datetime, level: int) -> datetime:
    size = LEVELS[level]
    epoch = int(at.timestamp())
    return datetime.fromtimestamp(epoch - epoch % size, UTC)


def _bin(ms: float) -> int:
    return max(0, int(math.log(max(ms, _FLOOR_MS) / _FLOOR_MS) / _LOG_RATIO))


def _bin_value(index: int) -> float:
    return float(_FLOOR_MS * _RATIO ** (index + 0.5))


@dataclass(slots=True)
class Agg:
    """Counts and response-time distribution of some checks."""

    checks: int = 0
    up_checks: int = 0
    timed: int = 0
    sum_ms: float = 0.0
    min_ms: float | None = None
    max_ms: float | None = None
    hist: dict[int, int] = field(default_factory=dict)

    def add(self, ok: bool, ms: float | None) -> None:
        self.checks += 1
        self.up_checks += ok
        if ms is None:
            return
        self.timed += 1
        self.sum_ms += ms
        self.min_ms = ms if self.min_ms is None else min(self.min_ms, ms)
        self.max_ms = ms if self.max_ms is None else max(self.max_ms, ms)
        b = _bin(ms)
        self.hist[b] = self.hist.get(b, 0) + 1

    def merge(self, other: Agg) -> None:
        self.checks += other.checks
        self.up_checks += other.up_checks
        self.timed += other.timed
        self.sum_ms += other.sum_ms
        for attr, pick in (("min_ms", min), ("max_ms", max)):
            theirs = getattr(other, attr)
            if theirs is not None:
                mine = getattr(self, attr)
                setattr(self, attr, theirs if mine is None else pick(mine, theirs))
        for b, n in other.hist.items():
            self.hist[b] = self.hist.get(b, 0) + n

    def percentile(self, q: float) -> float | None:
        if not self.timed:
            return None
        rank = q * self.timed
        seen = 0
        for b in sorted(self.hist):
            seen += self.hist[b]
            if seen >= rank:
                value = _bin_value(b)
                # The true value lies in the bin; the observed extremes bound it.
                return min(max(value, self.min_ms or value), self.max_ms or value)
        return self.max_ms

    def uptime_pct(self) -> float | None:
        return round(100.0 * self.up_checks / self.checks, 4) if self.checks else None

    def avg_ms(self) -> float | None:
        return self.sum_ms / self.timed if self.timed else None

    def row(self) -> dict[str, Any]:
        return {
            "checks": self.checks,
            "up_checks": self.up_checks,
            "timed": self.timed,
            "sum_ms": self.sum_ms,
            "min_ms": self.min_ms,
            "max_ms": self.max_ms,
            "hist": json.dumps({str(k): v for k, v in self.hist.items()}, separators=(",", ":")),
        }

    @classmethod
    def from_row(cls, row: Any) -> Agg:
        return cls(
            checks=row.checks,
            up_checks=row.up_checks,
            timed=row.timed,
            sum_ms=row.sum_ms,
            min_ms=row.min_ms,
            max_ms=row.max_ms,
            hist={int(k): v for k, v in json.loads(row.hist).items()},
        )
