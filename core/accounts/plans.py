"""Organisation plans: limits per plan name, and what an org has used."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from core import clock
from core.storage import tables as t


@dataclass(frozen=True, slots=True)
class Limits:
    """None means unlimited."""

    monitors: int | None = None
    monthly_checks: int | None = None
    monthly_log_bytes: int | None = None


# Self-hosted installs default to "unlimited".
PLANS: dict[str, Limits] = {"unlimited": Limits()}
DEFAULT_PLAN = "unlimited"


def limits_for(plan: str) -> Limits:
    return PLANS.get(plan, Limits())


@dataclass(frozen=True, slots=True)
class OrgUsage:
    monitors: int
    monthly_checks: int
    monthly_log_bytes: int


def current_month() -> str:
    return clock.now().strftime("%Y-%m")


async def usage(conn: AsyncConnection, org_id: int) -> OrgUsage:
    """This month's counters for ``org_id``."""
    row = (
        await conn.execute(
            select(t.org_usage.c.checks, t.org_usage.c.log_bytes).where(
                (t.org_usage.c.org_id == org_id) & (t.org_usage.c.month == current_month())
            )
        )
    ).first()
    # Monitors are counted here once the monitors table exists (issue 4).
    return OrgUsage(monitors=0, monthly_checks=row.checks if row else 0, monthly_log_bytes=row.log_bytes if row else 0)
