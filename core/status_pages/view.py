"""The public view of a status page and its cache.

A page with 50 components is read by crowds, so its view (the message, its
JSON, and the HTML and feed rendered from it) is built once and served from
memory: a hit is a dict lookup and a clock read. Page lookups by slug and
by custom domain are cached the same way.

An entry goes when
- the CRUD service calls :meth:`PublicViews.invalidate_page` (at once, in
  this process);
- the watcher, which looks about once a second for new status events,
  incident changes, maintenance, page or monitor edits written by any
  process (core.status_pages.changes), sees one that concerns it;
- it reaches ``MAX_AGE`` (durations count up, rollups fill), a maintenance
  occurrence of its components starts or ends, or the UTC day turns.

Concurrent misses for one page build it once (single flight). A build that
was under way when an invalidation came is handed to its waiters but not
kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from google.api import httpbody_pb2
from observe.v1 import status_pages_pb2 as pb

from core.config import Settings
from core.maintenance.calendar import MaintenanceCalendar
from core.rpc.jsonmap import JsonCodec
from core.status_pages import projection, store
from core.status_pages.changes import Changes, ChangeWatch
from core.status_pages.store import PageRow
from core.storage import faults
from core.storage.db import Database

log = logging.getLogger(__name__)

MAX_AGE = 60.0  # seconds a view is kept at most
LOOKUP_AGE = 60.0  # seconds a page lookup (also "no such page") is kept at most
MAX_LOOKUPS = 10_000  # cached lookups (unknown slugs included) before they are dropped
POLL_SEC = 1.0  # the watcher's period
GZIP_LEVEL = 6  # once per view: compression time does not matter, size does

_CODEC = JsonCodec()


@dataclass
class PublicView:
    """A page's public view: the message, its REST JSON (encoded once, as the
    transcoder would), and renderings made from it (:meth:`rendered`)."""

    message: pb.GetPublicStatusPageResponse
    json: bytes
    _rendered: dict[object, bytes] = field(default_factory=dict)
    _prepared: dict[bool, pb.GetPublicStatusPageResponse] = field(default_factory=dict)
    _bodies: dict[object, httpbody_pb2.HttpBody] = field(default_factory=dict)

    def prepared(self, *, gzipped: bool = False) -> pb.GetPublicStatusPageResponse:
        """The REST reply: ``json`` (gzip-compressed when asked) as the prepared body, built
        once per encoding: callers only read it. (Built once, not per request:
        ``Response(prepared=HttpBody(...))`` costs some 200 us for a 400 KB body under upb.)"""
        reply = self._prepared.get(gzipped)
        if reply is None:
            reply = self._prepared[gzipped] = pb.GetPublicStatusPageResponse()
            reply.prepared.CopyFrom(self.body("json", "application/json", lambda: self.json, gzipped=gzipped))
        return reply

    def rendered(self, key: object, render: Callable[[], bytes]) -> bytes:
        """``render()``'s result, made once per ``key`` for this view."""
        out = self._rendered.get(key)
        if out is None:
            out = self._rendered[key] = render()
        return out

    def body(
        self, key: object, content_type: str, render: Callable[[], bytes], *, gzipped: bool = False
    ) -> httpbody_pb2.HttpBody:
        """``rendered(key, render)`` as an HttpBody reply, built once: callers only read it.
        (Building an HttpBody copies the bytes, some 100 us for a 400 KB page under load.)
        ``gzipped``: the same, gzip-compressed once (a 50-component page shrinks 40–80 times)."""
        body_key = ("gzip", key) if gzipped else key
        out = self._bodies.get(body_key)
        if out is None:
            data = self.rendered(key, render)
            if gzipped:
                data = self.rendered(body_key, lambda: gzip.compress(data, GZIP_LEVEL, mtime=0))
            out = self._bodies[body_key] = httpbody_pb2.HttpBody(content_type=content_type, data=data)
        return out


@dataclass(frozen=True, slots=True)
class _Entry:
    view: PublicView
    page_updated_at: datetime  # the page settings it was built from
    org_id: int
    monitor_ids: frozenset[int]
    expires: float  # time.monotonic()


