"""The log alert evaluator: every ``settings.log_alert_interval_sec`` each
unpaused alert counts the records matching its query whose time falls in the
last ``windowSec`` (``[now - windowSec, now]``, through
:meth:`core.logs.store.LogStore.count`), per service with ``groupBy:
"service"``, and for each group:

- count >= threshold, no open incident of the group, and ``cooldownSec``
  passed since the group last opened one → an incident opens (monitorId
  null, ``logAlertId`` set, cause ``{reason: "log_alert", error: "<count>
  matching log records in <window> (threshold <n>)"}``) and its
  ``incident.opened`` alert is queued;
- the group's incident open and the count below the threshold → it resolves
  with an automatic update and ``incident.resolved`` is queued.

One round of one alert, across processes: a round is claimed in a short
transaction that moves the alert's ``next_evaluation_at`` on and bumps its
``evaluation_round`` (PostgreSQL ``FOR UPDATE SKIP LOCKED``, as the outbox and
the checker leases; SQLite has one writer), so another process finds it not
due. The counts run outside any transaction; the decisions are written in
one transaction per alert with the incident and its outbox rows, and only
while the alert still has the round claimed (an edit, or a slow round
overtaken by the next, leaves nothing stale behind). The dispatcher is woken
after the commit.

At most :data:`MAX_OPEN_GROUPS` groups of one alert have an incident open at
once (the largest counts first), so an alert grouped by service cannot open
thousands in one round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core import clock
from core.alerts import outbox
from core.alerts.messages import format_duration
from core.config import Settings
from core.incidents import store as incident_store
from core.incidents.tables import incidents
from core.log_alerts.tables import log_alert_groups, log_alerts
from core.logs.query import QueryError, parse
from core.logs.store import LogStore, id_ceiling, id_floor
from core.rpc.jsonmap import JsonCodec
from core.storage import faults
from core.storage.db import Database

log = logging.getLogger("observe.log_alerts")

BATCH = 100  # alerts claimed per transaction
COUNTS_AT_ONCE = 4  # counts running together (each is a query of the log store)
MAX_OPEN_GROUPS = 50
MAX_POLL_SEC = 1.0  # looks for due alerts at least this often
GROUP_KEY_CHARS = 512  # the column's length: longer service names share the key of their prefix
TITLE_CHARS = 200  # incidents.title
QUERY_SHOWN_CHARS = 500  # of the query, in the opening update

_CODEC = JsonCodec()
_la = log_alerts.c
_g = log_alert_groups.c


@dataclass(frozen=True, slots=True)
class Group:
    """What a group did last: its open incident (None when none is open) and when it last opened one."""

    open_incident_id: int | None
    last_triggered_at: datetime | None


@dataclass(frozen=True, slots=True)
class Claimed:
    """An alert whose round this process claimed, with its groups as they were then."""

    id: int
    org_id: int
    name: str
    query: str
    threshold: int
    window_sec: int
    group_by: str
    cooldown_sec: int
    round: int
    groups: dict[str, Group] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Open:
    key: str
    count: int


@dataclass(frozen=True, slots=True)
class Resolve:
    key: str
    incident_id: int
    count: int


Decision = Open | Resolve


def group_counts(counts: dict[str | None, int], group_by: str) -> dict[str, int]:
    """A store's counts keyed as ``log_alert_groups`` keys them: "" for everything (and for records
    without a service when grouped), else the service (cut to :data:`GROUP_KEY_CHARS`)."""
    out: dict[str, int] = {}
    for service, n in counts.items():
        key = (service or "")[:GROUP_KEY_CHARS] if group_by == "service" else ""
        out[key] = out.get(key, 0) + n
    return out


def decide(alert: Claimed, counts: dict[str, int], now: datetime) -> list[Decision]:
    """What one round does: the groups at or over the threshold that may open an incident (not open,
    cooldown passed), the largest first, and the open ones now below it."""
    out: list[Decision] = []
    cooldown = timedelta(seconds=alert.cooldown_sec)
    room = MAX_OPEN_GROUPS - sum(1 for g in alert.groups.values() if g.open_incident_id is not None)
    for key, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if count < alert.threshold or room <= 0:
            continue
        group = alert.groups.get(key)
        if group is not None and group.open_incident_id is not None:
            continue
        if group is not None and group.last_triggered_at is not None and now - group.last_triggered_at < cooldown:
            continue
        out.append(Open(key, count))
        room -= 1
    for key, group in sorted(alert.groups.items()):
        count = counts.get(key, 0)
        if group.open_incident_id is not None and count < alert.threshold:
            out.append(Resolve(key, group.open_incident_id, count))
    return out


def count_phrase(count: int, window_sec: int) -> str:
    """``7 matching log records in 1 min``."""
    records = "record" if count == 1 else "records"
    return f"{count} matching log {records} in {format_duration(window_sec)}"


def _of_group(alert: Claimed | Any, key: str) -> str:
    if alert.group_by != "service":
        return ""
    return f" (service {key})" if key else " (no service)"


def incident_title(alert: Claimed, key: str, count: int) -> str:
    """``<name>: 7 matching log records in 1 min``, ``… (service api)`` per group; the name gives way
    when the whole would pass the column's 200 characters."""
    tail = f": {count_phrase(count, alert.window_sec)}{_of_group(alert, key)}"
    room = TITLE_CHARS - len(tail)
    return alert.name[:room] + tail if room >= 1 else (alert.name + tail)[:TITLE_CHARS]


