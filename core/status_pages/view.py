"""PLACEHOLDER (helper A replaces this file): the public view of a page and its cache."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from observe.v1 import status_pages_pb2 as pb

from core.config import Settings
from core.maintenance.calendar import MaintenanceCalendar
from core.rpc.jsonmap import JsonCodec
from core.status_pages import store
from core.status_pages.store import PageRow
from core.storage.db import Database

_CODEC = JsonCodec()


@dataclass
class PublicView:
    message: pb.GetPublicStatusPageResponse
    json: bytes
    _rendered: dict[object, bytes] = field(default_factory=dict)

    def rendered(self, key: object, render: Callable[[], bytes]) -> bytes:
        out = self._rendered.get(key)
        if out is None:
            out = self._rendered[key] = render()
        return out


class PublicViews:
    def __init__(self, db: Database, *, calendar: MaintenanceCalendar, settings: Settings) -> None:
        self.db = db
        self.calendar = calendar
        self.settings = settings

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def page_by_slug(self, slug: str) -> PageRow | None:
        async with self.db.read() as conn:
            return await store.load_by_slug(conn, slug)

    async def page_by_domain(self, domain: str) -> PageRow | None:
        async with self.db.read() as conn:
            return await store.load_by_domain(conn, domain)

    async def view(self, page: PageRow) -> PublicView:
        import orjson

        msg = pb.GetPublicStatusPageResponse()
        msg.page.name = page.name
        msg.page.slug = page.slug
        msg.status = pb.PUBLIC_PAGE_STATUS_OPERATIONAL
        return PublicView(msg, orjson.dumps(_CODEC.encode(msg)))

    def invalidate_page(self, page_id: int) -> None:
        return None