class PublicViews:
    def __init__(
        self,
        db: Database,
        *,
        calendar: MaintenanceCalendar,
        settings: Settings,
        max_age: float = MAX_AGE,
        poll_sec: float = POLL_SEC,
    ) -> None:
        self.db = db
        self.calendar = calendar
        self.settings = settings
        self.max_age = max_age
        self.poll_sec = poll_sec
        self._views: dict[int, _Entry] = {}
        self._building: dict[int, asyncio.Future[PublicView]] = {}
        self._slugs: dict[str, tuple[PageRow | None, float]] = {}
        self._domains: dict[str, tuple[PageRow | None, float]] = {}
        self._epoch = 0  # moves on every invalidation; a build from an older epoch is not kept
        self._watch = ChangeWatch()
        self._task: asyncio.Task[None] | None = None

    # ---- the watcher -------------------------------------------------------------

    async def start(self) -> None:
        """Starts the watcher (its first round only takes the marks)."""
        if self._task is None:
            with contextlib.suppress(Exception):
                await self._round()
            self._task = asyncio.create_task(self._run(), name="status-page-views")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_sec)
            try:
                await self._round()
            except Exception as exc:  # the database away for a moment: entries still age out
                faults.log_round_failure(log, "status page change watch failed", exc)

    async def _round(self) -> None:
        async with self.db.read() as conn:
            changes = await self._watch.poll(conn)
        if changes:
            self._forget(changes)

    def _forget(self, changes: Changes) -> None:
        self._epoch += 1
        if changes.everything:
            self._views.clear()
            self._building.clear()
            self._slugs.clear()
            self._domains.clear()
            return
        for page_id, entry in list(self._views.items()):
            if entry.org_id in changes.orgs or not entry.monitor_ids.isdisjoint(changes.monitors):
                del self._views[page_id]
        self._building.clear()

    def invalidate_page(self, page_id: int) -> None:
        """Forgets the page's view and every page lookup (its slug or domain may have changed)."""
        self._epoch += 1
        self._views.pop(page_id, None)
        self._building.pop(page_id, None)
        self._slugs.clear()
        self._domains.clear()

    # ---- page lookups ------------------------------------------------------------

    async def page_by_slug(self, slug: str) -> PageRow | None:
        return await self._lookup(self._slugs, slug, store.load_by_slug)

    async def page_by_domain(self, domain: str) -> PageRow | None:
        return await self._lookup(self._domains, domain.lower(), store.load_by_domain)

    async def _lookup(
        self,
        cache: dict[str, tuple[PageRow | None, float]],
        key: str,
        load: Callable[..., Awaitable[PageRow | None]],
    ) -> PageRow | None:
        hit = cache.get(key)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        epoch = self._epoch
        async with self.db.read() as conn:
            page = await load(conn, key)
        if epoch == self._epoch:
            if len(cache) >= MAX_LOOKUPS:
                cache.clear()
            cache[key] = (page, time.monotonic() + LOOKUP_AGE)
        return page

    # ---- views -------------------------------------------------------------------

    async def view(self, page: PageRow) -> PublicView:
        """The page's public view, from the cache when it is there and current."""
        entry = self._views.get(page.id)
        if entry is not None and entry.expires > time.monotonic() and entry.page_updated_at == page.updated_at:
            return entry.view
        building = self._building.get(page.id)
        if building is None:
            building = asyncio.ensure_future(self._build(page, self._epoch))
            self._building[page.id] = building
            building.add_done_callback(lambda f: self._done(page.id, f))
        return await asyncio.shield(building)

    def _done(self, page_id: int, future: asyncio.Future[PublicView]) -> None:
        if self._building.get(page_id) is future:
            del self._building[page_id]
        if not future.cancelled():
            future.exception()  # retrieved: a failed build is the waiters' error, not the loop's

    async def _build(self, page: PageRow, epoch: int) -> PublicView:
        async with self.db.read() as conn:
            built = await projection.build(conn, page, self.calendar)
        view = PublicView(built.message, orjson.dumps(_CODEC.encode(built.message)))
        if epoch == self._epoch:
            until = (built.stale_at - datetime.now(UTC)).total_seconds()
            expires = time.monotonic() + max(0.0, min(self.max_age, until))
            self._views[page.id] = _Entry(view, page.updated_at, page.org_id, built.monitor_ids, expires)
        return view
