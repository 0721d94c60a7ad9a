"""Status changes: stored as ``monitor_events`` rows in the same transaction
as the results that caused them, then handed to the subscribed hooks (the
incidents and alerts code subscribes here). A process that does not run the
scheduler reads the same changes from the table, in id order."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.storage import tables as t

log = logging.getLogger("observe.scheduler.events")


@dataclass(frozen=True, slots=True)
class StatusChange:
    event_id: int
    monitor_id: int
    org_id: int
    at: datetime
    from_status: str
    to_status: str
    reason: str | None
    error: str | None


Hook = Callable[[list[StatusChange]], Awaitable[None]]


# pg_advisory_xact_lock key that orders event writers (any constant of ours).
EVENTS_LOCK = 0x6F627365  # "obse"


async def store(conn: AsyncConnection, changes: list[StatusChange]) -> list[StatusChange]:
    """Writes ``changes`` as monitor_events rows; returns them with their event ids.

    Consumers read events after a cursor (``id > last``), so ids must become
    visible in order. On PostgreSQL two transactions could commit their ids
    out of order (the later id first), and a reader between the two commits
    would move its cursor past the earlier id for good: each writer takes a
    transaction-level advisory lock before it takes an id, held until it
    commits, so ids are committed in the order they are taken. (SQLite has
    one writer at a time already.) Status changes are rare; the lock is held
    only from the first event a transaction writes to its commit."""
    if not changes:
        return []
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": EVENTS_LOCK})
    stored = []
    for change in changes:
        event_id = (
            await conn.execute(
                insert(t.monitor_events)
                .values(
                    monitor_id=change.monitor_id,
                    org_id=change.org_id,
                    at=change.at,
                    from_status=change.from_status,
                    to_status=change.to_status,
                    reason=change.reason,
                    error=change.error,
                )
                .returning(t.monitor_events.c.id)
            )
        ).scalar_one()
        stored.append(replace(change, event_id=event_id))
    return stored


class StatusHooks:
    """Subscribers to status changes, called after the changes commit."""

    def __init__(self) -> None:
        self._hooks: list[Hook] = []

    def subscribe(self, hook: Hook) -> None:
        self._hooks.append(hook)

    async def emit(self, changes: list[StatusChange]) -> None:
        for hook in self._hooks:
            try:
                await hook(changes)
            except Exception:  # a failing subscriber must not stop the checks
                log.exception("status hook %r failed", hook)
