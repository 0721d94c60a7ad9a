"""Live tail: committed records to every listening client, on every instance.

The writer hands each committed batch to :meth:`TailBroker.publish`, which
never blocks. Without Redis the batch goes straight to this process's tails.
With Redis it is published on one channel (only while some instance has a
tail: instances with tails subscribe, and ``PUBSUB NUMSUB`` is asked at most
once a second), and every instance's one subscriber task hands what arrives
to its own tails, this one's included. Redis down: tails of this instance
still see this instance's records.

Delivery runs on the event loop, so it is kept small: tails are kept per
org (a batch's rows are split by org once, and an org's rows reach only its
tails), and a message is tokenised once per batch however many of its
org's tails search words (``core.logs.match.tokens_shared``).

Each tail's queue is bounded by records: when more than ``QUEUE_RECORDS``
would wait, the tail is dropped (its stream ends with UNAVAILABLE, "too
slow") and what it held is freed, so a slow client costs ingest nothing (a
batch larger than the bound is let in when nothing else waits: a tail that
keeps up always receives the largest batch ingest writes). Live tails are
capped (``MAX_TAILS_PER_ORG``, ``MAX_TAILS``): one more is 429 RATE_LIMITED.

Batches go to Redis in commit order, through one publisher task and a
bounded outbox (beyond it they are not published, and counted). A message
from Redis that cannot be read is logged and skipped; the subscription
carries on. When the server shuts down every tail ends (UNAVAILABLE), so an
open stream does not hold the shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis

from core.errors import ErrorCode, ObserveError
from core.logs.match import Matcher, tokens_shared
from core.logs.records import from_micros, micros, record_of
from core.logs.store import Row, StoredRecord

log = logging.getLogger("observe.logs.tail")

QUEUE_RECORDS = 10_000  # records a tail may have waiting before it is dropped
MAX_TAILS_PER_ORG = 20  # live tails of one org in this process
MAX_TAILS = 200  # live tails in this process
OUTBOX_BATCHES = 1024  # committed batches waiting for Redis; beyond, they are not published (counted)
KEEPALIVE_SEC = 15.0
NUMSUB_EVERY_SEC = 1.0


@dataclass(eq=False)
class Tail:
    org_id: int
    matcher: Matcher
    queue: asyncio.Queue[list[StoredRecord] | None] = field(default_factory=asyncio.Queue)
    waiting: int = 0  # records in the queue
    dropped: bool = False
    ending: bool = False

    def end(self) -> None:
        """Ends the tail's stream (the server is going away)."""
        self.ending = True
        self._finish()

    def offer(self, rows: list[StoredRecord]) -> None:
        """The matching ones of ``rows`` (all of this tail's org) join the queue."""
        if self.dropped or self.ending:
            return
        mine = [r for r in rows if self.matcher(r.record)]
        if not mine:
            return
        if self.waiting and self.waiting + len(mine) > QUEUE_RECORDS:
            self.dropped = True
            self._finish()
            return
        self.waiting += len(mine)
        self.queue.put_nowait(mine)

    async def next_batch(self) -> list[StoredRecord] | None:
        """The next batch (None: the stream ends)."""
        batch = await self.queue.get()
        if batch is not None:
            self.waiting -= len(batch)
        return batch

    def _finish(self) -> None:
        """Frees what waits and queues the end marker."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.waiting = 0
        self.queue.put_nowait(None)


def _encode(rows: list[Row]) -> bytes:
    return orjson.dumps([_row_json(r) for r in rows])


def _row_json(row: Row) -> list[Any]:
    r = row.record
    return [
        row.id, row.org_id, micros(r.timestamp), micros(r.observed_at), r.severity_number, r.severity_text,
        r.message, r.service, r.trace_id, r.span_id, r.attributes, r.resource, r.scope_name, r.scope_version,
    ]  # fmt: skip


def _decode(data: bytes) -> list[StoredRecord]:
    out: list[StoredRecord] = []
    for item in orjson.loads(data):
        (rid, org_id, ts, observed, sev, sev_text, message, service, trace, span, attrs, res, sname, sver) = item
        record = record_of(
            from_micros(ts), from_micros(observed), sev, sev_text, message, service, trace, span, attrs, res,
            sname, sver,
        )  # fmt: skip
        out.append(StoredRecord(rid, org_id, record))
    return out


class TailBroker:
    """Fans committed records out to live tails (see the module docstring)."""

    def __init__(self, redis_url: str | None, prefix: str = "observe") -> None:
        self.channel = f"{prefix}:logs:tail"
        self.redis: aioredis.Redis | None = (
            aioredis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2) if redis_url else None
        )
        self.tails: dict[int, set[Tail]] = {}  # by org
        self.max_per_org = MAX_TAILS_PER_ORG
        self.max_tails = MAX_TAILS
        self._listener: asyncio.Task[None] | None = None
        self._remote_listeners = 0
        self._numsub_at = 0.0
        # Committed batches on their way to Redis, published one at a time
        # by one task, so they arrive in commit order.
        self._outbox: asyncio.Queue[list[Row]] = asyncio.Queue(OUTBOX_BATCHES)
        self._publisher: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._closing = False
        self.dropped_tails = 0
        self.dropped_batches = 0  # not published: Redis could not keep up

    def end_all(self) -> None:
        """Ends every tail (the server is shutting down: a stream would hold it open)."""
        self._closing = True
        for tails in self.tails.values():
            for tail in tails:
                tail.end()
        self.tails.clear()

    @property
    def tail_count(self) -> int:
        return sum(len(tails) for tails in self.tails.values())

    async def close(self) -> None:
        self.end_all()
        for task in (self._listener, self._publisher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._listener = self._publisher = None
        if self.redis is not None:
            await self.redis.aclose()

    # -- the writer's side

    def publish(self, rows: list[Row]) -> None:
        """Called by the writer after a commit; never blocks."""
        if self.redis is None:
            if self.tails:
                self._deliver([StoredRecord(r.id, r.org_id, r.record) for r in rows])
            return
        try:
            self._outbox.put_nowait(rows)
        except asyncio.QueueFull:
            self.dropped_batches += 1
            return
        if self._publisher is None:
            self._publisher = asyncio.create_task(self._publish_loop(), name="log-tail-publisher")

    async def _publish_loop(self) -> None:
        while True:
            await self._publish(await self._outbox.get())

    async def _publish(self, rows: list[Row]) -> None:
        assert self.redis is not None
        try:
            now = time.monotonic()
            # A known listener is trusted for a second; "nobody" only for a
            # moment, so a tail just opened elsewhere misses little.
            if now - self._numsub_at > (NUMSUB_EVERY_SEC if self._remote_listeners else NUMSUB_EVERY_SEC / 5):
                self._numsub_at = now
                counts = await self.redis.pubsub_numsub(self.channel)
                self._remote_listeners = int(counts[0][1]) if counts else 0
            if self._remote_listeners or self.tails:
                await self.redis.publish(self.channel, _encode(rows))
        except Exception as exc:  # Redis down: this instance's tails still hear this instance
            log.warning("log tail publish failed: %s", exc)
            if self.tails:
                self._deliver([StoredRecord(r.id, r.org_id, r.record) for r in rows])

    # -- the tails' side

    def _deliver(self, rows: list[StoredRecord]) -> None:
        by_org: dict[int, list[StoredRecord]] = {}
        for row in rows:
            if row.org_id in self.tails:
                by_org.setdefault(row.org_id, []).append(row)
        if not by_org:
            return
        with tokens_shared():
            for org_id, mine in by_org.items():
                for tail in list(self.tails.get(org_id, ())):
                    tail.offer(mine)
                    if tail.dropped:
                        self._remove(tail)
                        self.dropped_tails += 1

    def _remove(self, tail: Tail) -> None:
        tails = self.tails.get(tail.org_id)
        if tails is not None:
            tails.discard(tail)
            if not tails:
                del self.tails[tail.org_id]

    async def _listen(self) -> None:
        assert self.redis is not None
        while True:
            try:
                pubsub = self.redis.pubsub()
                await pubsub.subscribe(self.channel)
                self._subscribed.set()
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    try:
                        self._deliver(_decode(message["data"]))
                    except Exception as exc:  # one bad message costs only itself
                        log.warning("log tail message skipped: %s", exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._subscribed.set()  # Redis down: local records still reach local tails
                log.warning("log tail subscription lost: %s", exc)
                await asyncio.sleep(1.0)

    async def subscribe(self, org_id: int, matcher: Matcher) -> AsyncGenerator[list[StoredRecord], None]:
        """Batches of the org's matching records as they are committed; an
        empty batch first (listening) and every ``KEEPALIVE_SEC``. Raises
        ObserveError UNAVAILABLE when the tail was too slow and was dropped."""
        if self._closing:
            raise ObserveError(ErrorCode.ERROR_CODE_UNAVAILABLE, "the server is shutting down", retry_after=1)
        if len(self.tails.get(org_id, ())) >= self.max_per_org:
            raise ObserveError(
                ErrorCode.ERROR_CODE_RATE_LIMITED,
                f"too many live tails for this organization (at most {self.max_per_org} at once); close one first",
                retry_after=5,
            )
        if self.tail_count >= self.max_tails:
            raise ObserveError(
                ErrorCode.ERROR_CODE_RATE_LIMITED,
                f"too many live tails on this server (at most {self.max_tails} at once); try again later",
                retry_after=5,
            )
        tail = Tail(org_id, matcher)
        self.tails.setdefault(org_id, set()).add(tail)
        if self.redis is not None and self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="log-tail-listener")
        if self.redis is not None:
            # "Listening" means it: records another instance commits from now on arrive.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._subscribed.wait(), 3.0)
        try:
            yield []
            while True:
                try:
                    batch = await asyncio.wait_for(tail.next_batch(), KEEPALIVE_SEC)
                except TimeoutError:
                    yield []
                    continue
                if batch is None:
                    why = "the server is shutting down" if tail.ending else "the tail fell behind and was dropped"
                    raise ObserveError(ErrorCode.ERROR_CODE_UNAVAILABLE, f"{why}; reconnect", retry_after=1)
                yield batch
        finally:
            self._remove(tail)
