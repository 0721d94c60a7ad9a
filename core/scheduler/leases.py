"""Leases: which checker process holds which monitors.

A lease is ``monitor_state.lease_owner`` naming a checker node; it is good
while that node's ``checker_nodes`` row is fresh (seen within ``ttl``), so a
node renews all its leases with one small write per tick, however many it
holds. Each node holds about its fair share (monitors / live nodes), claims
free leases or those of dead nodes up to it (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so two claimers never take the same row) and releases its surplus
when a node joins. A killed node's monitors are free once its row is
``ttl`` old. Node clocks are assumed to agree (NTP) to well under the ttl."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update

from core.storage import tables as t
from core.storage.db import Database

s, n, m = t.monitor_state, t.checker_nodes, t.monitors


@dataclass(frozen=True, slots=True)
class Tick:
    held: dict[int, int]  # monitor id → settings version, for every monitor this node holds
    share: int  # about how many this node should hold
    live: list[str]  # ids of the nodes alive now, this one included


class Leases:
    def __init__(self, db: Database, owner: str, ttl: float, lock: asyncio.Lock) -> None:
        self.db = db
        self.owner = owner
        self.ttl = timedelta(seconds=ttl)
        self.lock = lock  # shared with the result writer: one writer of this node's rows at a time

    async def heartbeat(self, now: datetime) -> Tick:
        """Renews this node (and so all its leases); reads what it holds."""
        async with self.lock, self.db.write() as conn:
            stmt = self.db.upsert(n).values(id=self.owner, started_at=now, seen_at=now)
            await conn.execute(stmt.on_conflict_do_update(index_elements=[n.c.id], set_={"seen_at": now}))
            await conn.execute(delete(n).where(n.c.seen_at < now - 10 * self.ttl))
            live = list((await conn.execute(select(n.c.id).where(n.c.seen_at > now - self.ttl))).scalars())
            total = (await conn.execute(select(func.count()).select_from(s))).scalar_one()
            held = await conn.execute(
                select(m.c.id, m.c.version).join(s, s.c.monitor_id == m.c.id).where(s.c.lease_owner == self.owner)
            )
            return Tick(dict(held.tuples().all()), math.ceil(total / max(len(live), 1)), live)

    async def claim(self, live: list[str], limit: int) -> list[int]:
        """Takes up to ``limit`` free leases or leases of nodes not in ``live``."""
        free = (
            select(s.c.monitor_id)
            .where(or_(s.c.lease_owner.is_(None), s.c.lease_owner.not_in(live)))
            .order_by(s.c.monitor_id)
            .limit(limit)
        )
        if not self.db.is_sqlite:
            free = free.with_for_update(skip_locked=True)
        async with self.lock, self.db.write() as conn:
            claimed = await conn.execute(
                update(s)
                .where(s.c.monitor_id.in_(free.scalar_subquery()))
                .values(lease_owner=self.owner)
                .returning(s.c.monitor_id)
            )
            return sorted(claimed.scalars())

    async def release(self, monitor_ids: list[int] | None = None) -> None:
        """Gives up some leases (all when None, and leaves) for another node to take now."""
        stmt = update(s).where(s.c.lease_owner == self.owner)
        if monitor_ids is not None:
            stmt = stmt.where(s.c.monitor_id.in_(monitor_ids))
        async with self.lock, self.db.write() as conn:
            await conn.execute(stmt.values(lease_owner=None))
            if monitor_ids is None:
                await conn.execute(delete(n).where(n.c.id == self.owner))
