"""StatusPageService: the organisation's status pages (CRUD, password,
subscribers).

The proto declares the field rules; a patch is re-checked here as the
merged page. What needs the database stays here: that slug and custom
domain are free (CONFLICT) and that every component is a monitor of the
caller's organisation (another's is NOT_FOUND). Each change tells the public
views, so the public page shows it at once.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from observe.v1 import status_pages_pb2 as pb
from observe.v1 import status_pages_pb2_grpc
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from core import clock
from core.accounts.passwords import hash_password
from core.errors import ErrorCode, ObserveError, Violations, not_found
from core.rpc import paging, patches
from core.rpc.context import CallContext
from core.rpc.validator import ASCII_SPACES, VALIDATOR
from core.status_pages import store
from core.status_pages.store import PageRow
from core.status_pages.tables import status_page_monitors as spm
from core.status_pages.tables import status_page_subscribers as sps
from core.status_pages.tables import status_pages as sp
from core.status_pages.view import PublicViews
from core.storage.db import Database

CURSOR_KIND = "p"
SUBSCRIBER_CURSOR_KIND = "s"
_COLUMNS = {
    "name": "name",
    "slug": "slug",
    "description": "description",
    "customDomain": "custom_domain",
    "published": "published",
    "historyDays": "history_days",
    "showMaintenance": "show_maintenance",
    "accentColor": "accent_color",
}
_DEFAULTS: dict[str, Any] = {"published": True, "historyDays": store.DEFAULT_HISTORY_DAYS, "showMaintenance": True}


def _conflict(what: str) -> ObserveError:
    return ObserveError(ErrorCode.ERROR_CODE_CONFLICT, f"this {what} is taken by another status page")


def _as_input(page: PageRow) -> pb.StatusPageInput:
    """The page's settings as an input message (what audit diffs compare)."""
    msg = store.to_proto(page, "", 0)
    out = pb.StatusPageInput(
        name=msg.name,
        slug=msg.slug,
        published=msg.published,
        history_days=msg.history_days,
        show_maintenance=msg.show_maintenance,
        groups=msg.groups,
    )
    for name in ("description", "custom_domain", "accent_color"):
        if msg.HasField(name):
            setattr(out, name, getattr(msg, name))
    return out


