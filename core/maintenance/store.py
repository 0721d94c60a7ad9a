"""Maintenance windows as rows: a window's settings (a dict in API field
names) to and from rows, the merge a patch makes, the public projection and
the audit view. Coverage lists are JSON text (see tables.py)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from observe.v1 import maintenance_pb2
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core import clock
from core.maintenance.schedule import Schedule, ScheduleError, State, parse_schedule
from core.maintenance.tables import maintenance_windows as mw
from core.rpc import patches
from core.rpc.jsonmap import enum_json_names

Input = maintenance_pb2.MaintenanceWindowInput
FIELDS = {fd.json_name: fd for fd in Input.DESCRIPTOR.fields}
STATUS_NUMBERS = {name: n for n, name in enum_json_names(maintenance_pb2.MaintenanceStatus.DESCRIPTOR).items()}
DEFAULTS: dict[str, Any] = {"timezone": "UTC", "monitorIds": [], "tags": [], "allMonitors": False}
_TIMES = ("startsAt", "endsAt")


def present_fields(msg: Any, mask: Iterable[str] | None = None) -> dict[str, Any]:
    """The fields a create or patch gives, in API names (core.rpc.patches); an unset one is None, i.e. cleared."""
    out: dict[str, Any] = {}
    for fd, given in patches.given_fields(msg, mask):
        name = fd.json_name
        if not given:
            out[name] = None
        elif name in _TIMES:
            out[name] = clock.from_timestamp(getattr(msg, fd.name))
        elif fd.is_repeated:
            out[name] = list(getattr(msg, fd.name))
        else:
            out[name] = getattr(msg, fd.name)
    return out


def unknown_mask_paths(mask: Iterable[str]) -> list[str]:
    return patches.unknown_mask_paths(Input.DESCRIPTOR, mask)


def merge(current: dict[str, Any] | None, given: dict[str, Any]) -> dict[str, Any]:
    """The window after applying ``given`` to ``current`` (None on create),
    defaults filled; a field cleared with null falls back to its default or
    goes (and a required one is then missing, for the proto's rule)."""
    merged = {**(current or {}), **given}
    for key, default in DEFAULTS.items():
        if merged.get(key) is None:
            merged[key] = default
    if isinstance(merged.get("tags"), list):
        merged["tags"] = list(dict.fromkeys(merged["tags"]))
    return {k: v for k, v in merged.items() if v is not None}


def as_input(m: dict[str, Any]) -> maintenance_pb2.MaintenanceWindowInput:
    """Settings in API field names as a MaintenanceWindowInput (what the
    validator re-checks and the audit log diffs)."""
    msg = Input()
    for key, value in m.items():
        fd = FIELDS.get(key)
        if fd is None or value is None:
            continue
        if key in _TIMES:
            getattr(msg, fd.name).CopyFrom(_timestamp(value))
        elif fd.is_repeated:
            getattr(msg, fd.name).extend(value)
        else:
            setattr(msg, fd.name, value)
    return msg


def _timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def settings(row: Any) -> dict[str, Any]:
    """A row's window in API field names."""
    m: dict[str, Any] = {
        "name": row.name,
        "startsAt": row.starts_at,
        "endsAt": row.ends_at,
        "timezone": row.timezone,
        "monitorIds": json.loads(row.monitor_ids),
        "tags": json.loads(row.tags),
        "allMonitors": bool(row.all_monitors),
    }
    if row.description is not None:
        m["description"] = row.description
    if row.rrule is not None:
        m["rrule"] = row.rrule
    return m


def row_values(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": m["name"],
        "description": m.get("description"),
        "starts_at": m["startsAt"],
        "ends_at": m["endsAt"],
        "rrule": m.get("rrule"),
        "timezone": m["timezone"],
        "monitor_ids": json.dumps(m["monitorIds"]),
        "tags": json.dumps(m["tags"]),
        "all_monitors": bool(m["allMonitors"]),
    }


async def insert_window(conn: AsyncConnection, org_id: int, m: dict[str, Any], now: datetime) -> int:
    window_id: int = (
        await conn.execute(
            insert(mw).values(org_id=org_id, created_at=now, updated_at=now, **row_values(m)).returning(mw.c.id)
        )
    ).scalar_one()
    return window_id


async def update_window(conn: AsyncConnection, window_id: int, m: dict[str, Any], now: datetime) -> None:
    await conn.execute(update(mw).where(mw.c.id == window_id).values(updated_at=now, **row_values(m)))


def schedule_of(row: Any) -> Schedule:
    """A stored window's schedule. Stored windows were valid when written;
    should one no longer parse (a time zone gone from the system's
    database), its first occurrence still counts, in UTC."""
    try:
        return parse_schedule(starts_at=row.starts_at, ends_at=row.ends_at, rrule=row.rrule, timezone=row.timezone)
    except ScheduleError:
        return parse_schedule(starts_at=row.starts_at, ends_at=row.ends_at)


def projection(row: Any, state: State) -> maintenance_pb2.MaintenanceWindow:
    """The public projection: the stored fields plus ``state`` (status and
    the current occurrence while active, else the next)."""
    out = maintenance_pb2.MaintenanceWindow(
        id=row.id,
        name=row.name,
        starts_at=clock.to_timestamp(row.starts_at),
        ends_at=clock.to_timestamp(row.ends_at),
        timezone=row.timezone,
        monitor_ids=json.loads(row.monitor_ids),
        tags=json.loads(row.tags),
        all_monitors=bool(row.all_monitors),
        status=STATUS_NUMBERS[state.status.value],  # type: ignore[arg-type]
        created_at=clock.to_timestamp(row.created_at),
        updated_at=clock.to_timestamp(row.updated_at),
    )
    if row.description is not None:
        out.description = row.description
    if row.rrule is not None:
        out.rrule = row.rrule
    if state.next is not None:
        out.next_starts_at.CopyFrom(clock.to_timestamp(state.next.starts_at))
        out.next_ends_at.CopyFrom(clock.to_timestamp(state.next.ends_at))
    return out
