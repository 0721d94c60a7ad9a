"""Batched result writes: raw results, rollups, monitor state, status events
and the org's monthly check count, in one transaction per flush."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from core.accounts.plans import current_month
from core.checks.base import CheckResult
from core.monitors.rollups import LEVELS, Agg, bucket_start
from core.scheduler.events import StatusChange, StatusHooks
from core.scheduler.jobs import Job
from core.storage import tables as t
from core.storage.db import Database

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
class _Event:
    monitor_id: int
    org_id: int
    at: datetime
    from_status: str
    to_status: str
    reason: str | None
    error: str | None


class ResultWriter:
    def __init__(self, db: Database, owner: str, hooks: StatusHooks) -> None:
        self.db = db
        self.owner = owner
        self.hooks = hooks
        self._results: list[dict[str, Any]] = []
        self._jobs: dict[int, Job] = {}
        self._events: list[_Event] = []
        self._checks_by_org: Counter[int] = Counter()
        self._deltas: dict[tuple[int, int, datetime], Agg] = {}
        # The current bucket of each (monitor, level), as written last.
        self._cache: dict[tuple[int, int], tuple[datetime, Agg]] = {}

    def __len__(self) -> int:
        return len(self._results)

    def add(self, job: Job, started_at: datetime, result: CheckResult, change: tuple[str, str] | None) -> None:
        self._results.append(
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
        self._jobs[job.id] = job
        self._checks_by_org[job.org_id] += 1
        if change is not None:
            self._events.append(
                _Event(job.id, job.org_id, started_at, change[0], change[1], result.reason, result.error)
            )
        for level in range(len(LEVELS)):
            key = (job.id, level, bucket_start(started_at, level))
            agg = self._deltas.get(key)
            if agg is None:
                agg = self._deltas[key] = Agg()
            agg.add(result.ok, result.response_ms)

    def note_state(self, job: Job) -> None:
        """Persist this job's state (next due time) at the next flush, e.g. before a release."""
        self._jobs[job.id] = job

    def forget(self, monitor_ids: set[int]) -> None:
        """Drops what is cached for monitors this process no longer holds."""
        for key in [k for k in self._cache if k[0] in monitor_ids]:
            del self._cache[key]

    async def flush(self) -> int:
        """Writes everything pending; returns the number of results written.
        On failure the batch goes back in the queue for the next flush."""
        if not self._jobs:
            return 0
        batch = (self._results, self._jobs, self._events, self._checks_by_org, self._deltas)
        self._results, self._jobs, self._events = [], {}, []
        self._checks_by_org, self._deltas = Counter(), {}
        for attempt in (1, 2):
            try:
                changes = await self._write(*batch, recheck=attempt == 2)
                break
            except IntegrityError:
                if attempt == 2:
                    raise
            except Exception:
                self._requeue(*batch)
                raise
        if changes:
            await self.hooks.emit(changes)
        return len(batch[0])

    def _requeue(
        self,
        results: list[dict[str, Any]],
        jobs: dict[int, Job],
        events: list[_Event],
        checks_by_org: Counter[int],
        deltas: dict[tuple[int, int, datetime], Agg],
    ) -> None:
        self._cache.clear()  # may hold merges of the failed batch
        self._results[:0] = results
        self._jobs = {**jobs, **self._jobs}
        self._events[:0] = events
        self._checks_by_org.update(checks_by_org)
        for key, agg in deltas.items():
            mine = self._deltas.setdefault(key, Agg())
            mine.merge(agg)

    async def _write(
        self,
        results: list[dict[str, Any]],
        jobs: dict[int, Job],
        events: list[_Event],
        checks_by_org: Counter[int],
        deltas: dict[tuple[int, int, datetime], Agg],
        *,
        recheck: bool,
    ) -> list[StatusChange]:
        changes: list[StatusChange] = []
        async with self.db.write() as conn:
            ids = set(jobs)
            live = set((await conn.execute(select(t.monitors.c.id).where(t.monitors.c.id.in_(ids)))).scalars().all())
            if live != ids or recheck:  # deleted while their checks ran: drop their results
                self.forget(ids - live)
                results = [r for r in results if r["monitor_id"] in live]
                events = [e for e in events if e.monitor_id in live]
                deltas = {k: a for k, a in deltas.items() if k[0] in live}
                jobs = {i: j for i, j in jobs.items() if i in live}
            if results:
                await conn.execute(insert(t.check_results), results)
            if deltas:
                await self._write_rollups(conn, deltas)
            if jobs:
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
                        for job in jobs.values()
                    ],
                )
            for e in events:
                event_id = (
                    await conn.execute(
                        insert(t.monitor_events)
                        .values(
                            monitor_id=e.monitor_id,
                            org_id=e.org_id,
                            at=e.at,
                            from_status=e.from_status,
                            to_status=e.to_status,
                            reason=e.reason,
                            error=e.error,
                        )
                        .returning(t.monitor_events.c.id)
                    )
                ).scalar_one()
                changes.append(StatusChange(event_id, e.monitor_id, e.org_id, e.at, e.from_status, e.to_status,
                                            e.reason, e.error))  # fmt: skip
            month = current_month()
            for org_id, n in checks_by_org.items():
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