class StatusPageService(status_pages_pb2_grpc.StatusPageServiceServicer):
    def __init__(self, *, db: Database, views: PublicViews, public_url: str) -> None:
        self.db = db
        self.views = views
        self.public_url = public_url

    # ---- helpers -------------------------------------------------------------

    async def _page(self, conn: AsyncConnection, org_id: int, page_id: int, *, lock: bool = False) -> PageRow:
        page = await store.load(conn, org_id, page_id, lock=lock)
        if page is None:
            raise not_found("status page")
        return page

    async def _projection(self, conn: AsyncConnection, page: PageRow) -> pb.StatusPage:
        counts = await store.subscriber_counts(conn, [page.id])
        return store.to_proto(page, self.public_url, counts.get(page.id, 0))

    def _values(self, msg: pb.StatusPageInput, mask: list[str] | None) -> tuple[dict[str, Any], bool]:
        """Column values the body gives (None: cleared) and whether it gives groups."""
        values: dict[str, Any] = {}
        groups_given = False
        for fd, given in patches.given_fields(msg, mask):
            if fd.name == "groups":
                groups_given = True
                continue
            column = _COLUMNS[fd.json_name]
            value = getattr(msg, fd.name) if given else _DEFAULTS.get(fd.json_name)
            if isinstance(value, str) and fd.name == "name":
                value = value.strip(ASCII_SPACES)
            if isinstance(value, str) and fd.name == "custom_domain":
                value = value.lower().rstrip(".")
            values[column] = value
        return values, groups_given

    def _check_domain(self, values: dict[str, Any], v: Violations) -> None:
        """A custom domain is not this server's own host: its / and /feed.xml
        would become one organisation's page for everybody."""
        own = urlsplit(self.public_url).hostname
        if values.get("custom_domain") and values["custom_domain"] == own:
            v.add("customDomain", "invalid_string", "This is the server's own host name: use one of your own")

    async def _check_unique(self, conn: AsyncConnection, values: dict[str, Any], page_id: int | None) -> None:
        for column, what in (("slug", "slug"), ("custom_domain", "custom domain")):
            value = values.get(column)
            if value is None:
                continue
            query = select(sp.c.id).where(sp.c[column] == value)
            if page_id is not None:
                query = query.where(sp.c.id != page_id)
            if (await conn.execute(query)).first() is not None:
                raise _conflict(what)

    async def _check_components(self, conn: AsyncConnection, org_id: int, groups: Any, v: Violations) -> list[int]:
        """The monitor ids of ``groups``, each a monitor of ``org_id`` (else
        NOT_FOUND, as for any id of another organisation)."""
        ids = [c.monitor_id for g in groups for c in g.components]
        found = await store.org_monitor_ids(conn, org_id, ids)
        for gi, g in enumerate(groups):
            for ci, c in enumerate(g.components):
                if c.monitor_id not in found:
                    raise not_found(f"monitor {c.monitor_id} (groups[{gi}].components[{ci}].monitorId)")
        if sum(len(g.components) for g in groups) > 500:
            v.add("groups", "too_big", "A page shows at most 500 components")
        return list(dict.fromkeys(ids))

    async def _write_monitors(self, conn: AsyncConnection, page_id: int, ids: list[int]) -> None:
        await conn.execute(delete(spm).where(spm.c.page_id == page_id))
        if ids:
            await conn.execute(insert(spm), [{"page_id": page_id, "monitor_id": m} for m in ids])

    # ---- RPCs ------------------------------------------------------------------

    async def ListStatusPages(self, request: pb.ListStatusPagesRequest, ctx: CallContext) -> pb.ListStatusPagesResponse:
        principal = ctx.require_principal()
        v = Violations()
        limit = paging.page_limit(v, request.limit if request.HasField("limit") else None)
        after_id = paging.cursor_in(v, request.cursor, CURSOR_KIND) if request.cursor else None
        v.raise_if_any()
        async with self.db.read() as conn:
            pages = await store.load_page_list(conn, principal.org_id, after_id, limit + 1)
            shown, more = pages[:limit], len(pages) > limit
            counts = await store.subscriber_counts(conn, [p.id for p in shown])
        return pb.ListStatusPagesResponse(
            pages=[store.to_proto(p, self.public_url, counts.get(p.id, 0)) for p in shown],
            next_cursor=paging.cursor_out(shown[-1].id, CURSOR_KIND) if more and shown else "",
        )

    async def CreateStatusPage(
        self, request: pb.CreateStatusPageRequest, ctx: CallContext
    ) -> pb.CreateStatusPageResponse:
        principal = ctx.require_principal()
        values, _ = self._values(request.page, None)
        for key, default in _DEFAULTS.items():
            if values.get(_COLUMNS[key]) is None:
                values[_COLUMNS[key]] = default
        v = Violations()
        self._check_domain(values, v)
        v.raise_if_any()
        # To the microsecond: every change moves the maximum the public views'
        # change watchers read (core.status_pages.changes), even two in one second.
        now = clock.precise_now()
        try:
            async with self.db.write() as conn:
                await self._check_unique(conn, values, None)
                ids = await self._check_components(conn, principal.org_id, request.page.groups, v)
                v.raise_if_any()
                page_id = (
                    await conn.execute(
                        insert(sp)
                        .values(
                            org_id=principal.org_id,
                            groups=store.groups_to_json(request.page.groups),
                            created_at=now,
                            updated_at=now,
                            **values,
                        )
                        .returning(sp.c.id)
                    )
                ).scalar_one()
                await self._write_monitors(conn, page_id, ids)
                page = await self._page(conn, principal.org_id, page_id)
                projection = await self._projection(conn, page)
        except IntegrityError as exc:  # a concurrent create took the slug or domain
            raise _conflict("slug or custom domain") from exc
        self.views.invalidate_page(page_id)
        ctx.audit.resource = f"status-page:{page_id}"
        ctx.audit.after = _as_input(page)
        return pb.CreateStatusPageResponse(page=projection)

    async def GetStatusPage(self, request: pb.GetStatusPageRequest, ctx: CallContext) -> pb.GetStatusPageResponse:
        principal = ctx.require_principal()
        async with self.db.read() as conn:
            page = await self._page(conn, principal.org_id, request.id)
            return pb.GetStatusPageResponse(page=await self._projection(conn, page))

    async def UpdateStatusPage(
        self, request: pb.UpdateStatusPageRequest, ctx: CallContext
    ) -> pb.UpdateStatusPageResponse:
        principal = ctx.require_principal()
        v = Violations()
        mask = list(request.update_mask.paths) if request.HasField("update_mask") else None
        for bad in patches.unknown_mask_paths(pb.StatusPageInput.DESCRIPTOR, mask or []):
            v.add("updateMask", "invalid_string", f"Unknown field in update mask: '{bad}'")
        v.raise_if_any()
        values, groups_given = self._values(request.page, mask)
        try:
            async with self.db.write() as conn:
                before = await self._page(conn, principal.org_id, request.id, lock=True)
                merged = _as_input(before)
                for column, value in values.items():  # cleared fields: the proto rules see them gone
                    fd = next(f for f in pb.StatusPageInput.DESCRIPTOR.fields if f.name == column)
                    if value is None:
                        merged.ClearField(fd.name)  # type: ignore[arg-type]
                    else:
                        setattr(merged, fd.name, value)
                if groups_given:
                    del merged.groups[:]
                    merged.groups.extend(request.page.groups)
                v.items.extend(VALIDATOR.violations(merged, patch=False))
                self._check_domain(values, v)
                v.raise_if_any()
                await self._check_unique(conn, values, before.id)
                changes: dict[str, Any] = dict(values)
                if groups_given:
                    ids = await self._check_components(conn, principal.org_id, request.page.groups, v)
                    v.raise_if_any()
                    changes["groups"] = store.groups_to_json(request.page.groups)
                    await self._write_monitors(conn, before.id, ids)
                await conn.execute(
                    update(sp).where(sp.c.id == before.id).values(updated_at=clock.precise_now(), **changes)
                )
                page = await self._page(conn, principal.org_id, before.id)
                projection = await self._projection(conn, page)
        except IntegrityError as exc:
            raise _conflict("slug or custom domain") from exc
        self.views.invalidate_page(before.id)
        ctx.audit.resource = f"status-page:{before.id}"
        ctx.audit.before, ctx.audit.after = _as_input(before), _as_input(page)
        return pb.UpdateStatusPageResponse(page=projection)

    async def DeleteStatusPage(
        self, request: pb.DeleteStatusPageRequest, ctx: CallContext
    ) -> pb.DeleteStatusPageResponse:
        principal = ctx.require_principal()
        async with self.db.write() as conn:
            page = await self._page(conn, principal.org_id, request.id, lock=True)
            await conn.execute(delete(sp).where(sp.c.id == page.id))
        self.views.invalidate_page(page.id)
        ctx.audit.resource = f"status-page:{page.id}"
        ctx.audit.before = _as_input(page)
        return pb.DeleteStatusPageResponse()

    async def SetStatusPagePassword(
        self, request: pb.SetStatusPagePasswordRequest, ctx: CallContext
    ) -> pb.SetStatusPagePasswordResponse:
        principal = ctx.require_principal()
        password = request.password if request.HasField("password") else ""
        hashed = await hash_password(password) if password else None
        async with self.db.write() as conn:
            page = await self._page(conn, principal.org_id, request.id, lock=True)
            await conn.execute(
                update(sp).where(sp.c.id == page.id).values(password_hash=hashed, updated_at=clock.precise_now())
            )
            page = await self._page(conn, principal.org_id, page.id)
            projection = await self._projection(conn, page)
        self.views.invalidate_page(page.id)
        ctx.audit.resource = f"status-page:{page.id}"
        return pb.SetStatusPagePasswordResponse(page=projection)

    async def ListStatusPageSubscribers(
        self, request: pb.ListStatusPageSubscribersRequest, ctx: CallContext
    ) -> pb.ListStatusPageSubscribersResponse:
        principal = ctx.require_principal()
        v = Violations()
        limit = paging.page_limit(v, request.limit if request.HasField("limit") else None)
        after_id = paging.cursor_in(v, request.cursor, SUBSCRIBER_CURSOR_KIND) if request.cursor else None
        v.raise_if_any()
        async with self.db.read() as conn:
            page = await self._page(conn, principal.org_id, request.id)
            query = select(sps).where(sps.c.page_id == page.id)
            if after_id is not None:
                query = query.where(sps.c.id > after_id)
            rows = (await conn.execute(query.order_by(sps.c.id).limit(limit + 1))).all()
        shown, more = rows[:limit], len(rows) > limit
        out = pb.ListStatusPageSubscribersResponse(
            next_cursor=paging.cursor_out(shown[-1].id, SUBSCRIBER_CURSOR_KIND) if more and shown else ""
        )
        for row in shown:
            sub = out.subscribers.add(id=row.id, email=row.email, confirmed=bool(row.confirmed))
            sub.created_at.CopyFrom(clock.to_timestamp(row.created_at))
        return out

    async def DeleteStatusPageSubscriber(
        self, request: pb.DeleteStatusPageSubscriberRequest, ctx: CallContext
    ) -> pb.DeleteStatusPageSubscriberResponse:
        principal = ctx.require_principal()
        async with self.db.write() as conn:
            page = await self._page(conn, principal.org_id, request.id)
            deleted = await conn.execute(
                delete(sps).where(sps.c.id == request.subscriber_id, sps.c.page_id == page.id).returning(sps.c.id)
            )
            if deleted.first() is None:
                raise not_found("subscriber")
        self.views.invalidate_page(page.id)
        ctx.audit.resource = f"status-page:{page.id}:subscriber:{request.subscriber_id}"
        return pb.DeleteStatusPageSubscriberResponse()
