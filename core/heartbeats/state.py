"""Reading and writing heartbeat monitors' state inside a transaction: the
one place the ping writer and the lateness watcher share.

Rows are locked (PostgreSQL: ``FOR NO KEY UPDATE`` of the monitors rows, in
id order, so two processes never deadlock and never both act on one
monitor); on SQLite the write transaction is the lock. Status changes are
written as checked monitors' are: ``monitor_state`` and a ``monitor_events``
row, which the incident engine consumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core.heartbeats.schedule import Change, Schedule, State
from core.heartbeats.tables import heartbeat_state
from core.scheduler.events import StatusChange
from core.storage import tables as t
from core.storage.db import Database

_m, _s, _h = t.monitors, t.monitor_state, heartbeat_state

_COLUMNS = (
    _m.c.id,
    _m.c.org_id,
    _m.c.version,
    _m.c.interval_sec,
    _m.c.paused,
    _m.c.settings,
    _m.c.heartbeat_token_hash,
    _s.c.status,
    _h.c.monitor_id.label("has_state"),
    _h.c.last_ping_at,
    _h.c.last_success_at,
    _h.c.counts_from,
    _h.c.open_starts,
    _h.c.deadline_at,
    _h.c.deadline_reason,
)

_STATUS_UPDATE = (
    update(_s)
    .where(_s.c.monitor_id == bindparam("b_id"))
    .values(status=bindparam("b_status"), status_changed_at=bindparam("b_changed"))
)
_SEEN_UPDATE = update(_s).where(_s.c.monitor_id == bindparam("b_id")).values(last_checked_at=bindparam("b_seen"))


@dataclass(slots=True)
class Heartbeat:
    """One locked heartbeat monitor: its settings and state."""

    id: int
    org_id: int
    token_hash: str
    schedule: Schedule
    state: State
    stored: bool  # has a heartbeat_state row
    initial_status: str


def _query(*where: Any) -> Any:
    return (
        select(*_COLUMNS)
        .select_from(_m.join(_s, _s.c.monitor_id == _m.c.id).outerjoin(_h, _h.c.monitor_id == _m.c.id))
        .where(_m.c.type == "heartbeat", *where)
        .order_by(_m.c.id)
    )


async def load(conn: AsyncConnection, db: Database, scale: float, *where: Any) -> list[Heartbeat]:
    """The heartbeat monitors matching ``where`` with their state, locked for
    the rest of the transaction.

    On PostgreSQL the monitors rows are locked first, in id order, and the
    state is read by a second statement: under READ COMMITTED a statement
    that waited for a lock still sees the other tables as of its own start,
    so a state read together with the lock could be the one another process
    has just changed (and it would report the same lateness again)."""
    if not db.is_sqlite:
        locking = select(_m.c.id).where(_m.c.type == "heartbeat", *where).order_by(_m.c.id)
        ids = (await conn.execute(locking.with_for_update(key_share=True))).scalars().all()
        if not ids:
            return []
        where = (_m.c.id.in_(ids),)
    rows = (await conn.execute(_query(*where))).all()
    return [
        Heartbeat(
            id=row.id,
            org_id=row.org_id,
            token_hash=row.heartbeat_token_hash,
            schedule=Schedule.from_row(row.settings, row.interval_sec, row.paused, scale),
            state=State.from_row(row),
            stored=row.has_state is not None,
            initial_status=row.status or "pending",
        )
        for row in rows
    ]


async def save(
    conn: AsyncConnection,
    db: Database,
    beats: list[Heartbeat],
    changes: list[tuple[Heartbeat, Change, datetime]],
    *,
    seen: bool,
) -> list[StatusChange]:
    """Writes the state of ``beats`` and their status ``changes`` (as
    monitor_events); ``seen``: a ping arrived (sets lastCheckedAt)."""
    if beats:
        stmt = db.upsert(_h)
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[_h.c.monitor_id],
                set_={c: getattr(stmt.excluded, c) for c in State().row()},
            ),
            [{"monitor_id": b.id, "org_id": b.org_id, **b.state.row()} for b in beats],
        )
        if seen:
            await conn.execute(_SEEN_UPDATE, [{"b_id": b.id, "b_seen": b.state.last_ping_at} for b in beats])
    events: list[StatusChange] = []
    if changes:
        await conn.execute(
            _STATUS_UPDATE,
            [{"b_id": b.id, "b_status": change.to_status, "b_changed": at} for b, change, at in changes],
        )
    for beat, change, at in changes:
        before = beat.initial_status
        event_id = (
            await conn.execute(
                insert(t.monitor_events)
                .values(
                    monitor_id=beat.id,
                    org_id=beat.org_id,
                    at=at,
                    from_status=before,
                    to_status=change.to_status,
                    reason=change.reason,
                    error=change.error,
                )
                .returning(t.monitor_events.c.id)
            )
        ).scalar_one()
        events.append(
            StatusChange(event_id, beat.id, beat.org_id, at, before, change.to_status, change.reason, change.error)
        )
        beat.initial_status = change.to_status
    return events
