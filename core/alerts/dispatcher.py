"""The outbox dispatcher: claims due alert_outbox rows, sends each through its channel, records every attempt
and schedules retries.

Every core process runs one. A row is claimed (``claimed_by``/``claimed_until``; on PostgreSQL with
``SELECT … FOR UPDATE SKIP LOCKED``, on SQLite under the write transaction's lock) before it is sent, so
two processes never send the same attempt; a claim whose process died lapses after :data:`CLAIM_GRACE_SEC`
plus the channel timeout and the row is claimed again. Each claimed row is sent in its own task, at most
:data:`CONCURRENCY` at once, so a channel that hangs holds up nothing but itself.

After each attempt one transaction writes its ``alert_deliveries`` record and moves the outbox row on, both
only while this process still holds the claim (a row whose claim lapsed belongs to whoever claimed it
next). The rules (CONTRACT.md "Alerts"): delivered on 2xx; 408, 429, 5xx and network errors retry, five
attempts in all, waiting ``settings.alert_retry_delays`` (±20 % jitter) before attempts 2–5, or the
receiver's ``Retry-After`` when that is longer (at most an hour); any other answer, and a target the policy
refuses, fail at once.

The target is read from the monitor (or the log alert, for a row naming one) when the row is claimed, right
before the attempt: a channel removed meanwhile fails the row ("channel no longer configured"). A
status-page subscriber's mail (channel ``subscriber``) names its subscriber instead; the address, the page
and the signed links are read the same way, and an unsubscribe deletes the subscriber's rows that wait here.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import os
import random
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import bindparam, func, insert, or_, select, update

from core import clock
from core.alerts import AlertMessage, ChannelSettings, DeliveryOutcome, channels
from core.alerts import destinations as dest
from core.config import Settings
from core.incidents.tables import alert_deliveries, alert_outbox, incidents
from core.log_alerts.store import channel_settings
from core.log_alerts.tables import log_alerts
from core.monitors.store import MonitorStore
from core.status_pages.access import PageTokens
from core.status_pages.tables import status_page_subscribers as sps
from core.status_pages.tables import status_pages as sp
from core.storage import tables as t
from core.storage.db import Database
from core.storage.sealing import Sealer

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
CONCURRENCY = 64  # attempts in flight per process
POLL_SEC = 0.5  # looks for rows from other processes and due retries at least this often
GAUGE_SEC = 5.0  # how often the outbox depth and open incidents are counted
CLAIM_GRACE_SEC = 30.0  # a claim lasts the channel timeout plus this
RETRY_AFTER_CAP_SEC = 3600.0
JITTER = 0.2
STOP_GRACE_SEC = 2.0  # on stop, attempts under way get this long to finish

_o = alert_outbox.c
# What MonitorStore.settings() reads of a monitor row; no alert_outbox column has these names.
_MONITOR_COLUMNS = [
    t.monitors.c[name] for name in ("settings", "secrets", "name", "type", "interval_sec", "timeout_ms", "paused")
]
# What core.alerts.destinations.subscriber_target reads of a subscriber and its page.
_SUBSCRIBER_COLUMNS = [
    sps.c.email.label("subscriber_email"),
    sps.c.confirmed.label("subscriber_confirmed"),
    sp.c.name.label("page_name"),
    sp.c.slug.label("page_slug"),
    sp.c.published.label("page_published"),
]
# A log alert's channels, for rows that name one (labelled apart from the monitor's columns).
_LOG_ALERT_COLUMNS = [
    log_alerts.c.settings.label("log_alert_settings"),
    log_alerts.c.secrets.label("log_alert_secrets"),
]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One claimed row with what sending it needs."""

    row: Any  # the alert_outbox row
    settings: dict[str, Any] | None  # the monitor's (or log alert's), secrets opened; None: it is gone
    webhook_secret: str | None  # sealed, as orgs has it
    problem: str | None = None  # why it cannot be sent at all


def next_wait(attempt: int, delays: tuple[float, ...], retry_after: float | None) -> float:
    """Seconds before attempt ``attempt + 1`` after attempt ``attempt`` failed and may be retried."""
    base = delays[min(attempt - 1, len(delays) - 1)] if delays else 0.0
    wait = base * random.uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        wait = max(wait, min(retry_after, RETRY_AFTER_CAP_SEC))
    return wait


