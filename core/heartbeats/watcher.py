"""Lateness: turns heartbeat monitors down when their deadline passes.

Deadlines live in ``heartbeat_state.deadline_at`` (indexed), written by the
ping writer in the ping's own transaction, so a restart forgets nothing.
Every core process runs a watcher; each round takes the monitors past their
deadline, locks them (in id order) and checks again under the lock before it
turns one down, so with several processes on PostgreSQL one of them reports
each lateness. A round starts at the earliest deadline this process knows
of, and at least every ``POLL_SEC`` (for deadlines another process set), so
a monitor is down within a second of its deadline.

The watcher also follows settings changes (interval, grace, cron, pause):
monitors whose row changed get their deadline computed again; and it drops
pings past OBSERVE_CHECK_RETENTION_DAYS, as the scheduler does results.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta

from prometheus_client.core import CounterMetricFamily, Metric
from sqlalchemy import delete, func, select, update

from core import clock
from core.heartbeats import state as hb
from core.heartbeats.schedule import Change, expire, set_deadline
from core.heartbeats.tables import heartbeat_pings, heartbeat_state
from core.scheduler.events import StatusHooks
from core.storage import tables as t
from core.storage.db import Database
from core.storage.faults import log_round_failure

log = logging.getLogger("observe.heartbeats")

POLL_SEC = 0.5  # longest sleep between rounds
MIN_SLEEP = 0.01  # shortest: a deadline that stays in the past must not spin the loop
RECONCILE_SEC = 0.5  # how often changed monitors are looked for (an indexed read)
LOOK_BACK = timedelta(seconds=10)  # how far behind the last look changes are looked for
# A deadline is acted on this long after it passes: a ping received just
# before it, still in its batch's transaction, is committed by then.
SLACK = timedelta(seconds=0.25)
PRUNE_CHUNK = 5000
RETENTION_SEC = 3600.0
ROUND_LIMIT = 1000  # monitors turned down per transaction


class LatenessWatcher:
    def __init__(
        self,
        db: Database,
        *,
        scale: float = 1.0,
        retention_days: int = 7,
        hooks: StatusHooks | None = None,
    ) -> None:
        self.db = db
        self.scale = scale
        self.retention_days = retention_days
        self.hooks = hooks or StatusHooks()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._changed_since: datetime | None = None
        self._next_reconcile = 0.0
        self._next_retention = 0.0
        self._sleep_until: datetime | None = None  # when the next round starts at the latest
        self.turned_down = 0

    def wake(self, earliest: datetime | None = None) -> None:
        """A ping in this process set deadlines, the earliest ``earliest``:
        the next round comes sooner if that is before it (None: at once)."""
        if earliest is None or self._sleep_until is None or earliest < self._sleep_until:
            self._wake.set()

    async def start(self) -> None:
        self._changed_since = clock.now() - timedelta(seconds=1)
        self._task = asyncio.create_task(self._loop(), name="heartbeat-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            delay = POLL_SEC
            # Awake: a wake from now on (a deadline set while this round
            # reads) makes the next round start at once.
            self._wake.clear()
            self._sleep_until = None
            try:
                now = clock.precise_now()
                await self.round(now)
                if loop.time() >= self._next_reconcile:
                    self._next_reconcile = loop.time() + RECONCILE_SEC
                    await self.reconcile()
                if loop.time() >= self._next_retention:
                    self._next_retention = loop.time() + RETENTION_SEC
                    await self.prune(now)
                nearest = await self.nearest_deadline()
                if nearest is not None:
                    delay = min(POLL_SEC, max(MIN_SLEEP, (nearest - clock.precise_now()).total_seconds()))
            except Exception as exc:
                log_round_failure(log, "heartbeat lateness round", exc)
            self._sleep_until = clock.precise_now() + timedelta(seconds=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def nearest_deadline(self) -> datetime | None:
        async with self.db.read() as conn:
            value: datetime | None = (await conn.execute(select(func.min(heartbeat_state.c.deadline_at)))).scalar()
        return value

    async def round(self, now: datetime) -> int:
        """Turns down the monitors whose deadline has passed by ``now``;
        returns how many."""
        h = heartbeat_state
        async with self.db.read() as conn:
            due = (
                (
                    await conn.execute(
                        select(h.c.monitor_id)
                        .where(h.c.deadline_at <= now - SLACK)
                        .order_by(h.c.deadline_at)
                        .limit(ROUND_LIMIT)
                    )
                )
                .scalars()
                .all()
            )
        if not due:
            return 0
        async with self.db.write() as conn:
            driver, beats, _ = await hb.load(conn, self.scale, ids=sorted(due))
            changes: list[tuple[hb.Heartbeat, Change, datetime]] = []
            for beat in beats:
                try:
                    change = expire(beat.state, beat.schedule, now - SLACK)
                except Exception:  # one monitor's bad settings must not stop the others going late
                    log.exception("heartbeat monitor %s: its deadline cannot be computed; none is kept", beat.id)
                    beat.state.deadline_at = beat.state.deadline_reason = None
                    continue
                if change is not None:
                    changes.append((beat, change, now))
            events = await hb.save(conn, driver, beats, changes)
            gone = set(due) - {b.id for b in beats}
            if gone:  # no longer heartbeat monitors: nothing is awaited from them
                await conn.execute(
                    update(h).where(h.c.monitor_id.in_(sorted(gone))).values(deadline_at=None, deadline_reason=None)
                )
        self.turned_down += len(events)
        if events:
            await self.hooks.emit(events)
        return len(events)

    async def reconcile(self) -> int:
        """Deadlines again for heartbeat monitors whose settings changed since
        the last look (a shorter interval, a pause, a resume, a monitor that
        became a heartbeat monitor). Looks ``LOOK_BACK`` behind the last look
        (updated_at has whole seconds, and comes from the clock of the process
        that made the change), and moves on only once a look succeeded."""
        since = self._changed_since or clock.now()
        look_started = clock.now()
        m, h = t.monitors, heartbeat_state
        async with self.db.read() as conn:
            changed = (
                (
                    await conn.execute(
                        select(m.c.id)
                        .outerjoin(h, h.c.monitor_id == m.c.id)
                        .where(m.c.updated_at >= since - LOOK_BACK, m.c.type == "heartbeat")
                    )
                )
                .scalars()
                .all()
            )
        written = 0
        if changed:
            async with self.db.write() as conn:
                driver, beats, _ = await hb.load(conn, self.scale, ids=sorted(changed))
                now = clock.precise_now()
                moved = [beat for beat in beats if _recompute(beat, now)]
                await hb.save(conn, driver, moved, [])
                written = len(moved)
        self._changed_since = look_started
        return written

    def collect(self) -> Iterator[Metric]:
        """Prometheus collector: register with ``registry.register(watcher)``."""
        yield CounterMetricFamily(
            "observe_heartbeat_late",
            "Heartbeat monitors this process turned down because their deadline passed",
            value=self.turned_down,
        )

    async def prune(self, now: datetime) -> None:
        """Drops pings past the retention, PRUNE_CHUNK at a time (one
        transaction each, so ping batches wait for no long delete)."""
        cutoff = now - timedelta(days=self.retention_days)
        p = heartbeat_pings
        while True:
            async with self.db.write() as conn:
                ids = select(p.c.id).where(p.c.at < cutoff).order_by(p.c.at).limit(PRUNE_CHUNK).scalar_subquery()
                deleted = (await conn.execute(delete(p).where(p.c.id.in_(ids)))).rowcount
            if deleted < PRUNE_CHUNK:
                return
            await asyncio.sleep(0)


def _recompute(beat: hb.Heartbeat, now: datetime) -> bool:
    """The deadline of ``beat`` from its current settings; True when it moved."""
    state = beat.state
    before = (state.deadline_at, state.deadline_reason, state.counts_from, dict(state.open_starts))
    if not beat.stored and state.status == "up" and state.counts_from is None:
        state.counts_from = now  # became a heartbeat monitor while up: its first ping is due a period from now
    try:
        set_deadline(state, beat.schedule, now)
    except Exception:
        log.exception("heartbeat monitor %s: its deadline cannot be computed; none is kept", beat.id)
        state.deadline_at = state.deadline_reason = None
    after = (state.deadline_at, state.deadline_reason, state.counts_from, state.open_starts)
    return not beat.stored or after != before
