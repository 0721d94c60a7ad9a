"""Reading and writing heartbeat monitors' state inside a transaction: the
one place the ping writer and the lateness watcher share.

Rows are locked (PostgreSQL: ``FOR NO KEY UPDATE`` of the monitors rows, in
id order, so two processes never deadlock and never both act on one
monitor); on SQLite the write transaction is the lock. Status changes are
written as checked monitors' are: ``monitor_state`` and a ``monitor_events``
row, which the incident engine consumes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core.heartbeats.rows import Driver
from core.heartbeats.schedule import Change, Schedule, State
from core.scheduler import events
from core.scheduler.events import StatusChange
from core.storage import tables as t

_s = t.monitor_state

_STATUS_UPDATE = (
    update(_s)
    .where(_s.c.monitor_id == bindparam("b_id"))
    .values(status=bindparam("b_status"), status_changed_at=bindparam("b_changed"))
)


@functools.lru_cache(maxsize=65536)
def _schedule(settings: str, interval_sec: int, paused: bool, scale: float) -> Schedule:
    """Parsed once per distinct settings (a batch reads them for every ping)."""
    return Schedule.from_row(settings, interval_sec, paused, scale)


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


async def load(
    conn: AsyncConnection, scale: float, *, hashes: Sequence[str] = (), ids: Sequence[int] = ()
) -> tuple[Driver, list[Heartbeat], set[str]]:
    """The heartbeat monitors with these token hashes or ids, with their
    state, locked for the rest of the transaction; the driver the batch
    writes with (core.heartbeats.rows); and the token hashes found on
    monitors of other types (unknown to pings, but not forever: a monitor's
    type may change back).

    On PostgreSQL the monitors rows are locked first, in id order, and the
    state is read by a second statement: under READ COMMITTED a statement
    that waited for a lock still sees the other tables as of its own start,
    so a state read together with the lock could be the one another process
    has just changed (and it would report the same lateness again)."""
    driver = await Driver.of(conn)
    rows = await driver.load(hashes=hashes, ids=ids)
    others = {row.heartbeat_token_hash for row in rows if row.type != "heartbeat"}
    return (
        driver,
        [
            Heartbeat(
                id=row.id,
                org_id=row.org_id,
                token_hash=row.heartbeat_token_hash,
                schedule=_schedule(row.settings, row.interval_sec, bool(row.paused), scale),
                state=State.from_row(row),
                stored=row.has_state is not None,
                initial_status=row.status or "pending",
            )
            for row in rows
            if row.type == "heartbeat"
        ],
        others,
    )


async def save(
    conn: AsyncConnection,
    driver: Driver,
    beats: list[Heartbeat],
    changes: list[tuple[Heartbeat, Change, datetime]],
) -> list[StatusChange]:
    """Writes the state of ``beats`` and their status ``changes`` (as
    monitor_events). A heartbeat monitor's lastCheckedAt is its state's
    last_ping_at (core.monitors.store.SELECT), not written twice."""
    await driver.save_states([(b.id, b.org_id, *b.state.values()) for b in beats])
    if not changes:
        return []
    # Rare: through SQLAlchemy, in the same transaction.
    await conn.execute(
        _STATUS_UPDATE,
        [{"b_id": b.id, "b_status": change.to_status, "b_changed": at} for b, change, at in changes],
    )
    pending: list[StatusChange] = []
    for beat, change, at in changes:  # several for one monitor chain their from-status
        before = beat.initial_status
        pending.append(StatusChange(0, beat.id, beat.org_id, at, before, change.to_status, change.reason, change.error))
        beat.initial_status = change.to_status
    return await events.store(conn, pending)
