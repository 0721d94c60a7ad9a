"""Time helpers: UTC, and the precision replies show.

Replies (REST and gRPC) show whole seconds, except check, ping and log times,
which show milliseconds: :func:`to_timestamp` and :func:`to_precise_timestamp`
build them; the JSON encoder keeps the same rule (core.rpc.jsonmap).
"""

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
    """A time for a reply, in whole seconds (truncated)."""
    ts = Timestamp()
    ts.FromDatetime(value.replace(microsecond=0))
    return ts


def to_precise_timestamp(value: datetime) -> Timestamp:
    """A check, ping or log time for a reply, in milliseconds (truncated)."""
    ts = Timestamp()
    ts.FromDatetime(value.replace(microsecond=value.microsecond // 1000 * 1000))
    return ts


def from_timestamp(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)
