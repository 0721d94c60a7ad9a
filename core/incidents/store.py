"""Incidents as rows: opening, timeline updates, resolving, reopening,
acknowledging, and the public projection and alert payload.

The incident engine (monitor down → incident) and the IncidentService (the
API) both write through these functions, inside the caller's transaction;
the caller commits (and wakes the dispatcher when it queued alerts).
Times are aware UTC datetimes.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from observe.v1 import incidents_pb2
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core import clock
from core.incidents.tables import alert_deliveries, incident_updates, incidents
from core.monitors.store import SELECT as MONITOR_SELECT
from core.monitors.store import MonitorStore
from core.rpc.jsonmap import JsonCodec, enum_json_names
from core.storage import tables as t

STATUSES = ("investigating", "identified", "monitoring", "resolved")
OPEN_STATUSES = STATUSES[:3]
STATUS_NUMBERS: dict[str, int] = {
    name: number for number, name in enum_json_names(incidents_pb2.IncidentStatus.DESCRIPTOR).items()
}
STATUS_NAMES: dict[int, str] = {number: name for name, number in STATUS_NUMBERS.items()}
OUTCOME_NUMBERS: dict[str, int] = {
    name: number for number, name in enum_json_names(incidents_pb2.DeliveryOutcome.DESCRIPTOR).items()
}

_CODEC = JsonCodec()


def _repeat_at(now: datetime, repeat_min: int) -> datetime | None:
    return now + timedelta(minutes=repeat_min) if repeat_min else None


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown incident status {status!r}")


# ---- reads -------------------------------------------------------------------


async def get_row(conn: AsyncConnection, incident_id: int, *, org_id: int | None = None, lock: bool = False) -> Any:
    """The incident row, or None (also when it belongs to another org than ``org_id``).
    ``lock`` takes a row lock (PostgreSQL; SQLite writers are serialised anyway)."""
    query = select(incidents).where(incidents.c.id == incident_id)
    if org_id is not None:
        query = query.where(incidents.c.org_id == org_id)
    if lock and conn.dialect.name != "sqlite":
        query = query.with_for_update()
    return (await conn.execute(query)).one_or_none()


async def open_incident_of(conn: AsyncConnection, monitor_id: int) -> Any | None:
    """The monitor's open incident row (resolved_at NULL), if any; the newest if ever several."""
    query = (
        select(incidents)
        .where(incidents.c.monitor_id == monitor_id, incidents.c.resolved_at.is_(None))
        .order_by(incidents.c.id.desc())
        .limit(1)
    )
    return (await conn.execute(query)).first()


async def recently_auto_resolved(conn: AsyncConnection, monitor_id: int, since: datetime) -> Any | None:
    """The monitor's newest incident if it was resolved automatically at or after ``since``."""
    query = select(incidents).where(incidents.c.monitor_id == monitor_id).order_by(incidents.c.id.desc()).limit(1)
    row = (await conn.execute(query)).first()
    if row is None or not row.auto_resolved or row.resolved_at is None or row.resolved_at < since:
        return None
    return row


# ---- writes ------------------------------------------------------------------


async def _insert_update(
    conn: AsyncConnection, incident_id: int, status: str, message: str, author_user_id: int | None, now: datetime
) -> int:
    update_id: int = (
        await conn.execute(
            insert(incident_updates)
            .values(
                incident_id=incident_id,
                status=status,
                message=message,
                author_user_id=author_user_id,
                created_at=now,
            )
            .returning(incident_updates.c.id)
        )
    ).scalar_one()
    return update_id


async def open_incident(
    conn: AsyncConnection,
    *,
    org_id: int,
    monitor_id: int | None,
    title: str,
    cause: dict[str, Any] | None,
    started_at: datetime,
    automatic: bool,
    message: str,
    author_user_id: int | None,
    now: datetime,
    status: str = "investigating",
    repeat_min: int = 0,
) -> int:
    """Inserts an open incident and its first timeline update; returns its id."""
    _check_status(status)
    if status == "resolved":
        raise ValueError("an incident opens in an open status")
    incident_id: int = (
        await conn.execute(
            insert(incidents)
            .values(
                org_id=org_id,
                monitor_id=monitor_id,
                title=title,
                status=status,
                automatic=automatic,
                cause=json.dumps(cause, separators=(",", ":")) if cause is not None else None,
                started_at=started_at,
                resolved_at=None,
                auto_resolved=False,
                next_repeat_at=_repeat_at(now, repeat_min),
                created_at=now,
                updated_at=now,
            )
            .returning(incidents.c.id)
        )
    ).scalar_one()
    await _insert_update(conn, incident_id, status, message, author_user_id, now)
    return incident_id


