"""What changed since the last look, for the public views' cache: one cheap
query a round (maxima over primary keys and indexed columns, and counts of
small tables), then, only when something moved, which monitors or
organisations it concerns.

A change reported here covers every process: the scheduler, the incident
engine and other API processes write the same tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import distinct, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from core.incidents.tables import incident_updates, incidents
from core.maintenance.tables import maintenance_windows as mw
from core.status_pages.tables import status_page_monitors as spm
from core.status_pages.tables import status_pages as sp
from core.storage import tables as t


def _marks() -> Any:
    e, u, i = t.monitor_events.c, incident_updates.c, incidents.c
    return select(
        select(func.max(e.id)).scalar_subquery().label("event"),
        select(func.max(u.id)).scalar_subquery().label("update"),
        select(func.max(i.id)).scalar_subquery().label("incident"),
        select(func.max(i.updated_at)).scalar_subquery().label("incident_at"),
        select(func.max(mw.c.updated_at)).scalar_subquery().label("window_at"),
        select(func.count()).select_from(mw).scalar_subquery().label("windows"),
        select(func.max(sp.c.updated_at)).scalar_subquery().label("page_at"),
        select(func.count()).select_from(sp).scalar_subquery().label("pages"),
        select(func.count()).select_from(spm).scalar_subquery().label("components"),
        select(func.max(t.monitors.c.updated_at)).scalar_subquery().label("monitor_at"),
    )


_MARKS = _marks()


@dataclass(slots=True)
class Changes:
    """What moved: monitors whose status changed, organisations whose
    incidents changed, or anything else (``everything``)."""

    everything: bool = False
    monitors: set[int] = field(default_factory=set)
    orgs: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return self.everything or bool(self.monitors) or bool(self.orgs)


class ChangeWatch:
    """Remembers the marks of the last round; :meth:`poll` says what moved since."""

    def __init__(self) -> None:
        self._last: dict[str, Any] | None = None

    async def poll(self, conn: AsyncConnection) -> Changes:
        marks = dict((await conn.execute(_MARKS)).one()._mapping)
        last, self._last = self._last, marks
        if last is None:
            return Changes()
        out = Changes()
        if any(marks[k] != last[k] for k in ("window_at", "windows", "page_at", "pages", "components", "monitor_at")):
            out.everything = True
            return out
        if marks["event"] != last["event"]:
            e = t.monitor_events.c
            rows = await conn.execute(select(distinct(e.monitor_id)).where(e.id > (last["event"] or 0)))
            out.monitors.update(r[0] for r in rows)
        if marks["update"] != last["update"]:
            u = incident_updates.c
            rows = await conn.execute(
                select(distinct(incidents.c.org_id))
                .select_from(incident_updates.join(incidents, incidents.c.id == u.incident_id))
                .where(u.id > (last["update"] or 0))
            )
            out.orgs.update(r[0] for r in rows)
        if marks["incident"] != last["incident"] or marks["incident_at"] != last["incident_at"]:
            since: datetime | None = last["incident_at"]
            i = incidents.c
            query = select(distinct(i.org_id)).where(i.id > (last["incident"] or 0))
            if since is not None:
                query = select(distinct(i.org_id)).where((i.id > (last["incident"] or 0)) | (i.updated_at >= since))
            out.orgs.update(r[0] for r in await conn.execute(query))
        return out
