"""Signing in with a provider, signing up with one, and linking and unlinking
providers (CONTRACT.md "OAuth").

A callback signs in the user linked to the provider account. An account no
one linked signs up a new user (with an organisation, or into the invite's)
when the provider verified its e-mail and no user has that e-mail: a user who
has must sign in with the password and link the provider from /me/oauth, or
whoever controls a provider account with that address would take theirs
over. Sessions are the password login's (core.accounts); a user made here
has no password until they set one with forgot-password.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from google.api import httpbody_pb2
from observe.v1 import oauth_pb2, oauth_pb2_grpc
from sqlalchemy import ColumnElement, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from core import clock
from core.accounts.plans import PlanBook
from core.accounts.service import accept_invite, insert_account, new_session, normalize_email, session_cookie
from core.config import Settings
from core.errors import ErrorCode, ObserveError, not_found
from core.oauth import flow as flows
from core.oauth.flow import Flow
from core.oauth.github import GitHubProvider
from core.oauth.oidc import OpenIdProvider
from core.oauth.provider import HTTP_TIMEOUT, Identity, Provider, failed
from core.oauth.tables import oauth_identities as oi
from core.oauth.tables import oauth_used_states
from core.rpc.auth import Authenticator
from core.rpc.context import CallContext
from core.storage import tables as t
from core.storage.db import Database
from core.storage.sealing import Sealer

PROVIDERS = ("google", "github")
SUBJECT_MAX, EMAIL_MAX = 255, 320  # the columns' lengths
REDIRECT_MAX = 1000  # the proto's max_len: the flow cookie stays far below the 4096 bytes browsers keep


def safe_path(path: str) -> str:
    """``path`` when it is a path on this server in printable ASCII (what a
    Location header carries as is) and at most REDIRECT_MAX long, else "/":
    the proto's pattern refuses the rest already; this keeps a redirect from
    ever leaving the site, or breaking the answer, whatever reached it."""
    if len(path) > REDIRECT_MAX or not all("!" <= c <= "~" for c in path):
        return "/"
    parts = urlsplit(path)
    if not path.startswith("/") or path.startswith("//") or "\\" in path or parts.scheme or parts.netloc:
        return "/"
    return path


def _client() -> httpx.AsyncClient:
    """A client for one flow's calls to its provider: sign-ins are rare, and
    a client per flow leaves nothing open to close at shutdown."""
    return httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False)


def _redirect(ctx: CallContext, url: str) -> httpbody_pb2.HttpBody:
    """The 302's headers (the route's success status) and its empty body."""
    ctx.response_headers.append(("location", url))
    ctx.response_headers.append(("cache-control", "no-store"))
    return httpbody_pb2.HttpBody(content_type="text/plain; charset=utf-8")


def _state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


class OAuthService(oauth_pb2_grpc.OAuthServiceServicer):
    def __init__(
        self,
        *,
        db: Database,
        settings: Settings,
        sealer: Sealer,
        plans: PlanBook,
    ) -> None:
        self.db = db
        self.authenticator = Authenticator(db=db)
        self.sealer = sealer
        self.plans = plans
        self.public_url = settings.public_url
        self.session_ttl_days = settings.session_ttl_days
        self.secure = settings.public_url.startswith("https://")
        self.providers: dict[str, Provider] = {}
        if settings.oauth_google.configured:
            self.providers["google"] = OpenIdProvider(settings.oauth_google)
        if settings.oauth_github.configured:
            self.providers["github"] = GitHubProvider(settings.oauth_github)

    # ---- sign-in and link flows ---------------------------------------------------

    async def StartOAuthSignIn(
        self, request: oauth_pb2.StartOAuthSignInRequest, ctx: CallContext
    ) -> httpbody_pb2.HttpBody:
        provider = self._provider(request.provider)
        flow = Flow.start(provider.name, redirect=safe_path(request.redirect or "/"), invite=request.invite)
        return await self._begin(provider, flow, ctx)

    async def StartOAuthLink(self, request: oauth_pb2.StartOAuthLinkRequest, ctx: CallContext) -> httpbody_pb2.HttpBody:
        principal = ctx.require_principal()
        provider = self._provider(request.provider)
        if principal.token_kind != "session":
            # The callback links to the browser's signed-in session only: a token (and
            # whoever holds one) cannot add a way to sign in as its user.
            raise ObserveError(
                ErrorCode.ERROR_CODE_PAT_SCOPE_INSUFFICIENT,
                f"linking {provider.label} needs the browser's session: sign in there, then start again; "
                "an API token cannot link a sign-in provider",
            )
        flow = Flow.start(provider.name, redirect=safe_path(request.redirect or "/"), link_user_id=principal.user_id)
        return await self._begin(provider, flow, ctx)

    async def FinishOAuth(self, request: oauth_pb2.FinishOAuthRequest, ctx: CallContext) -> httpbody_pb2.HttpBody:
        provider = self._provider(request.provider)
        # The flow cookie works once, whatever happens now.
        ctx.response_headers.append(flows.clear_cookie(secure=self.secure))
        if request.error:
            detail = f": {request.error_description[:200]}" if request.error_description else ""
            raise failed(f"{provider.label} did not sign you in ({request.error[:100]}{detail})")
        flow = flows.unseal(self.sealer, request.flow_cookie)
        if flow is None:
            raise failed(
                "no sign-in was started in this browser, or it took longer than "
                f"{flows.TTL_SECONDS // 60} minutes; start again"
            )
        if not flow.matches(provider.name, request.state):
            raise failed("the state does not match the sign-in this browser started; start again")
        if not request.code:
            raise failed(f"{provider.label} sent no code")
        async with self.db.read() as conn:
            used = (
                await conn.execute(
                    select(oauth_used_states.c.state_hash).where(
                        oauth_used_states.c.state_hash == _state_hash(flow.state)
                    )
                )
            ).first()
        if used is not None:  # checked before the provider is asked: a replay costs it nothing
            raise failed("this sign-in was already used; start again")
        async with _client() as http:
            identity = await provider.identity(
                http, code=request.code, redirect_uri=self._redirect_uri(provider.name), flow=flow, issuer=request.iss
            )
        if len(identity.subject) > SUBJECT_MAX or len(identity.email) > EMAIL_MAX:
            raise failed(f"{provider.label}'s account id or e-mail address is longer than this server keeps")
        if flow.link_user_id is not None:
            await self._require_session_of(flow.link_user_id, ctx)
        token = ""
        async with self.db.write() as conn:
            await self._spend(conn, flow)
            # Another callback (a second tab) may insert the same user, e-mail or link
            # between our look and our insert: its unique key stops ours, and a second
            # look sees what it made (PostgreSQL reads what committed since).
            for attempt in range(2):
                try:
                    async with conn.begin_nested():
                        if flow.link_user_id is not None:
                            await self._link(conn, flow.link_user_id, provider, identity, ctx)
                        else:
                            user_id, org_id = await self._sign_in(conn, provider, identity, flow, ctx)
                    break
                except IntegrityError:
                    if attempt:
                        raise failed(
                            f"this {provider.label} account was signed in or linked elsewhere at the same time; "
                            "start again"
                        ) from None
            if flow.link_user_id is None:
                token, _ = await new_session(conn, user_id, org_id, ttl_days=self.session_ttl_days)
        if token:
            ctx.response_headers.append(session_cookie(token, self.session_ttl_days * 86400, secure=self.secure))
        return _redirect(ctx, self.public_url + safe_path(flow.redirect))

    # ---- the caller's links -------------------------------------------------------

    async def ListOAuthProviders(
        self, request: oauth_pb2.ListOAuthProvidersRequest, ctx: CallContext
    ) -> oauth_pb2.ListOAuthProvidersResponse:
        principal = ctx.require_principal()
        async with self.db.read() as conn:
            rows = (await conn.execute(select(oi).where(oi.c.user_id == principal.user_id))).all()
        linked = {row.provider: row for row in rows}
        return oauth_pb2.ListOAuthProvidersResponse(
            providers=[
                _provider_message(name, linked.get(name), configured=name in self.providers) for name in PROVIDERS
            ]
        )

    async def UnlinkOAuthProvider(
        self, request: oauth_pb2.UnlinkOAuthProviderRequest, ctx: CallContext
    ) -> oauth_pb2.UnlinkOAuthProviderResponse:
        principal = ctx.require_principal()
        provider = self._provider(request.provider)
        async with self.db.write() as conn:
            # The user row is locked (PostgreSQL; SQLite's writers queue anyway), so two
            # unlinks at once cannot each leave the other as the last way in, then remove it.
            user = (
                await conn.execute(
                    select(t.users.c.password_hash).where(t.users.c.id == principal.user_id).with_for_update()
                )
            ).first()
            rows = {r.provider: r for r in (await conn.execute(select(oi).where(oi.c.user_id == principal.user_id)))}
            row = rows.get(provider.name)
            if user is None or row is None:
                raise not_found(f"linked {provider.label} account")
            # A link to a provider this server no longer has configured signs no one in.
            others = [name for name in rows if name != provider.name and name in self.providers]
            if user.password_hash is None and not others:
                raise ObserveError(
                    ErrorCode.ERROR_CODE_LAST_SIGN_IN_METHOD,
                    f"{provider.label} is the only way to sign in to this account: set a password first "
                    "(POST /api/v1/auth/forgot-password mails a link to set one) or link another provider",
                )
            await conn.execute(delete(oi).where(oi.c.id == row.id))
        ctx.audit.resource = f"user:{principal.user_id}"
        ctx.audit.before = _provider_message(provider.name, row, configured=True)
        return oauth_pb2.UnlinkOAuthProviderResponse()

    # ---- helpers ------------------------------------------------------------------

    def _provider(self, name: str) -> Provider:
        provider = self.providers.get(name)
        if provider is None:
            raise not_found(f"sign-in provider '{name}' (not configured on this server)")
        return provider

    def _redirect_uri(self, name: str) -> str:
        return f"{self.public_url}/api/v1/auth/{name}/callback"

    async def _require_session_of(self, user_id: int, ctx: CallContext) -> None:
        """A link finishes in the browser still signed in as the user who
        started it: its session cookie must be live and that user's."""
        try:
            principal = await self.authenticator.authenticate(
                CallContext(transport=ctx.transport, session_cookie=ctx.session_cookie)
            )
        except ObserveError:
            principal = None
        if principal is None or principal.token_kind != "session" or principal.user_id != user_id:
            raise failed(
                "this browser is no longer signed in to the account the link was started for: "
                "sign in, then link again from your account settings"
            )

    async def _begin(self, provider: Provider, flow: Flow, ctx: CallContext) -> httpbody_pb2.HttpBody:
        async with _client() as http:
            url = await provider.authorize_url(http, flow, self._redirect_uri(provider.name))
        ctx.response_headers.append(flows.set_cookie(flows.seal(self.sealer, flow), secure=self.secure))
        return _redirect(ctx, url)

    async def _spend(self, conn: AsyncConnection, flow: Flow) -> None:
        """Records the flow's state as used; a second use of it fails here
        even when two callbacks race past the read before the exchange."""
        now = clock.now()
        await conn.execute(delete(oauth_used_states).where(oauth_used_states.c.expires_at < now))
        try:
            async with conn.begin_nested():
                await conn.execute(
                    insert(oauth_used_states).values(
                        state_hash=_state_hash(flow.state), expires_at=now + timedelta(seconds=flows.TTL_SECONDS * 2)
                    )
                )
        except IntegrityError:
            raise failed("this sign-in was already used; start again") from None

    async def _sign_in(
        self, conn: AsyncConnection, provider: Provider, identity: Identity, flow: Flow, ctx: CallContext
    ) -> tuple[int, int]:
        """The user this identity signs in as, made first when it signs up;
        returns (user id, org id) and fills the audit note."""
        known = await self._known(conn, provider, identity)
        if known is None:
            if not identity.email or not identity.email_verified:
                raise failed(
                    f"{provider.label} has not verified the e-mail address of this account: "
                    "verify it there, then start again"
                )
            email = normalize_email(identity.email)
            if (await conn.execute(select(t.users.c.id).where(t.users.c.email == email))).first() is not None:
                # A second tab signing up this same account may have committed the user
                # (and its link, in the same transaction) since the first look.
                known = await self._known(conn, provider, identity)
                if known is None:
                    raise failed(
                        f"an account with the e-mail address {email} exists and has not linked {provider.label}: "
                        f"sign in with its password, then link {provider.label} from your account settings "
                        f"(GET /api/v1/me/oauth/{provider.name}/start)"
                    )
        if known is not None:
            if known.org_id is None:
                # Removed from their organisation: the password login refuses them too.
                raise failed(
                    f"the account linked to this {provider.label} account is no longer a member of an "
                    "organisation, so it cannot sign in"
                )
            if identity.email and identity.email != known.linked_email:
                await conn.execute(update(oi).where(_is_identity(provider, identity)).values(email=identity.email))
            self._note(ctx, "OAUTH_LOGIN", known.user_id, known.org_id, known.email, provider, identity)
            return int(known.user_id), int(known.org_id)
        name = identity.name.strip()[:100]
        if flow.invite:
            try:
                user_id, org_id, _, _ = await accept_invite(
                    conn, flow.invite, email=email, name=name, password_hash=None
                )
            except ObserveError as err:
                if err.code != ErrorCode.ERROR_CODE_NOT_FOUND:
                    raise
                raise failed(
                    f"the invite is unknown, used, expired or for another e-mail address than {email} "
                    f"(your {provider.label} account's): ask for a new invite to that address"
                ) from None
        else:
            user_id, org_id = await insert_account(
                conn,
                email=email,
                name=name,
                org_name=f"{name or email}'s organisation"[:200],
                password_hash=None,
                plan=self.plans.default,
            )
        await _insert_identity(conn, user_id, provider, identity)
        self._note(ctx, "OAUTH_REGISTER", user_id, org_id, email, provider, identity)
        return user_id, org_id

    @staticmethod
    async def _known(conn: AsyncConnection, provider: Provider, identity: Identity) -> Any:
        """The user linked to this provider account (its org_id None when they
        were removed from their organisation), or None."""
        return (
            await conn.execute(
                select(oi.c.user_id, oi.c.email.label("linked_email"), t.users.c.email, t.memberships.c.org_id)
                .join(t.users, t.users.c.id == oi.c.user_id)
                .outerjoin(t.memberships, t.memberships.c.user_id == oi.c.user_id)
                .where(_is_identity(provider, identity))
            )
        ).first()

    async def _link(
        self, conn: AsyncConnection, user_id: int, provider: Provider, identity: Identity, ctx: CallContext
    ) -> None:
        user = (
            await conn.execute(
                select(t.users.c.email, t.memberships.c.org_id)
                .join(t.memberships, t.memberships.c.user_id == t.users.c.id)
                .where(t.users.c.id == user_id)
            )
        ).first()
        if user is None:
            raise failed("the account this link was started for no longer exists")
        owner = (await conn.execute(select(oi.c.user_id).where(_is_identity(provider, identity)))).first()
        if owner is not None and owner.user_id != user_id:
            raise failed(f"this {provider.label} account is linked to another user")
        if owner is None:
            mine = (
                await conn.execute(
                    select(oi.c.subject).where((oi.c.user_id == user_id) & (oi.c.provider == provider.name))
                )
            ).first()
            # The same account linked by a second tab since the first look is linked: done.
            if mine is not None and mine.subject != identity.subject:
                raise failed(f"another {provider.label} account is linked to yours: unlink it first")
            if mine is None:
                await _insert_identity(conn, user_id, provider, identity)
        self._note(ctx, "LINK_OAUTH", user_id, user.org_id, user.email, provider, identity)

    @staticmethod
    def _note(
        ctx: CallContext, action: str, user_id: int, org_id: int, email: str, provider: Provider, identity: Identity
    ) -> None:
        note = ctx.audit
        note.action, note.resource = action, f"user:{user_id}"
        note.actor_user_id, note.actor_org_id, note.actor_email = user_id, org_id, email
        note.after = oauth_pb2.OAuthProvider(provider=provider.name, configured=True, linked=True, email=identity.email)


def _is_identity(provider: Provider, identity: Identity) -> ColumnElement[bool]:
    """The oauth_identities row of this provider account."""
    return (oi.c.provider == provider.name) & (oi.c.subject == identity.subject)


async def _insert_identity(conn: AsyncConnection, user_id: int, provider: Provider, identity: Identity) -> None:
    await conn.execute(
        insert(oi).values(
            user_id=user_id,
            provider=provider.name,
            subject=identity.subject,
            email=identity.email,
            created_at=clock.now(),
        )
    )


def _provider_message(name: str, row: Any, *, configured: bool) -> oauth_pb2.OAuthProvider:
    if row is None:
        return oauth_pb2.OAuthProvider(provider=name, configured=configured)
    return oauth_pb2.OAuthProvider(
        provider=name,
        configured=configured,
        linked=True,
        email=row.email,
        linked_at=clock.to_timestamp(row.created_at),
    )