class LogAlertEvaluator:
    def __init__(
        self, *, db: Database, settings: Settings, store: LogStore, notify: Callable[[], None] = lambda: None
    ) -> None:
        self.db = db
        self.interval = timedelta(seconds=max(0.05, settings.log_alert_interval_sec))
        self.store = store
        self.notify = notify  # outbox rows committed: wakes the dispatcher
        self._task: asyncio.Task[None] | None = None

    # ---- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="log-alert-evaluator")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        poll = min(self.interval.total_seconds(), MAX_POLL_SEC)
        while True:
            try:
                claimed = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be away for a while: try again
                faults.log_round_failure(log, "log alert round failed", exc)
                claimed = 0
            if claimed < BATCH:
                await asyncio.sleep(poll)

    # ---- one round -----------------------------------------------------------

    async def run_once(self, now: datetime | None = None) -> int:
        """Evaluates the alerts due at ``now`` (default: the clock's); returns how many it claimed."""
        now = now or clock.precise_now()
        claimed = await self._claim(now)
        if not claimed:
            return 0
        gate = asyncio.Semaphore(COUNTS_AT_ONCE)

        async def counted(alert: Claimed) -> dict[str, int] | None:
            async with gate:
                return await self._count(alert, now)

        results = await asyncio.gather(*(counted(a) for a in claimed), return_exceptions=True)
        queued = 0
        for alert, result in zip(claimed, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("log alert %s: counting failed: %s", alert.id, type(result).__name__)
                continue
            if result is None:
                continue
            decisions = decide(alert, result, now)
            if decisions:
                queued += await self._apply(alert, decisions, now)
        if queued:
            self.notify()
        return len(claimed)

    async def _claim(self, now: datetime) -> list[Claimed]:
        due = (
            select(_la.id)
            .where(_la.paused.is_(False), _la.next_evaluation_at <= now)
            .order_by(_la.next_evaluation_at, _la.id)
            .limit(BATCH)
        )
        async with self.db.read() as conn:  # most polls find nothing and need no write lock to know it
            if (await conn.execute(due)).first() is None:
                return []
        async with self.db.write() as conn:
            ids = list(
                (await conn.execute(due if self.db.is_sqlite else due.with_for_update(skip_locked=True))).scalars()
            )
            if not ids:
                return []
            await conn.execute(
                update(log_alerts)
                .where(_la.id.in_(ids))
                .values(
                    next_evaluation_at=now + self.interval,
                    evaluation_round=_la.evaluation_round + 1,
                    last_evaluated_at=now,
                )
            )
            rows = (await conn.execute(select(log_alerts).where(_la.id.in_(ids)).order_by(_la.id))).all()
            groups = await _groups(conn, ids)
        return [
            Claimed(
                id=row.id,
                org_id=row.org_id,
                name=row.name,
                query=row.query,
                threshold=row.threshold,
                window_sec=row.window_sec,
                group_by=row.group_by,
                cooldown_sec=row.cooldown_sec,
                round=row.evaluation_round,
                groups=groups.get(row.id, {}),
            )
            for row in rows
        ]

    async def _count(self, alert: Claimed, now: datetime) -> dict[str, int] | None:
        try:
            node = parse(alert.query)
        except QueryError:  # stored queries parsed when written; a grammar change could still refuse one
            log.warning("log alert %s: its query no longer parses", alert.id)
            return None
        start = now - timedelta(seconds=alert.window_sec)
        counts = await self.store.count(
            alert.org_id, node, low_id=id_floor(start), high_id=id_ceiling(now), group_by=alert.group_by
        )
        return group_counts(counts, alert.group_by)

    async def _apply(self, alert: Claimed, decisions: list[Decision], now: datetime) -> int:
        """Writes one alert's decisions with their incidents and outbox rows; returns the rows queued."""
        queued = 0
        async with self.db.write() as conn:
            held = select(_la.id).where(_la.id == alert.id, _la.evaluation_round == alert.round)
            if not self.db.is_sqlite:
                held = held.with_for_update()
            if (await conn.execute(held)).first() is None:
                return 0  # edited, deleted, or a later round claimed it: this count is stale
            for decision in decisions:
                if isinstance(decision, Open):
                    queued += await self._open(conn, alert, decision, now)
                else:
                    queued += await self._resolve(conn, alert, decision, now)
        return queued

    async def _open(self, conn: AsyncConnection, alert: Claimed, decision: Open, now: datetime) -> int:
        key, count = decision.key, decision.count
        phrase = count_phrase(count, alert.window_sec)
        query = alert.query if len(alert.query) <= QUERY_SHOWN_CHARS else alert.query[:QUERY_SHOWN_CHARS] + "…"
        incident_id = await incident_store.open_incident(
            conn,
            org_id=alert.org_id,
            monitor_id=None,
            title=incident_title(alert, key, count),
            cause={"reason": "log_alert", "statusCode": None, "error": f"{phrase}{_of_group(alert, key)} "
                   f"(threshold {alert.threshold})", "regions": []},
            started_at=now,
            automatic=True,
            message=f"{alert.name}: {phrase}{_of_group(alert, key)}, at or above the threshold of "
                    f"{alert.threshold}. Query: {query}",
            author_user_id=None,
            now=now,
        )  # fmt: skip
        await conn.execute(update(incidents).where(incidents.c.id == incident_id).values(log_alert_id=alert.id))
        stmt = self.db.upsert(log_alert_groups).values(
            log_alert_id=alert.id, group_key=key, incident_id=incident_id, last_triggered_at=now
        )
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[_g.log_alert_id, _g.group_key],
                set_={"incident_id": incident_id, "last_triggered_at": now},
            )
        )
        return await self._alert(conn, alert, incident_id, "incident.opened", now)

    async def _resolve(self, conn: AsyncConnection, alert: Claimed, decision: Resolve, now: datetime) -> int:
        await conn.execute(
            update(log_alert_groups)
            .where(_g.log_alert_id == alert.id, _g.group_key == decision.key)
            .values(incident_id=None)
        )
        below = count_phrase(decision.count, alert.window_sec)
        resolved = await incident_store.resolve(
            conn, decision.incident_id,
            message=f"{alert.name}: {below}{_of_group(alert, decision.key)}, below the threshold of "
                    f"{alert.threshold}. Resolved.",
            author_user_id=None, now=now, automatic=True,
        )  # fmt: skip
        return await self._alert(conn, alert, decision.incident_id, "incident.resolved", now) if resolved else 0

    @staticmethod
    async def _alert(conn: AsyncConnection, alert: Claimed, incident_id: int, event: str, now: datetime) -> int:
        incident = await incident_store.projection(conn, incident_id, deliveries=False)
        return await outbox.enqueue(
            conn,
            org_id=alert.org_id,
            monitor_id=None,
            log_alert_id=alert.id,
            incident_id=incident_id,
            event=event,
            payload={"incident": _CODEC.encode(incident), "monitor": None},
            now=now,
        )


async def _groups(conn: AsyncConnection, alert_ids: list[int]) -> dict[int, dict[str, Group]]:
    """The groups of ``alert_ids``; an incident resolved by hand counts as none open."""
    query = (
        select(_g.log_alert_id, _g.group_key, _g.last_triggered_at, incidents.c.id.label("open_id"))
        .select_from(
            log_alert_groups.outerjoin(
                incidents, (incidents.c.id == _g.incident_id) & incidents.c.resolved_at.is_(None)
            )
        )
        .where(_g.log_alert_id.in_(alert_ids))
    )
    out: dict[int, dict[str, Group]] = {}
    for row in (await conn.execute(query)).all():
        out.setdefault(row.log_alert_id, {})[row.group_key] = Group(row.open_id, row.last_triggered_at)
    return out
