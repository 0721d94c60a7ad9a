"""The history reads: recent raw results, and stats and timelines from the
rollups (core.monitors.rollups), never from a scan of raw rows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from observe.v1 import monitors_pb2
from sqlalchemy import and_, or_, select

from core import clock
from core.errors import Violations
from core.monitors import validation as val
from core.monitors.rollups import LEVELS, Agg, bucket_start
from core.rpc import paging
from core.rpc.jsonmap import TIMESTAMP_MIN, snake_to_camel
from core.storage import tables as t
from core.storage.db import Database

MAX_BUCKETS = 2000
MAX_BUCKET_SEC = (2**31 - 1) // 300 * 300  # bucketSec is an int32, a multiple of 300
_EARLIEST = datetime.fromtimestamp(TIMESTAMP_MIN, UTC)
# (window field, length, rollup level): 24 h from 5-minute buckets, 7 d from
# hourly ones, 30 d and 90 d from daily ones.
WINDOWS = (("last_24h", timedelta(hours=24), 0), ("last_7d", timedelta(days=7), 1),
           ("last_30d", timedelta(days=30), 2), ("last_90d", timedelta(days=90), 2))  # fmt: skip


def _result_message(row: Any) -> monitors_pb2.CheckResult:
    out = monitors_pb2.CheckResult(
        checked_at=clock.to_precise_timestamp(row.checked_at),
        ok=row.ok,
        region=val.REGION_NUMBERS.get(row.region, 0),  # type: ignore[arg-type]
    )
    if row.response_ms is not None:
        out.response_ms = row.response_ms
    if row.status_code is not None:
        out.status_code = row.status_code
    if row.error:
        out.error = row.error
    if row.reason:
        out.reason = row.reason
    if row.timings:
        out.timings.update({snake_to_camel(k): ms for k, ms in json.loads(row.timings).items()})
    if row.cert_expires_at is not None:
        out.cert_expires_at.CopyFrom(clock.to_timestamp(row.cert_expires_at))
    return out


async def list_checks(
    db: Database, monitor_id: int, limit: int, before_id: int | None
) -> monitors_pb2.ListMonitorChecksResponse:
    r = t.check_results
    query = select(r).where(r.c.monitor_id == monitor_id)
    if before_id is not None:
        query = query.where(r.c.id < before_id)
    async with db.read() as conn:
        rows = (await conn.execute(query.order_by(r.c.id.desc()).limit(limit + 1))).all()
    page, more = rows[:limit], len(rows) > limit
    return monitors_pb2.ListMonitorChecksResponse(
        checks=[_result_message(row) for row in page],
        next_cursor=paging.cursor_out(page[-1].id, "c") if more and page else "",
    )


def _window(agg: Agg) -> monitors_pb2.StatsWindow:
    out = monitors_pb2.StatsWindow(checks=agg.checks, up_checks=agg.up_checks)
    for name, value in (
        ("uptime_pct", agg.uptime_pct()),
        ("avg_ms", agg.avg_ms()),
        ("p50_ms", agg.percentile(0.50)),
        ("p95_ms", agg.percentile(0.95)),
        ("p99_ms", agg.percentile(0.99)),
        ("min_ms", agg.min_ms),
        ("max_ms", agg.max_ms),
    ):
        if value is not None:
            setattr(out, name, round(value, 3))
    return out


async def stats(db: Database, monitor_id: int, now: datetime) -> monitors_pb2.MonitorStats:
    """All four windows from one indexed read of at most ~580 rollup rows."""
    ro = t.check_rollups
    starts = {name: (bucket_start(now - length, level), level) for name, length, level in WINDOWS}
    earliest: dict[int, datetime] = {}
    for start, level in starts.values():
        earliest[level] = min(start, earliest.get(level, start))
    query = select(ro).where(
        ro.c.monitor_id == monitor_id,
        or_(*(and_(ro.c.level == level, ro.c.bucket_start >= start) for level, start in earliest.items())),
    )
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    out = monitors_pb2.MonitorStats(monitor_id=monitor_id)
    for name, (start, level) in starts.items():
        agg = Agg()
        for row in rows:
            if row.level == level and row.bucket_start >= start:
                agg.merge(Agg.from_row(row))
        getattr(out, name).CopyFrom(_window(agg))
    return out


@dataclass(frozen=True, slots=True)
class TimelineWindow:
    start: datetime
    end: datetime
    bucket_sec: int
    level: int


def timeline_window(request: monitors_pb2.GetMonitorTimelineRequest, now: datetime) -> TimelineWindow:
    """The validated range: buckets aligned to multiples of bucket_sec (UTC).
    A range that cannot be bucketed (too long for the largest bucket, or
    aligned to before the first representable second) is a violation on
    ``from``, never an overflow (CONTRACT.md, input hygiene)."""
    v = Violations()
    end = clock.from_timestamp(request.to_time) if request.HasField("to_time") else now
    if request.HasField("from_time"):
        start = clock.from_timestamp(request.from_time)
    else:
        start = end - timedelta(hours=24) if end - _EARLIEST > timedelta(hours=24) else _EARLIEST
    if start >= end:  # one end defaulted (both given: the proto's rule)
        v.add("from", "too_big", "Must be before to")
        v.raise_if_any()
    if request.HasField("bucket_sec"):
        bucket = request.bucket_sec  # a multiple of 300: the proto's rule
    else:
        span = (end - start).total_seconds()
        bucket = max(LEVELS[0], -(-int(span / 90) // LEVELS[0]) * LEVELS[0])
        if bucket > MAX_BUCKET_SEC:
            v.add("from", "too_small", f"Range too long to bucket: bucketSec is at most {MAX_BUCKET_SEC}")
            v.raise_if_any()
    epoch = int(start.timestamp())
    aligned = epoch - epoch % bucket
    if aligned < TIMESTAMP_MIN:
        v.add("from", "too_small", "Aligned to bucketSec, the range starts before 0001-01-01T00:00:00Z")
        v.raise_if_any()
    start = datetime.fromtimestamp(aligned, start.tzinfo)
    if (end - start).total_seconds() / bucket > MAX_BUCKETS:
        v.add("bucketSec", "too_small", f"At most {MAX_BUCKETS} buckets; use a larger bucket or a shorter range")
    v.raise_if_any()
    level = max(i for i, size in enumerate(LEVELS) if bucket % size == 0)
    return TimelineWindow(start, end, bucket, level)


async def timeline(db: Database, monitor_id: int, w: TimelineWindow) -> monitors_pb2.MonitorTimeline:
    ro = t.check_rollups
    query = select(ro).where(
        ro.c.monitor_id == monitor_id,
        ro.c.level == w.level,
        ro.c.bucket_start >= w.start,
        ro.c.bucket_start < w.end,
    )
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    count = -(-int((w.end - w.start).total_seconds()) // w.bucket_sec)
    aggs = [Agg() for _ in range(count)]
    base = w.start.timestamp()
    for row in rows:
        index = int((row.bucket_start.timestamp() - base) // w.bucket_sec)
        if 0 <= index < count:
            aggs[index].merge(Agg.from_row(row))
    out = monitors_pb2.MonitorTimeline(monitor_id=monitor_id, bucket_sec=w.bucket_sec)
    for i, agg in enumerate(aggs):
        bucket = out.buckets.add(start=clock.to_timestamp(w.start + timedelta(seconds=i * w.bucket_sec)))
        bucket.checks, bucket.up_checks = agg.checks, agg.up_checks
        for name, value in (
            ("uptime_pct", agg.uptime_pct()),
            ("avg_ms", agg.avg_ms()),
            ("p95_ms", agg.percentile(0.95)),
        ):
            if value is not None:
                setattr(bucket, name, round(value, 3))
    return out
