"""Per-PAT daily caps: mutations and ingested log bytes per UTC day.

Counting is one conditional upsert per call — ``INSERT … ON CONFLICT DO
UPDATE … WHERE used + n <= limit RETURNING`` — so racing calls can never
spend past the cap: the row lock (PostgreSQL) or the write lock (SQLite)
orders them, and a call whose update matches no row was over the cap.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func

from core.errors import ErrorCode, ObserveError
from core.rpc.context import Principal
from core.storage import tables as t
from core.storage.db import Database


def seconds_to_midnight(now: datetime | None = None) -> int:
    """Seconds until the next 00:00 UTC, when the counters reset."""
    now = now or datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - now).total_seconds() + 0.999))


async def _spend(
    db: Database, token_id: int, column: str, amount: int, limit: int | None, today: date | None = None
) -> bool:
    """Adds ``amount`` to today's ``column`` unless that would pass ``limit``."""
    today = today or datetime.now(UTC).date()
    used = t.token_usage.c[column]
    values = {"token_id": token_id, "day": today, "mutations": 0, "log_bytes": 0, column: amount}
    stmt = db.upsert(t.token_usage).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.token_usage.c.token_id, t.token_usage.c.day],
        set_={column: used + amount},
        where=(used + amount <= limit) if limit is not None else None,
    ).returning(used)
    if limit is not None and amount > limit:
        return False
    async with db.write() as conn:
        return (await conn.execute(stmt)).first() is not None


def _exceeded(what: str, limit: int) -> ObserveError:
    return ObserveError(
        ErrorCode.ERROR_CODE_PAT_DAILY_LIMIT_EXCEEDED,
        f"this token's {what} ({limit} per UTC day) is used up",
        retry_after=seconds_to_midnight(),
    )


async def count_mutation(db: Database, principal: Principal) -> None:
    """Counts one mutating call against the PAT's dailyMutationLimit."""
    if principal.pat_id is None:
        return
    limit = principal.daily_mutation_limit
    if not await _spend(db, principal.token_id, "mutations", 1, limit):
        assert limit is not None
        raise _exceeded("dailyMutationLimit", limit)


async def consume_log_bytes(db: Database, principal: Principal, size: int) -> date:
    """Counts ``size`` ingested log bytes against the PAT's dailyLogBytesLimit
    (all or nothing: a batch that would pass the cap is refused whole);
    returns the UTC day they were counted on (what a refund gives back to)."""
    today = datetime.now(UTC).date()
    if principal.pat_id is None or size <= 0:
        return today
    limit = principal.daily_log_bytes_limit
    if not await _spend(db, principal.token_id, "log_bytes", size, limit, today):
        assert limit is not None
        raise _exceeded("dailyLogBytesLimit", limit)
    return today


async def refund_log_bytes(db: Database, principal: Principal, size: int, day: date) -> None:
    """Gives back bytes counted by :func:`consume_log_bytes` on ``day`` for
    records that were then not stored (the write failed, maybe after midnight)."""
    if principal.pat_id is None or size <= 0:
        return
    used = t.token_usage.c.log_bytes
    stmt = (
        t.token_usage.update()
        .where(t.token_usage.c.token_id == principal.token_id, t.token_usage.c.day == day)
        .values(log_bytes=func.max(used - size, 0) if db.is_sqlite else func.greatest(used - size, 0))
    )
    async with db.write() as conn:
        await conn.execute(stmt)