async def add_update(
    conn: AsyncConnection,
    incident_id: int,
    *,
    status: str,
    message: str,
    author_user_id: int | None,
    now: datetime,
) -> int:
    """Writes a timeline update and makes ``status`` the incident's. ``resolved``
    resolves an open incident (by hand: auto_resolved false, no more repeats);
    an open status on a resolved incident reopens it (no longer resolved, a new
    acknowledgement needed). Returns the update's id."""
    _check_status(status)
    row = await get_row(conn, incident_id)
    if row is None:
        raise LookupError(f"no incident {incident_id}")
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if status == "resolved" and row.resolved_at is None:
        values.update(resolved_at=now, auto_resolved=False, next_repeat_at=None)
    elif status != "resolved" and row.resolved_at is not None:
        values.update(resolved_at=None, auto_resolved=False, acknowledged_at=None, ack_user_id=None,
                      ack_pat_id=None, next_repeat_at=None)  # fmt: skip
    await conn.execute(update(incidents).where(incidents.c.id == incident_id).values(**values))
    return await _insert_update(conn, incident_id, status, message, author_user_id, now)


async def resolve(
    conn: AsyncConnection,
    incident_id: int,
    *,
    message: str,
    author_user_id: int | None,
    now: datetime,
    automatic: bool,
) -> bool:
    """Resolves an open incident with a ``resolved`` update; False (nothing
    changed) when it is already resolved."""
    result = await conn.execute(
        update(incidents)
        .where(incidents.c.id == incident_id, incidents.c.resolved_at.is_(None))
        .values(status="resolved", resolved_at=now, auto_resolved=automatic, next_repeat_at=None, updated_at=now)
    )
    if result.rowcount == 0:
        return False
    await _insert_update(conn, incident_id, "resolved", message, author_user_id, now)
    return True


async def reopen(conn: AsyncConnection, incident_id: int, *, message: str, now: datetime, repeat_min: int = 0) -> None:
    """Reopens a resolved incident (investigating, unacknowledged, repeats as
    when opened) with an automatic update saying so."""
    await conn.execute(
        update(incidents)
        .where(incidents.c.id == incident_id)
        .values(
            status="investigating",
            resolved_at=None,
            auto_resolved=False,
            acknowledged_at=None,
            ack_user_id=None,
            ack_pat_id=None,
            next_repeat_at=_repeat_at(now, repeat_min),
            updated_at=now,
        )
    )
    await _insert_update(conn, incident_id, "investigating", message, None, now)


async def acknowledge(
    conn: AsyncConnection, incident_id: int, *, user_id: int | None, pat_id: int | None, now: datetime
) -> bool:
    """Marks an open, unacknowledged incident acknowledged (repeats stop);
    False (nothing changed) when it is acknowledged already or resolved."""
    result = await conn.execute(
        update(incidents)
        .where(
            incidents.c.id == incident_id,
            incidents.c.acknowledged_at.is_(None),
            incidents.c.resolved_at.is_(None),
        )
        .values(acknowledged_at=now, ack_user_id=user_id, ack_pat_id=pat_id, next_repeat_at=None, updated_at=now)
    )
    return bool(result.rowcount)


async def set_postmortem(conn: AsyncConnection, incident_id: int, markdown: str, now: datetime) -> None:
    """Stores the postmortem as written; "" clears it (and its time)."""
    await conn.execute(
        update(incidents)
        .where(incidents.c.id == incident_id)
        .values(
            postmortem=markdown or None,
            postmortem_updated_at=now if markdown else None,
            updated_at=now,
        )
    )


# ---- messages ----------------------------------------------------------------


def update_message(row: Any) -> incidents_pb2.IncidentUpdate:
    out = incidents_pb2.IncidentUpdate(
        id=row.id,
        status=STATUS_NUMBERS[row.status],  # type: ignore[arg-type]
        message=row.message,
        created_at=clock.to_timestamp(row.created_at),
    )
    if row.author_user_id is not None:
        out.author_user_id = row.author_user_id
    return out


def delivery_message(row: Any) -> incidents_pb2.AlertDelivery:
    out = incidents_pb2.AlertDelivery(
        id=row.id,
        channel=row.channel,
        event=row.event,
        attempt=row.attempt,
        outcome=OUTCOME_NUMBERS[row.outcome],  # type: ignore[arg-type]
        at=clock.to_timestamp(row.at),
    )
    if row.http_status is not None:
        out.http_status = row.http_status
    if row.error is not None:
        out.error = row.error
    return out


