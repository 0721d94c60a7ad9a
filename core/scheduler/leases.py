"""Leases: which checker process holds which monitors. Every process renews
its leases and heartbeats a ``checker_nodes`` row each tick; each holds about
its fair share (monitors / live checkers), claims expired or free leases up
to it (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two claimers never take
the same row) and releases its surplus when a new checker joins. A dead
checker's leases lapse after ``ttl`` and the others take them."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update

from core.storage import tables as t
from core.storage.db import Database

s = t.monitor_state


class Leases:
    def __init__(self, db: Database, owner: str, ttl: float) -> None:
        self.db = db
        self.owner = owner
        self.ttl = timedelta(seconds=ttl)

    async def heartbeat(self, now: datetime) -> tuple[set[int], int]:
        """Renews this node and its leases; returns (monitors held, fair share)."""
        until = now + self.ttl
        async with self.db.write() as conn:
            stmt = self.db.upsert(t.checker_nodes).values(id=self.owner, started_at=now, seen_at=now)
            await conn.execute(stmt.on_conflict_do_update(index_elements=[t.checker_nodes.c.id], set_={"seen_at": now}))
            held = set(
                (
                    await conn.execute(
                        update(s)
                        .where(s.c.lease_owner == self.owner)
                        .values(lease_until=until)
                        .returning(s.c.monitor_id)
                    )
                )
                .scalars()
                .all()
            )
            live = (
                await conn.execute(
                    select(func.count()).select_from(t.checker_nodes).where(t.checker_nodes.c.seen_at > now - self.ttl)
                )
            ).scalar_one()
            total = (await conn.execute(select(func.count()).select_from(s))).scalar_one()
            await conn.execute(delete(t.checker_nodes).where(t.checker_nodes.c.seen_at < now - 10 * self.ttl))
        return held, math.ceil(total / max(live, 1))

    async def claim(self, now: datetime, limit: int) -> list[int]:
        """Takes up to ``limit`` free or lapsed leases."""
        free = (
            select(s.c.monitor_id)
            .where(or_(s.c.lease_until.is_(None), s.c.lease_until < now))
            .order_by(s.c.monitor_id)
            .limit(limit)
        )
        if not self.db.is_sqlite:
            free = free.with_for_update(skip_locked=True)
        async with self.db.write() as conn:
            claimed = (
                await conn.execute(
                    update(s)
                    .where(s.c.monitor_id.in_(free.scalar_subquery()))
                    .values(lease_owner=self.owner, lease_until=now + self.ttl)
                    .returning(s.c.monitor_id)
                )
            ).scalars()
            return sorted(claimed)

    async def release(self, monitor_ids: list[int] | None = None) -> None:
        """Gives up some leases (all when None) for another checker to take now."""
        stmt = update(s).where(s.c.lease_owner == self.owner)
        if monitor_ids is not None:
            stmt = stmt.where(s.c.monitor_id.in_(monitor_ids))
        async with self.db.write() as conn:
            await conn.execute(stmt.values(lease_owner=None, lease_until=None))
            if monitor_ids is None:
                await conn.execute(delete(t.checker_nodes).where(t.checker_nodes.c.id == self.owner))
