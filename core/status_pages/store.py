"""Status pages as rows: the page settings (:class:`PageRow`), lookups by id,
slug and custom domain, and the API projection. ``groups`` is JSON text in
API names ([{name, components: [{monitorId, displayName?}]}]); components
whose monitor was deleted are left out when a page is read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from observe.v1 import status_pages_pb2
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from core import clock
from core.status_pages.tables import status_page_monitors as spm
from core.status_pages.tables import status_page_subscribers as sps
from core.status_pages.tables import status_pages as sp
from core.storage import tables as t

DEFAULT_HISTORY_DAYS = 90


@dataclass(frozen=True, slots=True)
class ComponentSpec:
    monitor_id: int
    display_name: str | None


@dataclass(frozen=True, slots=True)
class GroupSpec:
    name: str
    components: tuple[ComponentSpec, ...]


@dataclass(frozen=True, slots=True)
class PageRow:
    """A page's settings as stored."""

    id: int
    org_id: int
    name: str
    slug: str
    description: str | None
    custom_domain: str | None
    published: bool
    groups: tuple[GroupSpec, ...]
    history_days: int
    show_maintenance: bool
    accent_color: str | None
    password_hash: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def monitor_ids(self) -> list[int]:
        """The monitors shown, in page order, each once."""
        return list(dict.fromkeys(c.monitor_id for g in self.groups for c in g.components))

    @property
    def locked(self) -> bool:
        return self.password_hash is not None


def groups_from_json(text: str) -> tuple[GroupSpec, ...]:
    return tuple(
        GroupSpec(
            name=g["name"],
            components=tuple(ComponentSpec(int(c["monitorId"]), c.get("displayName")) for c in g["components"]),
        )
        for g in json.loads(text)
    )


def groups_to_json(groups: list[status_pages_pb2.StatusPageGroup] | Any) -> str:
    return json.dumps(
        [
            {
                "name": g.name,
                "components": [
                    {
                        "monitorId": c.monitor_id,
                        **({"displayName": c.display_name} if c.HasField("display_name") else {}),
                    }
                    for c in g.components
                ],
            }
            for g in groups
        ],
        separators=(",", ":"),
    )


def page_from_row(row: Any, existing_monitors: set[int] | None = None) -> PageRow:
    """The page of a ``status_pages`` row; with ``existing_monitors``,
    components of other (deleted) monitors are left out."""
    groups = groups_from_json(row.groups)
    if existing_monitors is not None:
        groups = tuple(
            GroupSpec(g.name, tuple(c for c in g.components if c.monitor_id in existing_monitors)) for g in groups
        )
    return PageRow(
        id=row.id,
        org_id=row.org_id,
        name=row.name,
        slug=row.slug,
        description=row.description,
        custom_domain=row.custom_domain,
        published=bool(row.published),
        groups=groups,
        history_days=row.history_days,
        show_maintenance=bool(row.show_maintenance),
        accent_color=row.accent_color,
        password_hash=row.password_hash,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def _pages(conn: AsyncConnection, rows: list[Any]) -> list[PageRow]:
    if not rows:
        return []
    ids = [r.id for r in rows]
    shown = await conn.execute(select(spm.c.page_id, spm.c.monitor_id).where(spm.c.page_id.in_(ids)))
    existing: dict[int, set[int]] = {}
    for page_id, monitor_id in shown:
        existing.setdefault(page_id, set()).add(monitor_id)
    return [page_from_row(r, existing.get(r.id, set())) for r in rows]


async def load(conn: AsyncConnection, org_id: int, page_id: int, *, lock: bool = False) -> PageRow | None:
    query = select(sp).where(sp.c.id == page_id, sp.c.org_id == org_id)
    if lock and conn.dialect.name != "sqlite":
        query = query.with_for_update()
    rows = (await conn.execute(query)).all()
    pages = await _pages(conn, list(rows))
    return pages[0] if pages else None


async def load_by_slug(conn: AsyncConnection, slug: str) -> PageRow | None:
    rows = (await conn.execute(select(sp).where(sp.c.slug == slug))).all()
    pages = await _pages(conn, list(rows))
    return pages[0] if pages else None


async def load_by_domain(conn: AsyncConnection, domain: str) -> PageRow | None:
    rows = (await conn.execute(select(sp).where(sp.c.custom_domain == domain.lower()))).all()
    pages = await _pages(conn, list(rows))
    return pages[0] if pages else None


async def load_page_list(conn: AsyncConnection, org_id: int, after_id: int | None, limit: int) -> list[PageRow]:
    query = select(sp).where(sp.c.org_id == org_id)
    if after_id is not None:
        query = query.where(sp.c.id > after_id)
    rows = (await conn.execute(query.order_by(sp.c.id).limit(limit))).all()
    return await _pages(conn, list(rows))


async def subscriber_counts(conn: AsyncConnection, page_ids: list[int]) -> dict[int, int]:
    if not page_ids:
        return {}
    rows = await conn.execute(
        select(sps.c.page_id, func.count())
        .where(sps.c.page_id.in_(page_ids), sps.c.confirmed.is_(True))
        .group_by(sps.c.page_id)
    )
    return {page_id: count for page_id, count in rows}


async def org_monitor_ids(conn: AsyncConnection, org_id: int, ids: list[int]) -> set[int]:
    """Which of ``ids`` are monitors of the organisation."""
    if not ids:
        return set()
    rows = await conn.execute(select(t.monitors.c.id).where(t.monitors.c.org_id == org_id, t.monitors.c.id.in_(ids)))
    return {r[0] for r in rows}


def page_url(public_url: str, page: PageRow) -> str:
    """Where people open the page: its custom domain, else /status/{slug}."""
    if page.custom_domain:
        scheme = public_url.split("://", 1)[0] if "://" in public_url else "https"
        return f"{scheme}://{page.custom_domain}/"
    return f"{public_url}/status/{page.slug}"


def to_proto(page: PageRow, public_url: str, subscribers: int) -> status_pages_pb2.StatusPage:
    msg = status_pages_pb2.StatusPage(
        id=page.id,
        name=page.name,
        slug=page.slug,
        published=page.published,
        history_days=page.history_days,
        show_maintenance=page.show_maintenance,
        password_protected=page.locked,
        subscriber_count=subscribers,
        url=page_url(public_url, page),
    )
    if page.description is not None:
        msg.description = page.description
    if page.custom_domain is not None:
        msg.custom_domain = page.custom_domain
    if page.accent_color is not None:
        msg.accent_color = page.accent_color
    for g in page.groups:
        group = msg.groups.add(name=g.name)
        for c in g.components:
            comp = group.components.add(monitor_id=c.monitor_id)
            if c.display_name is not None:
                comp.display_name = c.display_name
    msg.created_at.CopyFrom(clock.to_timestamp(page.created_at))
    msg.updated_at.CopyFrom(clock.to_timestamp(page.updated_at))
    return msg
