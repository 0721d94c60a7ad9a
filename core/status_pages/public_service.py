"""PublicStatusPageService: everything anyone may reach without a token —
the JSON for renderers, the HTML page and its forms, the Atom feed, unlock,
e-mail subscriptions and monitor badges.

A page is found by slug, or by the request's Host on its custom domain; an
unpublished or unknown page is NOT_FOUND. A locked page answers
PASSWORD_REQUIRED (the HTML routes with a password form) unless the call
carries an access token for it (``X-Status-Page-Token`` or the cookie).
The page's view, JSON and HTML come from :class:`PublicViews`' cache.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import parse_qs, quote

from google.api import httpbody_pb2
from observe.v1 import status_pages_pb2 as pb
from observe.v1 import status_pages_pb2_grpc

from core import clock
from core.accounts.passwords import verify_password
from core.errors import ErrorCode, ObserveError, not_found
from core.rpc.context import CallContext
from core.status_pages import feed, html
from core.status_pages.access import ACCESS_COOKIE, ACCESS_TTL, PageTokens, password_fingerprint
from core.status_pages.badges import Badges
from core.status_pages.store import PageRow, page_url
from core.status_pages.subscriptions import Subscriptions
from core.status_pages.view import PublicViews

HTML = "text/html; charset=utf-8"
ATOM = "application/atom+xml; charset=utf-8"
# Open pages may sit in shared caches briefly; locked ones never.
PUBLIC_CACHE = "public, max-age=30"
PRIVATE_CACHE = "private, no-store"
# The pages load nothing, run nothing and post only to this server.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


def _body(content_type: str, data: bytes) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type=content_type, data=data)


def _html(ctx: CallContext, data: bytes) -> httpbody_pb2.HttpBody:
    ctx.response_headers.append(("content-security-policy", CSP))
    return _body(HTML, data)


def _with_page(err: ObserveError, data: bytes) -> ObserveError:
    """``err``, answered to a browser as the page ``data``."""
    err.page = (HTML, data)
    err.headers["Content-Security-Policy"] = CSP
    return err


def accepts_gzip(header: str) -> bool:
    """Accept-Encoding allows gzip (RFC 9110): its own entry decides, else ``*``'s; q=0 refuses."""
    weights: dict[str, float] = {}
    for item in header.lower().split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = (x.strip() for x in param.partition("="))
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if coding:
            weights.setdefault("gzip" if coding == "x-gzip" else coding, q)
    return weights.get("gzip", weights.get("*", 0.0)) > 0


def _encoding_headers(ctx: CallContext, gzipped: bool) -> None:
    ctx.response_headers.append(("vary", "accept-encoding"))
    if gzipped:
        ctx.response_headers.append(("content-encoding", "gzip"))


def _form(body: httpbody_pb2.HttpBody) -> dict[str, str]:
    """The fields of an application/x-www-form-urlencoded body (first of each)."""
    try:
        text = body.data.decode("utf-8")
    except UnicodeDecodeError:
        return {}
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}