class Dispatcher:
    """A prometheus collector too: the server registers it on /metrics."""

    def __init__(self, *, db: Database, settings: Settings, sealer: Sealer, concurrency: int = CONCURRENCY) -> None:
        self.db = db
        self.settings = settings
        self.sealer = sealer
        self.concurrency = concurrency
        self.channel_settings = ChannelSettings.from_settings(settings)
        self.channels = channels(self.channel_settings)
        self.store = MonitorStore(sealer, settings.public_base)
        self.page_tokens = PageTokens(sealer)
        self.node_id = f"{socket.gethostname()[:30]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._sending: dict[int, asyncio.Task[None]] = {}  # outbox id → its attempt
        self._due: list[float] = []  # monotonic times of retries this process scheduled
        self._counts: Counter[tuple[str, str]] = Counter()
        self._recording: list[tuple[Any, DeliveryOutcome, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._depth = 0
        self._open_incidents = 0

    # ---- lifecycle -----------------------------------------------------------

    def wake(self) -> None:
        """Outbox rows were committed: look now rather than at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        if self._loop is None:
            self._wake = asyncio.Event()
            self._loop = asyncio.create_task(self._run(), name="alert-dispatcher")

    async def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        sending = list(self._sending.values())
        if sending:
            await asyncio.wait(sending, timeout=STOP_GRACE_SEC)
            for task in sending:
                task.cancel()
            await asyncio.gather(*sending, return_exceptions=True)
        writer = self._writer
        if writer is not None and not writer.done():  # records already under way are kept
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(writer), timeout=5)
        # What was cut short goes back to the outbox at once, for the next process to send.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5), self.db.write() as conn:
                await conn.execute(
                    update(alert_outbox)
                    .where(_o.claimed_by == self.node_id, _o.state == "pending")
                    .values(claimed_by=None, claimed_until=None)
                )

    # ---- the loop ------------------------------------------------------------

    async def _run(self) -> None:
        counted = 0.0
        while True:
            self._wake.clear()
            claimed = 0
            try:
                free = self.concurrency - len(self._sending)
                if free > 0:
                    claimed = await self._claim(free)
                if time.monotonic() - counted >= GAUGE_SEC:
                    await self._count()
                    counted = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be away for a moment: try again at the next poll
                log.warning("alert dispatcher: %s", type(exc).__name__)
            if claimed and len(self._sending) < self.concurrency:
                continue  # there may be more due
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._sleep()):
                    await self._wake.wait()

    def _sleep(self) -> float:
        now = time.monotonic()
        while self._due and self._due[0] <= now:
            heapq.heappop(self._due)
        if self._due:
            return min(POLL_SEC, max(0.0, self._due[0] - now))
        return POLL_SEC

    async def _claim(self, limit: int) -> int:
        """Claims up to ``limit`` due rows and starts an attempt for each; returns how many."""
        now = clock.precise_now()
        due = (
            select(_o.id)
            .where(
                _o.state == "pending",
                _o.next_attempt_at <= now,
                or_(_o.claimed_until.is_(None), _o.claimed_until < now),
            )
            .order_by(_o.next_attempt_at, _o.id)
            .limit(limit)
        )
        # A cheap read first: most polls find nothing, and need take no write lock to know it.
        async with self.db.read() as conn:
            if not (await conn.execute(due)).first():
                return 0
        until = now + timedelta(seconds=self.channel_settings.timeout_sec + CLAIM_GRACE_SEC)
        async with self.db.write() as conn:
            query = due if self.db.is_sqlite else due.with_for_update(skip_locked=True)
            ids = [row.id for row in (await conn.execute(query)).all() if row.id not in self._sending]
            if not ids:
                return 0
            await conn.execute(
                update(alert_outbox).where(_o.id.in_(ids)).values(claimed_by=self.node_id, claimed_until=until)
            )
            query = (
                select(
                    alert_outbox,
                    *_MONITOR_COLUMNS,
                    *_SUBSCRIBER_COLUMNS,
                    *_LOG_ALERT_COLUMNS,
                    t.orgs.c.webhook_secret.label("org_webhook_secret"),
                )
                .select_from(
                    alert_outbox.outerjoin(
                        t.monitors, (t.monitors.c.id == _o.monitor_id) & (t.monitors.c.org_id == _o.org_id)
                    )
                    .outerjoin(log_alerts, (log_alerts.c.id == _o.log_alert_id) & (log_alerts.c.org_id == _o.org_id))
                    .outerjoin(sps, sps.c.id == _o.subscriber_id)
                    .outerjoin(sp, sp.c.id == sps.c.page_id)
                    .join(t.orgs, t.orgs.c.id == _o.org_id)
                )
                .where(_o.id.in_(ids))
                .order_by(_o.next_attempt_at, _o.id)
            )
            rows = (await conn.execute(query)).all()
        for row in rows:
            # The row carries the monitor's (or log alert's) columns too (NULL when it is gone).
            settings, problem = None, None
            try:
                if row.log_alert_id is not None:
                    settings = (
                        channel_settings(row.log_alert_settings, row.log_alert_secrets, self.sealer)
                        if row.log_alert_settings is not None
                        else None
                    )
                else:
                    settings = self.store.settings(row) if row.settings is not None else None
            except Exception:  # sealed with a key this server no longer has
                problem = "the alert settings could not be opened (server key)"
            attempt = Attempt(row, settings, row.org_webhook_secret, problem)
            self._sending[row.id] = asyncio.create_task(self._attempt(attempt), name=f"alert-{row.id}")
        return len(rows)

    async def _count(self) -> None:
        async with self.db.read() as conn:
            depth = (
                await conn.execute(select(func.count()).select_from(alert_outbox).where(_o.state == "pending"))
            ).scalar_one()
            open_incidents = (
                await conn.execute(select(func.count()).select_from(incidents).where(incidents.c.resolved_at.is_(None)))
            ).scalar_one()
        self._depth, self._open_incidents = int(depth), int(open_incidents)

    # ---- one attempt -----------------------------------------------------------

    async def _attempt(self, attempt: Attempt) -> None:
        row = attempt.row
        try:
            outcome = await self._send(attempt)
            await self._record(row, outcome)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never the exception's text: it may quote a URL
            log.warning("alert %s (%s): could not record the attempt: %s", row.id, row.channel, type(exc).__name__)
        finally:
            self._sending.pop(row.id, None)
            self._wake.set()  # a slot is free

    async def _target(self, attempt: Attempt) -> Any | DeliveryOutcome:
        """Where the row goes, or the outcome that ends the attempt before it is made."""
        row = attempt.row
        if attempt.problem is not None:
            return DeliveryOutcome("failed", error=attempt.problem)
        if row.channel == "subscriber":
            found = dest.subscriber_target(row, self.page_tokens, self.channel_settings.public_base)
            return DeliveryOutcome("failed", error=found) if isinstance(found, str) else found
        if attempt.settings is None:
            return DeliveryOutcome("failed", error=dest.NOT_CONFIGURED)
        secret = None
        if row.channel == "webhook" and attempt.settings.get("alertWebhookUrl"):
            try:
                secret = await dest.org_webhook_secret(self.db, self.sealer, row.org_id, attempt.webhook_secret)
            except Exception as exc:  # the database, or a secret sealed with a key no longer here
                log.warning("alert %s: the org's webhook secret: %s", row.id, type(exc).__name__)
                return DeliveryOutcome("retry", error="could not read the org's webhook signing secret")
        target = dest.target(row.channel, attempt.settings, secret)
        return DeliveryOutcome("failed", error=dest.NOT_CONFIGURED) if target is None else target

    async def _send(self, attempt: Attempt) -> DeliveryOutcome:
        row = attempt.row
        channel = self.channels.get(row.channel)
        if channel is None:
            return DeliveryOutcome("failed", error=dest.NOT_CONFIGURED)
        target = await self._target(attempt)
        if isinstance(target, DeliveryOutcome):
            return target
        payload = json.loads(row.payload)
        message = AlertMessage(
            event=row.event,
            incident=payload.get("incident"),
            monitor=payload.get("monitor"),
            timestamp=row.created_at,
            id=f"msg_{row.id}",
            notice=payload.get("notice"),
        )
        try:
            # The channel keeps to its timeout; this only guards against one that does not.
            async with asyncio.timeout(self.channel_settings.timeout_sec + 5):
                outcome: DeliveryOutcome = await channel.send(message, target)
        except TimeoutError:
            return DeliveryOutcome("retry", error="no answer within the channel's timeout")
        except Exception as exc:
            log.warning("alert %s (%s): the channel raised %s", row.id, row.channel, type(exc).__name__)
            return DeliveryOutcome("retry", error="the channel failed unexpectedly")
        return outcome

    async def _record(self, row: Any, outcome: DeliveryOutcome) -> None:
        """Writes the attempt's record and moves its outbox row on; returns once that is committed.

        Attempts that end together share one transaction (a group commit: one writer drains what has
        queued while the previous transaction ran), so records cost no write transaction each."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._recording.append((row, outcome, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_records(), name="alert-records")
        await done

    async def _write_records(self) -> None:
        while self._recording:
            batch, self._recording = self._recording, []
            try:
                await self._write(batch)
            except Exception as exc:
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def _write(self, batch: list[tuple[Any, DeliveryOutcome, asyncio.Future[None]]]) -> None:
        now = clock.precise_now()
        ids = [row.id for row, _, _ in batch]
        written: list[tuple[str, str, float | None]] = []  # channel, outcome, wait
        async with self.db.write() as conn:
            # Only rows this process still holds: a lapsed claim is someone else's row now.
            held = select(_o.id).where(_o.id.in_(ids), _o.claimed_by == self.node_id, _o.state == "pending")
            if not self.db.is_sqlite:
                held = held.with_for_update()
            mine = set((await conn.execute(held)).scalars())
            moves, records = [], []
            for row, outcome, _ in batch:
                if row.id not in mine:
                    log.warning("alert %s (%s): the claim lapsed before the attempt was recorded", row.id, row.channel)
                    continue
                number = row.attempts + 1
                wait: float | None = None
                next_at: datetime = row.next_attempt_at
                done_at: datetime | None = now
                if outcome.outcome == "delivered":
                    state = result = "delivered"
                elif outcome.outcome == "retry" and number < MAX_ATTEMPTS:
                    state, result = "pending", "retrying"
                    wait = next_wait(number, self.settings.alert_retry_delays, outcome.retry_after_sec)
                    next_at, done_at = now + timedelta(seconds=wait), None
                else:
                    state = result = "failed"
                moves.append({"b_id": row.id, "b_state": state, "b_attempts": number, "b_next": next_at,
                              "b_done": done_at})  # fmt: skip
                records.append(
                    {
                        "outbox_id": row.id,
                        "incident_id": row.incident_id,
                        "org_id": row.org_id,
                        "channel": row.channel,
                        "event": row.event,
                        "attempt": number,
                        "outcome": result,
                        "http_status": outcome.http_status,
                        "error": _one_line(outcome.error),
                        "at": now,
                    }
                )
                written.append((row.channel, result, wait))
            if moves:
                await conn.execute(_MOVE, moves)
                await conn.execute(insert(alert_deliveries), records)
        for channel, result, wait in written:
            self._counts[(channel, result)] += 1
            if wait is not None:
                heapq.heappush(self._due, time.monotonic() + wait)
        if any(wait is not None for _, _, wait in written):
            self._wake.set()  # the loop may be sleeping longer than the shortest wait

    # ---- metrics ---------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        deliveries = CounterMetricFamily(
            "observe_alert_deliveries", "Alert delivery attempts by this process", labels=["channel", "outcome"]
        )
        for (channel, outcome), count in sorted(self._counts.items()):
            deliveries.add_metric([channel, outcome], count)
        yield deliveries
        yield GaugeMetricFamily("observe_alert_outbox_depth", "Alerts waiting to be delivered", value=self._depth)
        yield GaugeMetricFamily("observe_incidents_open", "Incidents not resolved", value=self._open_incidents)


# One outbox row moved on after an attempt (executemany: a batch in one round trip).
_MOVE = (
    update(alert_outbox)
    .where(_o.id == bindparam("b_id"))
    .values(
        state=bindparam("b_state"),
        attempts=bindparam("b_attempts"),
        next_attempt_at=bindparam("b_next"),
        done_at=bindparam("b_done"),
        claimed_by=None,
        claimed_until=None,
    )
)


def _one_line(error: str | None) -> str | None:
    return " ".join(error.split())[:500] if error else None
