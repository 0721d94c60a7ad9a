"""The ping path: group commit.

A ping is answered only after it is committed, and pings that arrive while
a transaction runs share the next one: one token lookup (an indexed ``IN``
over the batch's token hashes, in the transaction itself, so a rotation or a
delete committed anywhere takes effect for the next batch of every
process), one insert of all pings, one upsert of the touched monitors'
state. Per ping there is only a hash and a queue entry.

Tokens no monitor has are remembered for a while (``UNKNOWN_TTL``), so a
client pinging a deleted monitor every second costs no transaction: such a
token never becomes valid (tokens are random, new on creation and on
rotation). A token of a monitor of another type is refused but not
remembered: the monitor may become a heartbeat monitor again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric

from core.errors import ObserveError
from core.heartbeats import state as hb
from core.heartbeats.schedule import Change, apply_ping
from core.scheduler.events import StatusHooks
from core.storage.db import Database
from core.storage.faults import log_round_failure, unavailable

log = logging.getLogger("observe.heartbeats")

BODY_KEPT = 102_400  # bytes of a body stored (CONTRACT.md: 100 KB)
MAX_BATCH = 2000  # pings per transaction
GATHER_SEC = 0.002  # how long a batch waits for more pings before it is written
UNKNOWN_TTL = 60.0  # seconds an unknown token is answered from memory
UNKNOWN_MAX = 100_000


@dataclass(slots=True)
class Ping:
    token_hash: str
    kind: str  # success, start, fail, exit
    exit_status: int | None
    rid: str | None
    at: datetime
    ip: str
    user_agent: str
    body: bytes  # its first BODY_KEPT bytes
    body_bytes: int  # the size received
    future: asyncio.Future[bool]


class PingWriter:
    """Queues pings and commits them in batches; ``submit`` answers True
    once the ping is stored, False for an unknown token."""

    def __init__(self, db: Database, *, scale: float = 1.0, hooks: StatusHooks | None = None) -> None:
        self.db = db
        self.scale = scale
        self.hooks = hooks or StatusHooks()
        # Called with the earliest deadline a batch set (the watcher's wake).
        self.on_deadline: Callable[[datetime], None] | None = None
        self._pending: list[Ping] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self.batches = 0
        self.outcomes: dict[str, int] = {"stored": 0, "unknown_token": 0, "failed": 0}

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="heartbeat-writer")

    async def stop(self) -> None:
        """Commits what is queued, and the batch being written, then stops."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        await self._task
        self._task = None

    def known_unknown(self, digest: str) -> bool:
        expires = self._unknown.get(digest)
        if expires is None:
            return False
        if expires < time.monotonic():
            del self._unknown[digest]
            return False
        self.outcomes["unknown_token"] += 1
        return True

    async def submit(self, ping: Ping) -> bool:
        self._pending.append(ping)
        self._wake.set()
        return await ping.future

    def _take(self) -> list[Ping]:
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        return batch

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                # A moment for the pings already on their way (requests the
                # loop is reading now) to join this transaction.
                await asyncio.sleep(GATHER_SEC)
                await self._flush(self._take())
            if self._stopping:
                return

    async def _flush(self, batch: list[Ping]) -> None:
        try:
            outcome, events, earliest = await self._write(batch)
        except Exception as exc:
            log_round_failure(log, "heartbeat ping batch", exc)
            # A database that cannot answer now is 503 with Retry-After for
            # every ping of the batch (curl --retry tries again).
            answer = exc if isinstance(exc, ObserveError) else unavailable(exc) or exc
            self.outcomes["failed"] += len(batch)
            for ping in batch:
                if not ping.future.done():
                    ping.future.set_exception(answer)
            return
        self.batches += 1
        stored_count = sum(outcome)
        self.outcomes["stored"] += stored_count
        self.outcomes["unknown_token"] += len(batch) - stored_count
        for ping, stored in zip(batch, outcome, strict=True):
            if not ping.future.done():
                ping.future.set_result(stored)
        if events:
            await self.hooks.emit(events)
        if self.on_deadline is not None and earliest is not None:
            self.on_deadline(earliest)

    def collect(self) -> Iterator[Metric]:
        """Prometheus collector: register with ``registry.register(writer)``."""
        pings = CounterMetricFamily("observe_heartbeat_pings", "Heartbeat pings by outcome", labels=["outcome"])
        for outcome, count in self.outcomes.items():
            pings.add_metric([outcome], count)
        yield pings
        yield CounterMetricFamily(
            "observe_heartbeat_batches", "Transactions that stored heartbeat pings (group commit)", value=self.batches
        )

    async def _write(self, batch: list[Ping]) -> tuple[list[bool], list[Any], datetime | None]:
        """Stores the batch; returns which pings were stored, the status
        changes, and the earliest deadline it set."""
        digests = sorted({p.token_hash for p in batch})
        async with self.db.write() as conn:
            driver, beats, others = await hb.load(conn, self.scale, hashes=digests)
            by_hash = {b.token_hash: b for b in beats}
            rows: list[tuple[Any, ...]] = []
            outcome: list[bool] = []
            changes: list[tuple[hb.Heartbeat, Change, datetime]] = []
            for ping in batch:
                beat = by_hash.get(ping.token_hash)
                outcome.append(beat is not None)
                if beat is None:
                    continue
                try:
                    change, runtime_ms = apply_ping(
                        beat.state, beat.schedule, ping.kind, ping.exit_status, ping.rid, ping.at
                    )
                except Exception:  # one monitor's bad settings must not fail the batch: stored, no status change
                    log.exception("heartbeat monitor %s: a ping could not be applied to its state", beat.id)
                    change, runtime_ms = None, None
                if change is not None:
                    changes.append((beat, change, ping.at))
                rows.append(
                    (
                        beat.id,
                        ping.at,
                        ping.kind,
                        ping.exit_status,
                        runtime_ms,
                        ping.rid,
                        ping.ip[:64],
                        ping.user_agent[:512],
                        ping.body_bytes,
                        ping.body or None,
                    )
                )
            await driver.insert_pings(rows)
            events = await hb.save(conn, driver, beats, changes)
        now = time.monotonic()
        for digest in digests:
            if digest not in by_hash and digest not in others:  # no monitor has it: it never will
                self._unknown[digest] = now + UNKNOWN_TTL
                self._unknown.move_to_end(digest)
        while len(self._unknown) > UNKNOWN_MAX:
            self._unknown.popitem(last=False)
        deadlines = [b.state.deadline_at for b in beats if b.state.deadline_at is not None]
        return outcome, events, min(deadlines) if deadlines else None