class PublicStatusPageService(status_pages_pb2_grpc.PublicStatusPageServiceServicer):
    def __init__(
        self,
        *,
        views: PublicViews,
        tokens: PageTokens,
        subscriptions: Subscriptions,
        badges: Badges,
        public_url: str,
    ) -> None:
        self.views = views
        self.tokens = tokens
        self.subscriptions = subscriptions
        self.badges = badges
        self.public_url = public_url
        self.secure_cookie = public_url.startswith("https://")

    # ---- finding the page ------------------------------------------------------

    async def _find(self, slug: str, domain: str = "", *, web: bool = False, unpublished: bool = False) -> PageRow:
        """The page by slug or custom domain; NOT_FOUND unless published
        (``unpublished``: also an unpublished one, for subscription links,
        which must keep working)."""
        page: PageRow | None = None
        if slug:
            page = await self.views.page_by_slug(slug)
        elif domain:
            page = await self.views.page_by_domain(domain.split(":", 1)[0].lower())
        if page is None or not (page.published or unpublished):
            err = not_found("status page")
            if web:
                _with_page(err, html.render_not_found())
            raise err
        return page

    def _base(self, page: PageRow, slug: str) -> str:
        """The path the page's own links start from: /status/{slug}, or "" on its custom domain."""
        return f"/status/{page.slug}" if slug else ""

    def _require_unlocked(self, page: PageRow, tokens: list[str], *, base: str | None = None) -> None:
        if self.tokens.unlocks(tokens, page.id, page.password_hash):
            return
        err = ObserveError(ErrorCode.ERROR_CODE_PASSWORD_REQUIRED, "this status page is password-protected")
        if base is not None:
            _with_page(err, html.render_password_form(page, base, error=None))
        raise err

    def _cache_headers(self, page: PageRow, ctx: CallContext) -> None:
        ctx.response_headers.append(("cache-control", PRIVATE_CACHE if page.locked else PUBLIC_CACHE))

    def _access_cookie(self, token: str) -> tuple[str, str]:
        secure = "; Secure" if self.secure_cookie else ""
        max_age = int(ACCESS_TTL.total_seconds())
        return ("set-cookie", f"{ACCESS_COOKIE}={token}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Lax{secure}")

    async def _unlock(self, page: PageRow, password: str, cookie: str) -> tuple[str, datetime]:
        """A token unlocking ``page`` and the pages the cookie already unlocks.
        An open page needs no password: any unlocks it (there is nothing to guard)."""
        unlocked = self.tokens.unlocked_pages(cookie)
        if page.password_hash is not None:
            if not await verify_password(page.password_hash, password):
                raise ObserveError(ErrorCode.ERROR_CODE_PASSWORD_INVALID, "wrong password for this status page")
            unlocked.pop(page.id, None)  # re-added last: the newest are kept
            unlocked[page.id] = password_fingerprint(page.password_hash)
        return self.tokens.access_token(unlocked, clock.now())

    # ---- JSON ----------------------------------------------------------------------

    async def GetPublicStatusPage(
        self, request: pb.GetPublicStatusPageRequest, ctx: CallContext
    ) -> pb.GetPublicStatusPageResponse:
        page = await self._find(request.slug, request.domain)
        self._require_unlocked(page, [request.access_token, request.access_cookie])
        view = await self.views.view(page)
        self._cache_headers(page, ctx)
        if ctx.transport != "rest":
            return view.message
        gzipped = accepts_gzip(request.accept_encoding)
        _encoding_headers(ctx, gzipped)
        return view.prepared(gzipped=gzipped)  # the JSON as cached, shared: never changed

    async def GetStatusPageFeed(self, request: pb.GetStatusPageFeedRequest, ctx: CallContext) -> httpbody_pb2.HttpBody:
        page = await self._find(request.slug, request.host)
        self._require_unlocked(page, [request.access_token, request.access_cookie])
        view = await self.views.view(page)
        url = page_url(self.public_url, page) if not request.slug else f"{self.public_url}/status/{page.slug}"
        feed_url = f"{url.rstrip('/')}/feed.xml"
        gzipped = accepts_gzip(request.accept_encoding)
        render = lambda: feed.render_feed(view.message, page, url, feed_url)  # noqa: E731
        body = view.body(("feed", feed_url), ATOM, render, gzipped=gzipped)
        self._cache_headers(page, ctx)  # only once the body is made: a failure is no cacheable "gzip" reply
        _encoding_headers(ctx, gzipped)
        return body

    async def UnlockStatusPage(
        self, request: pb.UnlockStatusPageRequest, ctx: CallContext
    ) -> pb.UnlockStatusPageResponse:
        page = await self._find(request.slug)
        token, expires = await self._unlock(page, request.credentials.password, request.access_cookie)
        ctx.response_headers.append(self._access_cookie(token))
        reply = pb.UnlockStatusPageResponse(access_token=token)
        reply.expires_at.CopyFrom(clock.to_timestamp(expires))
        return reply

    async def SubscribeToStatusPage(
        self, request: pb.SubscribeToStatusPageRequest, ctx: CallContext
    ) -> pb.SubscribeToStatusPageResponse:
        page = await self._find(request.slug)
        self._require_unlocked(page, [request.access_token, request.access_cookie])
        await self.subscriptions.subscribe(page, request.subscription.email)
        return pb.SubscribeToStatusPageResponse(pending=True)

    async def ConfirmStatusPageSubscription(
        self, request: pb.ConfirmStatusPageSubscriptionRequest, ctx: CallContext
    ) -> pb.ConfirmStatusPageSubscriptionResponse:
        page = await self._find(request.slug, unpublished=True)
        await self.subscriptions.confirm(page, request.token)
        return pb.ConfirmStatusPageSubscriptionResponse(confirmed=True)

    async def UnsubscribeFromStatusPage(
        self, request: pb.UnsubscribeFromStatusPageRequest, ctx: CallContext
    ) -> pb.UnsubscribeFromStatusPageResponse:
        await self.subscriptions.unsubscribe(None, request.token)
        return pb.UnsubscribeFromStatusPageResponse(unsubscribed=True)

    # ---- HTML --------------------------------------------------------------------

    async def GetStatusPageHtml(self, request: pb.GetStatusPageHtmlRequest, ctx: CallContext) -> httpbody_pb2.HttpBody:
        page = await self._find(request.slug, request.host, web=True)
        base = self._base(page, request.slug)
        self._require_unlocked(page, [request.access_cookie], base=base)
        view = await self.views.view(page)
        gzipped = accepts_gzip(request.accept_encoding)
        render = lambda: html.render_page(view.message, page, base)  # noqa: E731
        body = view.body(("html", base), HTML, render, gzipped=gzipped)
        self._cache_headers(page, ctx)  # only once the body is made: a failure is no cacheable "gzip" reply
        _encoding_headers(ctx, gzipped)
        ctx.response_headers.append(("content-security-policy", CSP))
        return body

    async def SubmitStatusPageUnlockForm(
        self, request: pb.StatusPageFormRequest, ctx: CallContext
    ) -> httpbody_pb2.HttpBody:
        page = await self._find(request.slug, web=True)
        base = self._base(page, request.slug)
        try:
            token, _ = await self._unlock(page, _form(request.form).get("password", ""), request.access_cookie)
        except ObserveError as err:
            _with_page(err, html.render_password_form(page, base, error="That password is not right."))
            raise
        ctx.response_headers.append(self._access_cookie(token))
        ctx.response_headers.append(("location", base or "/"))
        return _html(ctx, html.render_notice(page, base, "Unlocked", "The page is unlocked."))

    async def SubmitStatusPageSubscribeForm(
        self, request: pb.StatusPageFormRequest, ctx: CallContext
    ) -> httpbody_pb2.HttpBody:
        page = await self._find(request.slug, web=True)
        base = self._base(page, request.slug)
        self._require_unlocked(page, [request.access_cookie], base=base)
        email = _form(request.form).get("email", "").strip()
        if not self.subscriptions.plausible_email(email):
            err = ObserveError(ErrorCode.ERROR_CODE_VALIDATION_FAILED, "enter a valid e-mail address")
            _with_page(err, html.render_notice(page, base, "Not subscribed", "Enter a valid e-mail address."))
            raise err
        await self.subscriptions.subscribe(page, email)
        return _html(
            ctx,
            html.render_notice(
                page, base, "Check your inbox", "If the address can subscribe, a confirmation link is on its way."
            ),
        )

    async def GetStatusPageConfirmHtml(
        self, request: pb.StatusPageTokenRequest, ctx: CallContext
    ) -> httpbody_pb2.HttpBody:
        if self.tokens.confirmed_subscriber(request.token) is None:  # no page's name for a made-up link
            raise _with_page(not_found("subscription"), html.render_not_found())
        page = await self._find(request.slug, web=True, unpublished=True)
        base = self._base(page, request.slug)
        action = f"/status/{quote(page.slug)}/subscribe/confirm?token={quote(request.token, safe='')}"
        return _html(ctx, html.render_confirm_form(page, base, action))

    async def SubmitStatusPageConfirmForm(
        self, request: pb.StatusPageFormRequest, ctx: CallContext
    ) -> httpbody_pb2.HttpBody:
        page = await self._find(request.slug, web=True, unpublished=True)
        base = self._base(page, request.slug)
        try:
            await self.subscriptions.confirm(page, request.token)
        except ObserveError as err:
            raise _with_page(
                err, html.render_notice(page, base, "Link not valid", "This confirmation link is not valid.")
            ) from None
        text = "You will get an e-mail when an incident starts, changes or ends, and when maintenance is planned."
        return _html(ctx, html.render_notice(page, base, "Subscription confirmed", text))

    async def _page_of_link(self, slug: str, token: str) -> PageRow | None:
        """The page an unsubscribe link is for, to show its name: the page at
        ``slug`` when the subscription is its own, else None (the slug was
        renamed, or taken since by another page; the link works all the same,
        the token alone names the subscription). NOT_FOUND for a forged link."""
        page_id = await self.subscriptions.page_of_link(token)
        page = await self.views.page_by_slug(slug)
        return page if page is not None and page.id == page_id else None

    async def GetStatusPageUnsubscribeHtml(
        self, request: pb.StatusPageTokenRequest, ctx: CallContext
    ) -> httpbody_pb2.HttpBody:
        try:
            page = await self._page_of_link(request.slug, request.token)
        except ObserveError as err:
            raise _with_page(err, html.render_not_found()) from None
        base = self._base(page, request.slug) if page else ""
        action = f"/status/{quote(request.slug)}/unsubscribe?token={quote(request.token, safe='')}"
        return _html(ctx, html.render_unsubscribe_form(page, base, action))

    async def SubmitStatusPageUnsubscribeForm(
        self, request: pb.StatusPageFormRequest, ctx: CallContext
    ) -> httpbody_pb2.HttpBody:
        try:
            page = await self._page_of_link(request.slug, request.token)
            await self.subscriptions.unsubscribe(None, request.token)
        except ObserveError as err:
            raise _with_page(
                err, html.render_notice(None, "", "Link not valid", "This unsubscribe link is not valid.")
            ) from None
        base = self._base(page, request.slug) if page else ""
        text = "You will get no more e-mail from this page."
        return _html(ctx, html.render_notice(page, base, "Unsubscribed", text))

    # ---- badge -------------------------------------------------------------------

    async def GetMonitorBadge(self, request: pb.GetMonitorBadgeRequest, ctx: CallContext) -> httpbody_pb2.HttpBody:
        svg = await self.badges.render(
            request.id,
            metric=request.metric or "status",
            period=request.period or "30d",
            label=request.label if request.HasField("label") else None,
            style=request.style or "flat",
        )
        if svg is None:
            raise not_found("badge")
        ctx.response_headers.append(("cache-control", "public, max-age=60"))
        return _body("image/svg+xml; charset=utf-8", svg)
