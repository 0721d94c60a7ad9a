"""Batched result writes: raw results, rollups, monitor state, status events
and the org's monthly check count, in one transaction per flush."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from core.accounts.plans import current_month
from core.checks.base import CheckResult
from core.monitors.rollups import LEVELS, Agg, bucket_start
from core.scheduler import events
from core.scheduler.events import StatusChange, StatusHooks
from core.scheduler.jobs import Job
from core.storage import tables as t
from core.storage.db import Database

if TYPE_CHECKING:
    from core.maintenance.calendar import MaintenanceCalendar

_STATE_UPDATE = (
    update(t.monitor_state)
    .where(t.monitor_state.c.monitor_id == bindparam("b_id"), t.monitor_state.c.lease_owner == bindparam("b_owner"))
    .values(
        status=bindparam("b_status"),
        consecutive_ok=bindparam("b_ok"),
        consecutive_fail=bindparam("b_fail"),
        last_checked_at=bindparam("b_checked"),
        status_changed_at=bindparam("b_changed"),
        next_due_at=bindparam("b_due"),
    )
)


@dataclass(slots=True)
class _Batch:
    """What one flush writes."""

    results: list[dict[str, Any]] = field(default_factory=list)
    jobs: dict[int, Job] = field(default_factory=dict)  # whose state to write
    events: list[StatusChange] = field(default_factory=list)  # event_id 0 until stored
    checks_by_org: Counter[int] = field(default_factory=Counter)
    deltas: dict[tuple[int, int, datetime], Agg] = field(default_factory=dict)  # (monitor, level, bucket)

    def absorb(self, older: _Batch) -> None:
        """Puts a failed batch back in front of this one."""
        self.results[:0] = older.results
        self.jobs = {**older.jobs, **self.jobs}
        self.events[:0] = older.events
        self.checks_by_org.update(older.checks_by_org)
        for key, agg in older.deltas.items():
            self.deltas.setdefault(key, Agg()).merge(agg)

    def keep(self, live: set[int]) -> None:
        """Drops what belongs to monitors deleted while their checks ran."""
        self.results = [r for r in self.results if r["monitor_id"] in live]
        self.jobs = {i: j for i, j in self.jobs.items() if i in live}
        self.events = [e for e in self.events if e.monitor_id in live]
        self.deltas = {k: a for k, a in self.deltas.items() if k[0] in live}


class ResultWriter:
    def __init__(
        self,
        db: Database,
        owner: str,
        hooks: StatusHooks,
        lock: asyncio.Lock,
        calendar: MaintenanceCalendar | None = None,
    ) -> None:
        self.db = db
        # Results of monitors a maintenance window covers stay out of the
        # rollups (uptime leaves maintenance out); None: no exclusion.
        self.calendar = calendar
        self.owner = owner
        self.hooks = hooks
        self.lock = lock
        self._batch = _Batch()
        # The current bucket of each (monitor, level), as written last.
        self._cache: dict[tuple[int, int], tuple[datetime, Agg]] = {}

    def __len__(self) -> int:
        return len(self._batch.results)

    def add(self, job: Job, started_at: datetime, result: CheckResult, change: tuple[str, str] | None) -> None:
        batch = self._batch
        batch.results.append(
            {
                "monitor_id": job.id,
                "checked_at": started_at,
                "ok": result.ok,
                "response_ms": result.response_ms,
                "status_code": result.status_code,
                "reason": None if result.ok else result.reason,
                "error": None if result.ok else (result.error or "")[:2000],
                "timings": json.dumps(result.timings, separators=(",", ":")) if result.timings else None,
                "cert_expires_at": result.cert_expires_at,
                "region": "local",
            }
        )
        batch.jobs[job.id] = job
        batch.checks_by_org[job.org_id] += 1
        if change is not None:
            batch.events.append(
                StatusChange(0, job.id, job.org_id, started_at, change[0], change[1], result.reason, result.error)
            )
        if self.calendar is not None and self.calendar.covered_now(job.org_id, job.id):
            return
        for level in range(len(LEVELS)):
            key = (job.id, level, bucket_start(started_at, level))
            agg = batch.deltas.get(key)
            if agg is None:
                agg = batch.deltas[key] = Agg()
            agg.add(result.ok, result.response_ms)

    def note_state(self, job: Job) -> None:
        """Persist this job's state (next due time) at the next flush, e.g. before a release.
        Jobs not checked here are left alone: a heartbeat monitor's status is
        the heartbeat code's (core.heartbeats), a paused one's does not move."""
        if job.runs:
            self._batch.jobs[job.id] = job

    def forget(self, monitor_ids: set[int]) -> None:
        """Drops what is cached for monitors this process no longer holds."""
        for key in [k for k in self._cache if k[0] in monitor_ids]:
            del self._cache[key]

    async def flush(self) -> int:
        """Writes everything pending; returns the number of results written.
        A monitor deleted meanwhile (a foreign-key error) makes one retry that
        re-reads which monitors exist; any other failure puts the batch back
        for the next flush."""
        batch, self._batch = self._batch, _Batch()
        if not batch.jobs:
            return 0
        for attempt in (1, 2):
            try:
                changes = await self._write(batch, recheck=attempt == 2)
                break
            except Exception as exc:
                self._cache.clear()  # may hold merges of the failed attempt
                if attempt == 1 and isinstance(exc, IntegrityError):
                    continue
                self._batch.absorb(batch)
                raise
        if changes:
            await self.hooks.emit(changes)
        return len(batch.results)

    async def _write(self, batch: _Batch, *, recheck: bool) -> list[StatusChange]:
        async with self.lock, self.db.write() as conn:
            ids = set(batch.jobs)
            live = set((await conn.execute(select(t.monitors.c.id).where(t.monitors.c.id.in_(ids)))).scalars().all())
            if live != ids or recheck:
                self.forget(ids - live)
                batch.keep(live)
            if batch.results:
                await conn.execute(insert(t.check_results), batch.results)
            if batch.deltas:
                await self._write_rollups(conn, batch.deltas)
            if batch.jobs:
                await conn.execute(
                    _STATE_UPDATE,
                    [
                        {
                            "b_id": job.id,
                            "b_owner": self.owner,
                            "b_status": job.status,
                            "b_ok": job.consecutive_ok,
                            "b_fail": job.consecutive_fail,
                            "b_checked": job.last_checked_at,
                            "b_changed": job.status_changed_at,
                            "b_due": datetime.fromtimestamp(job.next_due, tz=UTC) if job.next_due else None,
                        }
                        for job in sorted(batch.jobs.values(), key=lambda j: j.id)
                    ],
                )
            changes = await events.store(conn, batch.events)
            month = current_month()
            for org_id, n in batch.checks_by_org.items():
                stmt = self.db.upsert(t.org_usage).values(org_id=org_id, month=month, checks=n, log_bytes=0)
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[t.org_usage.c.org_id, t.org_usage.c.month],
                        set_={"checks": t.org_usage.c.checks + n},
                    )
                )
        return changes

    async def _write_rollups(self, conn: Any, deltas: dict[tuple[int, int, datetime], Agg]) -> None:
        ro = t.check_rollups
        missing: dict[tuple[int, datetime], list[int]] = {}
        for mid, level, start in deltas:
            cached = self._cache.get((mid, level))
            if cached is None or cached[0] != start:
                missing.setdefault((level, start), []).append(mid)
        loaded: dict[tuple[int, int, datetime], Agg] = {}
        for (level, start), mids in missing.items():
            rows = await conn.execute(
                select(ro).where(ro.c.level == level, ro.c.bucket_start == start, ro.c.monitor_id.in_(mids))
            )
            for row in rows:
                loaded[(row.monitor_id, level, start)] = Agg.from_row(row)
        out = []
        for (mid, level, start), delta in deltas.items():
            cached = self._cache.get((mid, level))
            agg = cached[1] if cached is not None and cached[0] == start else loaded.get((mid, level, start), Agg())
            agg.merge(delta)
            self._cache[(mid, level)] = (start, agg)
            out.append({"monitor_id": mid, "level": level, "bucket_start": start, **agg.row()})
        stmt = self.db.upsert(ro)
        cols = ("checks", "up_checks", "timed", "sum_ms", "min_ms", "max_ms", "hist")
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[ro.c.monitor_id, ro.c.level, ro.c.bucket_start],
                set_={c: getattr(stmt.excluded, c) for c in cols},
            ),
            out,
        )
