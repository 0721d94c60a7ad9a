"""The scheduler: due times in a heap, checks run with bounded concurrency
(overall and per target, so one slow host cannot take every slot), the
interval measured start to start, results written in batches, leases kept
in step with the other checker processes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy import delete, select

from core import clock
from core.accounts.plans import PlanBook, current_month
from core.checks import run_check
from core.checks.base import CheckResult, CheckSpec
from core.config import Settings
from core.metrics import ApiMetrics
from core.monitors.store import MonitorStore
from core.scheduler.events import StatusHooks
from core.scheduler.jobs import Job, job_from_row, phase
from core.scheduler.leases import Leases
from core.scheduler.metrics import render as render_monitors
from core.scheduler.writer import ResultWriter
from core.storage import tables as t
from core.storage.db import Database

log = logging.getLogger("observe.scheduler")

LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LOAD_CHUNK = 500
_SYNC_DEBOUNCE = 0.5
ROLLUP_RETENTION_DAYS = (2, 35)  # 5-minute and hourly buckets; daily ones: OBSERVE_ROLLUP_RETENTION_DAYS


def _epoch(dt: datetime) -> float:
    return dt.timestamp()


class Scheduler:
    def __init__(
        self,
        *,
        db: Database,
        store: MonitorStore,
        settings: Settings,
        plans: PlanBook,
        hooks: StatusHooks | None = None,
        metrics: ApiMetrics | None = None,
        checker: Callable[[CheckSpec], Awaitable[CheckResult]] = run_check,
    ) -> None:
        self.db = db
        self.store = store
        self.settings = settings
        self.plans = plans
        self.hooks = hooks or StatusHooks()
        self.checker = checker
        self.node_id = f"{socket.gethostname()[:30]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        db_lock = asyncio.Lock()  # this node's writes of its monitor_state rows, one at a time
        self.leases = Leases(db, self.node_id, settings.lease_ttl_sec, db_lock)
        self.writer = ResultWriter(db, self.node_id, self.hooks, db_lock)
        self.jobs: dict[int, Job] = {}
        self._heap: list[tuple[float, int, int]] = []
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(settings.check_concurrency)
        self._target_slots: dict[str, asyncio.Semaphore] = {}
        self._wake = asyncio.Event()
        self._sync_now = asyncio.Event()
        self._flush_now = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._seq = 0
        # Orgs on a plan with a monthly check cap: org → [limit, used].
        self._capped: dict[int, list[int]] = {}
        self._capped_month = ""
        registry = metrics.registry if metrics is not None else CollectorRegistry()
        self.lag = Histogram(
            "observe_scheduler_lag_seconds",
            "Delay between a check's due time and its start.",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.checks_total = Counter(
            "observe_checks_total", "Checks run by this process, by monitor type and result.", ["type", "result"],
            registry=registry,
        )  # fmt: skip
        self.skipped = Counter(
            "observe_checks_skipped_total", "Due checks not run, by reason.", ["reason"], registry=registry
        )
        if metrics is not None:
            metrics.extra.append(lambda monitors: render_monitors(self.snapshot(), monitors=monitors))

    # ---- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        await self.sync()
        self._loops = [
            asyncio.create_task(self._dispatch_loop(), name="scheduler-dispatch"),
            asyncio.create_task(self._sync_loop(), name="scheduler-sync"),
            asyncio.create_task(self._flush_loop(), name="scheduler-flush"),
            asyncio.create_task(self._janitor_loop(), name="scheduler-janitor"),
        ]

    async def stop(self) -> None:
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        inflight = list(self._inflight.values())
        if inflight:
            await asyncio.wait(inflight, timeout=2)
            for task in inflight:
                task.cancel()
        for job in self.jobs.values():
            self.writer.note_state(job)
        try:
            await self.writer.flush()
            await self.leases.release()
        except Exception:
            log.exception("could not hand over the leases on stop; they lapse in %ss", self.settings.lease_ttl_sec)

    def nudge(self) -> None:
        """A monitor was created, changed or deleted here: sync now, not at the next tick."""
        self._sync_now.set()

    # ---- leases and monitor loading ----------------------------------------

    async def _sync_loop(self) -> None:
        period = self.settings.lease_ttl_sec / 3
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sync_now.wait(), period)
            self._sync_now.clear()
            try:
                await self.sync()
            except Exception:
                log.exception("scheduler sync failed")
            # A burst of API changes (bulk creates) makes one sync a moment later, not one each.
            await asyncio.sleep(min(period, _SYNC_DEBOUNCE))

    async def sync(self) -> None:
        """Renews this node's leases, balances them with the other checkers,
        and loads monitors that are new here or changed since they were loaded."""
        tick = await self.leases.heartbeat(clock.precise_now())
        held = tick.held
        self._drop(set(self.jobs) - set(held))
        surplus = len(held) - tick.share
        if surplus > 0:
            # Give away those due last: stop running them here first, then
            # persist when each is next due, then let the lease go.
            by_due = sorted((self.jobs[i] for i in held if i in self.jobs), key=lambda j: -j.next_due)[:surplus]
            released = [job.id for job in by_due]
            self._drop(set(released))
            for job in by_due:
                self.writer.note_state(job)
            await self.writer.flush()
            await self.leases.release(released)
            log.info("released %d monitors to other checkers (%d live, share %d)", surplus, len(tick.live), tick.share)
        elif surplus < 0 and (claimed := await self.leases.claim(tick.live, -surplus)):
            log.info("claimed %d monitors (%d checkers live, share %d)", len(claimed), len(tick.live), tick.share)
            held = (await self.leases.heartbeat(clock.precise_now())).held
        stale = [i for i, version in held.items() if i not in self.jobs or self.jobs[i].version != version]
        for start in range(0, len(stale), _LOAD_CHUNK):
            await self._load(stale[start : start + _LOAD_CHUNK])
        if stale:
            # The jobs just loaded live as long as their monitors: keep them out of
            # the collector's full passes, which otherwise stall the loop at 10,000.
            gc.collect(1)
            gc.freeze()
        await self._refresh_caps()

    async def _load(self, ids: list[int]) -> None:
        m, s = t.monitors, t.monitor_state
        query = (
            select(
                m,
                s.c.status,
                s.c.consecutive_ok,
                s.c.consecutive_fail,
                s.c.last_checked_at,
                s.c.status_changed_at,
                s.c.next_due_at,
            )
            .join(s, s.c.monitor_id == m.c.id)
            .where(m.c.id.in_(ids), s.c.lease_owner == self.node_id)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        now = time.time()
        for row in rows:
            try:
                job = job_from_row(
                    row,
                    self.store.settings(row),
                    allow_private=self.settings.allow_private_targets,
                    scale=self.settings.check_interval_scale,
                )
            except Exception:
                log.exception("monitor %s could not be loaded", row.id)
                continue
            old = self.jobs.get(row.id)
            if old is not None:  # edited: keep the running state, take the new settings from the next run
                job.status, job.consecutive_ok, job.consecutive_fail = (
                    old.status,
                    old.consecutive_ok,
                    old.consecutive_fail,
                )
                job.last_ok, job.last_response_ms, job.cert_expires_at = (
                    old.last_ok,
                    old.last_response_ms,
                    old.cert_expires_at,
                )
                job.last_checked_at, job.status_changed_at = old.last_checked_at, old.status_changed_at
                last_start = old.next_due - old.interval if old.next_due else now
                due = last_start + job.interval
            elif row.next_due_at is not None and _epoch(row.next_due_at) >= now:
                due = _epoch(row.next_due_at)
            elif row.next_due_at is not None and now - _epoch(row.next_due_at) < job.interval:
                # Taken over from a checker that died or left while it was due:
                # run it now (spread over a second), so no interval goes unchecked.
                due = now + phase(row.id, min(job.interval, 1.0))
            else:  # never checked, or idle for longer than an interval: its own slot in the interval
                due = now + (phase(row.id, job.interval) - now) % job.interval
            self.jobs[row.id] = job
            self._schedule(job, due)

    def _schedule(self, job: Job, due: float) -> None:
        self._seq += 1
        job.seq = self._seq
        job.next_due = due
        if job.runs:
            heapq.heappush(self._heap, (due, job.seq, job.id))
            if self._heap[0][1] == job.seq:
                self._wake.set()

    def _drop(self, ids: set[int]) -> None:
        """Forgets monitors deleted or no longer leased here; their running checks are cancelled."""
        for i in ids:
            self.jobs.pop(i, None)
            task = self._inflight.pop(i, None)
            if task is not None:
                task.cancel()
        if ids:
            self.writer.forget(ids)

    async def _refresh_caps(self) -> None:
        capped_plans = [name for name, limits in self.plans.plans.items() if limits.monthly_checks is not None]
        if not capped_plans:
            return
        orgs = {job.org_id for job in self.jobs.values()}
        month = current_month()
        o, u = t.orgs, t.org_usage
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(o.c.id, o.c.plan, u.c.checks)
                    .outerjoin(u, (u.c.org_id == o.c.id) & (u.c.month == month))
                    .where(o.c.plan.in_(capped_plans), o.c.id.in_(orgs))
                )
            ).all()
        previous = self._capped if month == self._capped_month else {}
        self._capped, self._capped_month = {}, month
        for row in rows:
            limit = self.plans.limits(row.plan).monthly_checks
            assert limit is not None
            # Checks counted here may not be flushed yet: never count fewer than before.
            self._capped[row.id] = [limit, max(row.checks or 0, previous.get(row.id, [0, 0])[1])]

    # ---- running checks ------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        heap = self._heap
        while True:
            now = time.time()
            while heap and heap[0][0] <= now:
                due, seq, monitor_id = heapq.heappop(heap)
                job = self.jobs.get(monitor_id)
                if job is None or job.seq != seq or not job.runs:
                    continue
                next_due = due + job.interval
                if next_due <= now:  # more than an interval behind: keep the phase, skip the missed runs
                    next_due += ((now - next_due) // job.interval + 1) * job.interval
                job.next_due = next_due
                heapq.heappush(heap, (next_due, seq, monitor_id))
                if monitor_id in self._inflight:
                    self.skipped.labels("still_running").inc()
                    continue
                self._inflight[monitor_id] = asyncio.create_task(self._run(job, due))
            self._wake.clear()
            delay = heap[0][0] - time.time() if heap else 1.0
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(delay, 1.0))

    def _target_slot(self, target: str) -> asyncio.Semaphore:
        slot = self._target_slots.get(target)
        if slot is None:
            slot = self._target_slots[target] = asyncio.Semaphore(self.settings.check_target_concurrency)
        return slot

    async def _run(self, job: Job, due: float) -> None:
        try:
            spec = job.spec
            assert spec is not None
            cap = self._capped.get(job.org_id)
            if cap is not None and cap[1] >= cap[0]:
                self.skipped.labels("plan_limit_checks").inc()
                return
            async with self._target_slot(job.target), self._slots:
                started = time.time()
                self.lag.observe(max(0.0, started - due))
                result = await self.checker(spec)
            if cap is not None:
                cap[1] += 1
            current = self.jobs.get(job.id)
            if current is None:
                return  # deleted or handed over while it ran
            self._record(current, started, result)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("check of monitor %s failed", job.id)
        finally:
            if self._inflight.get(job.id) is asyncio.current_task():
                del self._inflight[job.id]

    def _record(self, job: Job, started: float, result: CheckResult) -> None:
        started_at = datetime.fromtimestamp(started, UTC)
        finished_at = started_at + timedelta(milliseconds=result.response_ms or 0)
        change = None
        new_status = job.record(result.ok)
        if new_status is not None:
            change = (job.status, new_status)
            job.status, job.status_changed_at = new_status, finished_at
        job.last_checked_at = finished_at
        job.last_ok, job.last_response_ms = result.ok, result.response_ms
        if result.cert_expires_at is not None:
            job.cert_expires_at = result.cert_expires_at
        self.checks_total.labels(job.type, "up" if result.ok else "down").inc()
        self.writer.add(job, started_at, result, change)
        if len(self.writer) >= 1000:
            self._flush_now.set()

    async def _flush_loop(self) -> None:
        period = self.settings.check_flush_ms / 1000
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), period)
            self._flush_now.clear()
            try:
                await self.writer.flush()
            except Exception:
                log.exception("writing check results failed; retrying")

    # ---- retention -------------------------------------------------------------

    async def _janitor_loop(self) -> None:
        while True:
            try:
                await self.prune(clock.now())
            except Exception:
                log.exception("pruning old check results failed")
            await asyncio.sleep(3600)

    async def prune(self, now: datetime) -> None:
        """Drops raw results past their retention, then rollups past theirs:
        5-minute buckets after 2 days, hourly after 35, daily after the
        rollup retention (as Uptime Kuma 2 keeps minutely/hourly/daily stats)."""
        r, ro = t.check_results, t.check_rollups
        raw_cutoff = now - timedelta(days=self.settings.check_retention_days)
        while True:
            async with self.db.write() as conn:
                batch = select(r.c.id).where(r.c.checked_at < raw_cutoff).limit(5000).scalar_subquery()
                deleted = (await conn.execute(delete(r).where(r.c.id.in_(batch)))).rowcount
            if deleted < 5000:
                break
            await asyncio.sleep(0)
        for level, days in enumerate((*ROLLUP_RETENTION_DAYS[:2], self.settings.rollup_retention_days)):
            async with self.db.write() as conn:
                await conn.execute(
                    delete(ro).where(ro.c.level == level, ro.c.bucket_start < now - timedelta(days=days))
                )

    # ---- introspection -------------------------------------------------------------

    def snapshot(self) -> list[Job]:
        return list(self.jobs.values())
