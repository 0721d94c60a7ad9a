"""Log retention: whole UTC days, dropped by the store (day tables on
SQLite, partitions on PostgreSQL) once they fall out of
``OBSERVE_LOG_RETENTION_DAYS``. Runs at start and then hourly; on
PostgreSQL every instance may run it (dropping is idempotent)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import date, timedelta

from core import clock
from core.logs.store import LogStore
from core.storage.faults import log_round_failure

log = logging.getLogger("observe.logs")

EVERY_SEC = 3600.0


def first_kept_day(retention_days: int) -> date:
    """The oldest UTC day still kept: today and the ``retention_days - 1`` before it."""
    return clock.now().date() - timedelta(days=retention_days - 1)


class LogRetention:
    def __init__(self, store: LogStore, retention_days: int) -> None:
        self.store = store
        self.retention_days = retention_days
        self._task: asyncio.Task[None] | None = None
        self.dropped_days = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="log-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def sweep(self) -> int:
        # open() also makes tomorrow's partition (PostgreSQL) now, not in the
        # first write after midnight under a lock that queues behind reads.
        await self.store.open()
        dropped = await self.store.drop_days_before(first_kept_day(self.retention_days))
        self.dropped_days += dropped
        if dropped:
            log.info("log retention dropped %d day(s)", dropped)
        return dropped

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:
                log_round_failure(log, "log retention", exc)
            await asyncio.sleep(EVERY_SEC)