def _cause_message(text: str) -> incidents_pb2.IncidentCause:
    cause: dict[str, Any] = json.loads(text)
    out = incidents_pb2.IncidentCause(reason=cause.get("reason") or "", regions=cause.get("regions") or [])
    if cause.get("statusCode") is not None:
        out.status_code = cause["statusCode"]
    if cause.get("error") is not None:
        out.error = cause["error"]
    return out


def incident_message(
    row: Any, updates: list[Any], deliveries: list[Any], now: datetime | None = None
) -> incidents_pb2.Incident:
    """The Incident for a row and its update (and delivery) rows, oldest first."""
    end = row.resolved_at or (now or clock.now())
    out = incidents_pb2.Incident(
        id=row.id,
        title=row.title,
        status=STATUS_NUMBERS[row.status],  # type: ignore[arg-type]
        acknowledged=row.acknowledged_at is not None,
        started_at=clock.to_timestamp(row.started_at),
        duration_sec=max(0, int((end - row.started_at).total_seconds())),
        updates=[update_message(u) for u in updates],
        deliveries=[delivery_message(d) for d in deliveries],
    )
    if row.monitor_id is not None:
        out.monitor_id = row.monitor_id
    if row.log_alert_id is not None:
        out.log_alert_id = row.log_alert_id
    if row.acknowledged_at is not None:
        out.acknowledged_at.CopyFrom(clock.to_timestamp(row.acknowledged_at))
        actor = incidents_pb2.IncidentActor()
        if row.ack_user_id is not None:
            actor.user_id = row.ack_user_id
        if row.ack_pat_id is not None:
            actor.pat_id = row.ack_pat_id
        out.acknowledged_by.CopyFrom(actor)
    if row.cause is not None:
        out.cause.CopyFrom(_cause_message(row.cause))
    if row.resolved_at is not None:
        out.resolved_at.CopyFrom(clock.to_timestamp(row.resolved_at))
    if row.postmortem is not None:
        out.postmortem = row.postmortem
    if row.postmortem_updated_at is not None:
        out.postmortem_updated_at.CopyFrom(clock.to_timestamp(row.postmortem_updated_at))
    return out


async def updates_of(conn: AsyncConnection, incident_ids: list[int]) -> dict[int, list[Any]]:
    """Timeline rows per incident, oldest first."""
    out: dict[int, list[Any]] = {i: [] for i in incident_ids}
    if incident_ids:
        query = (
            select(incident_updates)
            .where(incident_updates.c.incident_id.in_(incident_ids))
            .order_by(incident_updates.c.id)
        )
        for u in (await conn.execute(query)).all():
            out[u.incident_id].append(u)
    return out


async def deliveries_of(conn: AsyncConnection, incident_id: int) -> list[Any]:
    """Delivery records of the incident, oldest first."""
    query = (
        select(alert_deliveries).where(alert_deliveries.c.incident_id == incident_id).order_by(alert_deliveries.c.id)
    )
    return list((await conn.execute(query)).all())


async def projection(conn: AsyncConnection, row_or_id: Any, *, deliveries: bool) -> incidents_pb2.Incident:
    """The public Incident with its timeline; with ``deliveries`` its delivery
    records too. ``row_or_id``: an incidents row or an id (LookupError if none)."""
    row = row_or_id
    if isinstance(row_or_id, int):
        row = await get_row(conn, row_or_id)
        if row is None:
            raise LookupError(f"no incident {row_or_id}")
    updates = (await updates_of(conn, [row.id]))[row.id]
    records = await deliveries_of(conn, row.id) if deliveries else []
    return incident_message(row, updates, records)


async def alert_payload(conn: AsyncConnection, incident_id: int, monitor_store: MonitorStore) -> dict[str, Any]:
    """``{"incident": …, "monitor": … | None}`` in REST JSON, as of now: what an
    alert about the incident carries (no delivery records, no secrets)."""
    incident = await projection(conn, incident_id, deliveries=False)
    monitor: dict[str, Any] | None = None
    if incident.HasField("monitor_id"):
        row = (await conn.execute(MONITOR_SELECT.where(t.monitors.c.id == incident.monitor_id))).first()
        if row is not None:
            monitor = _CODEC.encode(monitor_store.projection(row))
    return {"incident": _CODEC.encode(incident), "monitor": monitor}
