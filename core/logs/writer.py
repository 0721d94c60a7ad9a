"""The one batch writer every ingest path ends in.

``submit`` queues a request's records and returns once they are committed:
requests that arrive while a transaction runs share the next one (group
commit), so a 2xx always means "on disk" while the store sees few, large
transactions. The queue is bounded: past ``capacity`` records waiting,
``submit`` refuses at once with 503 UNAVAILABLE and Retry-After (gRPC:
UNAVAILABLE with RetryInfo), and nothing of that request is kept, so memory
never grows with the load. After each commit the rows go to the listeners
(live tail), which must not block.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from core import clock
from core.errors import ErrorCode, ObserveError
from core.logs.records import LogRecord
from core.logs.store import IdCollisionError, IdSource, LogStore, Row
from core.storage.faults import log_round_failure, unavailable

log = logging.getLogger("observe.logs")

MAX_BATCH = 20_000  # records per transaction
GATHER_SEC = 0.002  # a moment for requests already being read to join a batch
COLLISION_RETRIES = 3


@dataclass(slots=True)
class _Submission:
    org_id: int
    records: Sequence[LogRecord]
    future: asyncio.Future[list[Row]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


Listener = Callable[[list[Row]], None]


class LogWriter:
    """Group commit of log records into a :class:`LogStore`."""

    def __init__(self, store: LogStore, ids: IdSource, *, capacity: int = 200_000) -> None:
        self.store = store
        self.ids = ids
        self.capacity = capacity
        self.listeners: list[Listener] = []
        self._pending: list[_Submission] = []
        self._pending_records = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.records = {"stored": 0, "refused_busy": 0, "failed": 0}
        self.batches = 0
        self.seconds_writing = 0.0

    @property
    def queued(self) -> int:
        return self._pending_records

    async def start(self) -> None:
        await self.store.open()
        self._task = asyncio.create_task(self._loop(), name="log-writer")

    async def stop(self) -> None:
        """Commits what is queued, then stops."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            await self._task
            self._task = None
        await self.store.close()

    async def submit(self, org_id: int, records: Sequence[LogRecord]) -> list[Row]:
        """Returns the stored rows once they are committed; raises
        ObserveError (503 UNAVAILABLE) when the queue is full, the writer is
        stopping, or the store failed (then nothing of them was stored)."""
        if not records:
            return []
        self.check_room(len(records))
        submission = _Submission(org_id, records)
        self._pending.append(submission)
        self._pending_records += len(records)
        self._wake.set()
        # Shielded: a client that leaves does not un-write its records, and
        # the loop resolves the future either way.
        return await asyncio.shield(submission.future)

    def check_room(self, count: int) -> None:
        """Raises 503 UNAVAILABLE (Retry-After) unless ``count`` records may be
        queued now; callers ask before counting caps, ``submit`` asks again."""
        if self._stopping or self._task is None:
            raise ObserveError(ErrorCode.ERROR_CODE_UNAVAILABLE, "the server is shutting down", retry_after=1)
        if self._pending_records + count > self.capacity and self._pending_records:
            self.records["refused_busy"] += count
            raise ObserveError(
                ErrorCode.ERROR_CODE_UNAVAILABLE, "log ingest is busy: retry after the delay", retry_after=1
            )

    def _take(self) -> list[_Submission]:
        """Whole submissions up to MAX_BATCH records (at least one)."""
        taken: list[_Submission] = []
        count = 0
        while self._pending and (not taken or count + len(self._pending[0].records) <= MAX_BATCH):
            item = self._pending.pop(0)
            taken.append(item)
            count += len(item.records)
        self._pending_records -= count
        return taken

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await asyncio.sleep(GATHER_SEC)
                await self._flush(self._take())
            if self._stopping:
                return

    async def _flush(self, batch: list[_Submission]) -> None:
        started = time.perf_counter()
        pairs = [(s.org_id, r) for s in batch for r in s.records]
        try:
            rows = await self._write(pairs)
        except Exception as exc:
            if len(batch) > 1 and not isinstance(exc, ObserveError) and unavailable(exc) is None:
                # Not the store being down: one request's records may be what
                # it refuses. Each request alone, so only that one fails.
                for submission in batch:
                    await self._flush([submission])
                return
            log_round_failure(log, "log batch", exc)
            answer = exc if isinstance(exc, ObserveError) else unavailable(exc)
            if answer is None:
                answer = ObserveError(ErrorCode.ERROR_CODE_UNAVAILABLE, "log storage failed", retry_after=1)
            self.records["failed"] += len(pairs)
            for s in batch:
                if not s.future.done():
                    s.future.set_exception(answer)
            return
        self.seconds_writing += time.perf_counter() - started
        self.batches += 1
        self.records["stored"] += len(rows)
        at = 0
        for s in batch:
            mine = rows[at : at + len(s.records)]
            at += len(s.records)
            if not s.future.done():
                s.future.set_result(mine)
        for listener in self.listeners:
            try:
                listener(rows)
            except Exception:  # a listener's bug must not fail ingest
                log.exception("log listener failed")

    async def _write(self, pairs: list[tuple[int, LogRecord]]) -> list[Row]:
        for attempt in range(COLLISION_RETRIES + 1):
            rows = self.ids.assign(pairs, clock.now())
            try:
                await self.store.write(rows)
                return rows
            except IdCollisionError:
                if attempt == COLLISION_RETRIES:
                    raise
                self.ids.skip()
        raise AssertionError("unreachable")  # pragma: no cover

    def collect(self) -> Iterator[Metric]:
        """Prometheus collector: register with ``registry.register(writer)``."""
        records = CounterMetricFamily("observe_log_records", "Log records by outcome", labels=["outcome"])
        for outcome, count in self.records.items():
            records.add_metric([outcome], count)
        yield records
        yield CounterMetricFamily("observe_log_batches", "Log batches committed", value=self.batches)
        yield GaugeMetricFamily("observe_log_queue_records", "Log records waiting to be written", value=self.queued)
