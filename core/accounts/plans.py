"""Organisation plans: limits per plan name, and what an org has used."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, bindparam, select
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


def with_usage(query: Select[Any]) -> Select[Any]:
    """``query`` (which selects from ``orgs``) plus the usage columns of the
    month bound as ``usage_month`` (see :func:`current_month`)."""
    return query.add_columns(
        t.org_usage.c.checks.label("usage_checks"), t.org_usage.c.log_bytes.label("usage_log_bytes")
    ).outerjoin(t.org_usage, (t.org_usage.c.org_id == t.orgs.c.id) & (t.org_usage.c.month == bindparam("usage_month")))


def usage_from(row: Any) -> OrgUsage:
    """The usage in a row of a :func:`with_usage` query."""
    # Monitors are counted here once the monitors table exists (issue 4).
    return OrgUsage(monitors=0, monthly_checks=row.usage_checks or 0, monthly_log_bytes=row.usage_log_bytes or 0)


async def usage(conn: AsyncConnection, org_id: int) -> OrgUsage:
    """This month's counters for ``org_id``."""
    query = with_usage(select(t.orgs.c.id)).where(t.orgs.c.id == org_id)
    row = (await conn.execute(query, {"usage_month": current_month()})).one()
    return usage_from(row)
