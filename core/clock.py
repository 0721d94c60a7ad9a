"""Time helpers: UTC, second precision for API-facing timestamps."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def now() -> datetime:
    """The current UTC time, truncated to whole seconds."""
    return datetime.now(UTC).replace(microsecond=0)


def precise_now() -> datetime:
    """The current UTC time to the microsecond, for leases and schedules."""
    return datetime.now(UTC)


def to_timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def from_timestamp(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)
