"""Sign-up, sign-in, sessions, password recovery and the caller's own account."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from observe.v1 import accounts_pb2, accounts_pb2_grpc, options_pb2
from sqlalchemy import Select, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from core import clock
from core.accounts import passwords, plans
from core.config import Settings
from core.errors import ErrorCode, ObserveError, not_found
from core.mail.sender import Mailer
from core.oauth.tables import oauth_identities
from core.rpc.auth import SESSION_COOKIE
from core.rpc.context import ROLES_BY_NAME, CallContext
from core.storage import tables as t
from core.storage.db import Database
from core.storage.fastread import Query
from core.tokens import secrets

RESET_TTL = timedelta(hours=1)


def normalize_email(email: str) -> str:
    """The stored form of an e-mail address the proto's rules accepted."""
    return email.strip().lower()


def session_cookie(token: str, max_age: int, *, secure: bool) -> tuple[str, str]:
    """The session's Set-Cookie header; ``secure`` (an https OBSERVE_PUBLIC_URL)
    keeps the browser from sending it over plain http."""
    attributes = f"Max-Age={max_age}; Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
    return ("set-cookie", f"{SESSION_COOKIE}={token}; {attributes}")


async def insert_account(
    conn: AsyncConnection, *, email: str, name: str, org_name: str, password_hash: str | None, plan: str
) -> tuple[int, int]:
    """Inserts a user, an organisation and the owner membership; returns
    (user id, org id). A taken e-mail raises IntegrityError."""
    now = clock.now()
    user_id = (
        await conn.execute(
            insert(t.users)
            .values(email=email, name=name, password_hash=password_hash, created_at=now, updated_at=now)
            .returning(t.users.c.id)
        )
    ).scalar_one()
    org_id = (
        await conn.execute(insert(t.orgs).values(name=org_name, plan=plan, created_at=now).returning(t.orgs.c.id))
    ).scalar_one()
    await conn.execute(insert(t.memberships).values(org_id=org_id, user_id=user_id, role="owner", created_at=now))
    return user_id, org_id


async def accept_invite(
    conn: AsyncConnection, token: str, *, email: str, name: str, password_hash: str | None
) -> tuple[int, int, str, str]:
    """Creates the invited user in the inviting organisation with the invited
    role; returns (user id, org id, role, org name). The invite works once.
    ``password_hash`` is None for a user who signs up with a provider."""
    now = clock.now()
    invite = (
        await conn.execute(
            select(t.invites, t.orgs.c.name.label("org_name"))
            .join(t.orgs, t.orgs.c.id == t.invites.c.org_id)
            .where(t.invites.c.token_hash == secrets.token_hash(token))
        )
    ).first()
    # An invite that is unknown, used, expired or for another address is one
    # answer: the request was well formed, the invite it names is not there.
    if invite is None or invite.accepted_at is not None or invite.expires_at <= now or invite.email != email:
        raise not_found("open invite with this token for this e-mail address")
    if (await conn.execute(select(t.users.c.id).where(t.users.c.email == email))).first() is not None:
        # An account belongs to one organisation (for now): the invite stays
        # open and the answer says why.
        raise ObserveError(
            ErrorCode.ERROR_CODE_CONFLICT,
            "this e-mail address already has an account; an account belongs to one organisation for now, so it "
            "cannot accept this invite: ask for an invite to another address",
        )
    claimed = await conn.execute(
        update(t.invites)
        .where((t.invites.c.id == invite.id) & t.invites.c.accepted_at.is_(None))
        .values(accepted_at=now)
    )
    if claimed.rowcount != 1:
        raise not_found("open invite with this token for this e-mail address")
    user_id = (
        await conn.execute(
            insert(t.users)
            .values(email=email, name=name, password_hash=password_hash, created_at=now, updated_at=now)
            .returning(t.users.c.id)
        )
    ).scalar_one()
    await conn.execute(
        insert(t.memberships).values(org_id=invite.org_id, user_id=user_id, role=invite.role, created_at=now)
    )
    return user_id, invite.org_id, invite.role, invite.org_name


def foreign_identities(user_id: int, email: str) -> Select[tuple[int]]:
    """The user's linked provider accounts whose verified e-mail is not the account's own."""
    return select(oauth_identities.c.id).where(
        (oauth_identities.c.user_id == user_id) & (func.lower(oauth_identities.c.email) != email.lower())
    )


class AuthService(accounts_pb2_grpc.AuthServiceServicer):
    def __init__(self, *, db: Database, settings: Settings, mailer: Mailer, plans: plans.PlanBook) -> None:
        self.plans = plans
        self.db = db
        self.settings = settings
        self.mailer = mailer

    async def Register(self, request: accounts_pb2.RegisterRequest, ctx: CallContext) -> accounts_pb2.RegisterResponse:
        email = normalize_email(request.email)
        password_hash = await passwords.hash_password(request.password)
        org_name = request.org_name.strip() or f"{request.name.strip() or email}'s organisation"
        role = "owner"
        try:
            async with self.db.write() as conn:
                if request.invite_token:
                    user_id, org_id, role, org_name = await accept_invite(
                        conn, request.invite_token, email=email, name=request.name.strip(), password_hash=password_hash
                    )
                else:
                    user_id, org_id = await insert_account(
                        conn,
                        email=email,
                        name=request.name.strip(),
                        org_name=org_name,
                        password_hash=password_hash,
                        plan=self.plans.default,
                    )
                token, expires = await self._new_session(conn, user_id, org_id)
        except IntegrityError as exc:
            raise ObserveError(ErrorCode.ERROR_CODE_CONFLICT, "an account with this email exists") from exc
        ctx.response_headers.append(session_cookie(token, self._session_seconds, secure=self._secure))
        ctx.audit.resource = f"user:{user_id}"
        ctx.audit.actor_user_id, ctx.audit.actor_org_id, ctx.audit.actor_email = user_id, org_id, email
        return accounts_pb2.RegisterResponse(
            user=accounts_pb2.User(id=user_id, email=email, name=request.name.strip()),
            org=accounts_pb2.Org(id=org_id, name=org_name),
            role=options_pb2.Role.ValueType(ROLES_BY_NAME[role]),
            session_token=token,
            expires_at=clock.to_timestamp(expires),
        )

    async def Login(self, request: accounts_pb2.LoginRequest, ctx: CallContext) -> accounts_pb2.LoginResponse:
        email = normalize_email(request.email)
        async with self.db.read() as conn:
            user = (
                await conn.execute(
                    select(t.users, t.memberships.c.org_id)
                    .join(t.memberships, t.memberships.c.user_id == t.users.c.id)
                    .where(t.users.c.email == email)
                )
            ).first()
        stored = user.password_hash if user else None
        if not await passwords.verify_password(stored, request.password) or user is None:
            raise ObserveError(ErrorCode.ERROR_CODE_INVALID_CREDENTIALS, "email or password is wrong")
        async with self.db.write() as conn:
            if passwords.needs_rehash(user.password_hash):
                await conn.execute(
                    update(t.users)
                    .where(t.users.c.id == user.id)
                    .values(password_hash=await passwords.hash_password(request.password))
                )
            token, expires = await self._new_session(conn, user.id, user.org_id)
        ctx.response_headers.append(session_cookie(token, self._session_seconds, secure=self._secure))
        return accounts_pb2.LoginResponse(
            user=accounts_pb2.User(id=user.id, email=user.email, name=user.name),
            session_token=token,
            expires_at=clock.to_timestamp(expires),
        )

    async def Logout(self, request: accounts_pb2.LogoutRequest, ctx: CallContext) -> accounts_pb2.LogoutResponse:
        principal = ctx.require_principal()
        # Only the calling session ends; a PAT is revoked with DELETE /me/tokens/:id.
        if principal.token_kind == "session":
            async with self.db.write() as conn:
                await conn.execute(
                    update(t.api_tokens).where(t.api_tokens.c.id == principal.token_id).values(revoked_at=clock.now())
                )
            ctx.response_headers.append(session_cookie("", 0, secure=self._secure))
        return accounts_pb2.LogoutResponse()

    async def ForgotPassword(
        self, request: accounts_pb2.ForgotPasswordRequest, ctx: CallContext
    ) -> accounts_pb2.ForgotPasswordResponse:
        email = normalize_email(request.email)
        async with self.db.write() as conn:
            user_id = (await conn.execute(select(t.users.c.id).where(t.users.c.email == email))).scalar_one_or_none()
            linked = False
            if user_id is not None:
                linked = (await conn.execute(foreign_identities(user_id, email))).first() is not None
                token = secrets.new_token(secrets.RESET_PREFIX)
                now = clock.now()
                await conn.execute(
                    insert(t.password_resets).values(
                        user_id=user_id,
                        token_hash=secrets.token_hash(token),
                        expires_at=now + RESET_TTL,
                        created_at=now,
                    )
                )
        if user_id is not None:
            link = f"{self.settings.public_url}/reset-password?token={token}"
            self.mailer.send_later(
                email,
                "Reset your observe password",
                f"Someone asked to reset the password of your observe account.\n\n"
                f"Reset token: {token}\nLink: {link}\n\n"
                "The token works once, for one hour. If it was not you, ignore this mail.\n"
                + (
                    "\nResetting the password also unlinks the Google and GitHub accounts of other e-mail addresses "
                    "linked to this account: sign in with the new password and link yours again from your account "
                    "settings.\n"
                    if linked
                    else ""
                ),
            )
        return accounts_pb2.ForgotPasswordResponse()

    async def ResetPassword(
        self, request: accounts_pb2.ResetPasswordRequest, ctx: CallContext
    ) -> accounts_pb2.ResetPasswordResponse:
        password_hash = await passwords.hash_password(request.password)
        now = clock.now()
        async with self.db.write() as conn:
            row = (
                await conn.execute(
                    select(t.password_resets).where(t.password_resets.c.token_hash == secrets.token_hash(request.token))
                )
            ).first()
            if row is None or row.used_at is not None:
                raise ObserveError(ErrorCode.ERROR_CODE_TOKEN_INVALID, "reset token is unknown or already used")
            if row.expires_at <= now:
                raise ObserveError(ErrorCode.ERROR_CODE_TOKEN_EXPIRED, "reset token has expired")
            # Conditional update: of two racing resets with one token, one wins.
            claimed = await conn.execute(
                update(t.password_resets)
                .where((t.password_resets.c.id == row.id) & t.password_resets.c.used_at.is_(None))
                .values(used_at=now)
            )
            if claimed.rowcount != 1:
                raise ObserveError(ErrorCode.ERROR_CODE_TOKEN_INVALID, "reset token is unknown or already used")
            await conn.execute(
                update(t.users).where(t.users.c.id == row.user_id).values(password_hash=password_hash, updated_at=now)
            )
            await end_sessions(conn, row.user_id, keep=None)
            who = (
                await conn.execute(
                    select(t.users.c.email, t.memberships.c.org_id)
                    .join(t.memberships, t.memberships.c.user_id == t.users.c.id)
                    .where(t.users.c.id == row.user_id)
                )
            ).first()
            # Whoever can reset the password owns the address: a provider account of another address
            # linked before (by someone who registered the address first) must not sign in any more.
            # A provider account of this very address proved it owns it, and stays.
            account_email = who.email if who is not None else ""
            await conn.execute(
                delete(oauth_identities).where(
                    oauth_identities.c.id.in_(foreign_identities(row.user_id, account_email))
                )
            )
        ctx.audit.resource = f"user:{row.user_id}"
        if who is not None:
            ctx.audit.actor_user_id, ctx.audit.actor_org_id, ctx.audit.actor_email = row.user_id, who.org_id, who.email
        return accounts_pb2.ResetPasswordResponse()

    @property
    def _secure(self) -> bool:
        return self.settings.public_url.startswith("https://")

    @property
    def _session_seconds(self) -> int:
        return self.settings.session_ttl_days * 86400

    async def _new_session(self, conn: AsyncConnection, user_id: int, org_id: int) -> tuple[str, datetime]:
        return await new_session(conn, user_id, org_id, ttl_days=self.settings.session_ttl_days)


async def new_session(conn: AsyncConnection, user_id: int, org_id: int, *, ttl_days: int) -> tuple[str, datetime]:
    """Inserts a session token (obss_…) for the user; returns it and its
    expiry. Password and provider sign-ins make theirs here alike."""
    token = secrets.new_token(secrets.SESSION_PREFIX)
    now = clock.now()
    expires = now + timedelta(days=ttl_days)
    await conn.execute(
        insert(t.api_tokens).values(
            org_id=org_id,
            user_id=user_id,
            kind="session",
            name="session",
            prefix=secrets.display_prefix(token),
            token_hash=secrets.token_hash(token),
            scopes=json.dumps(["*"]),
            expires_at=expires,
            created_at=now,
        )
    )
    return token, expires


async def end_sessions(conn: AsyncConnection, user_id: int, *, keep: int | None) -> None:
    """Revokes every live session of ``user_id`` except ``keep``."""
    condition = (
        (t.api_tokens.c.user_id == user_id) & (t.api_tokens.c.kind == "session") & t.api_tokens.c.revoked_at.is_(None)
    )
    if keep is not None:
        condition &= t.api_tokens.c.id != keep
    await conn.execute(update(t.api_tokens).where(condition).values(revoked_at=clock.now()))


# User, organisation, plan and this month's usage in one statement, built once.
_ME = Query(
    plans.with_usage(
        select(t.users.c.email, t.users.c.name, t.orgs.c.name.label("org_name"), t.orgs.c.plan).select_from(
            t.users.join(t.orgs, t.orgs.c.id == bindparam("org_id"))
        )
    ).where(t.users.c.id == bindparam("user_id"))
)


async def read_me(db: Database, user_id: int, org_id: int) -> Any:
    """The row of ``_ME`` for this user and organisation, or None."""
    return await db.fetch_one(_ME, {"user_id": user_id, "org_id": org_id, "usage_month": plans.current_month()})


class MeService(accounts_pb2_grpc.MeServiceServicer):
    def __init__(self, *, db: Database, plans: plans.PlanBook) -> None:
        self.db = db
        self.plans = plans

    async def GetMe(self, request: accounts_pb2.GetMeRequest, ctx: CallContext) -> accounts_pb2.GetMeResponse:
        principal = ctx.require_principal()
        row = await read_me(self.db, principal.user_id, principal.org_id)
        if row is None:
            raise not_found("user")
        used = plans.usage_from(row)
        limits = self.plans.limits(row.plan)
        return accounts_pb2.GetMeResponse(
            user=accounts_pb2.User(id=principal.user_id, email=row.email, name=row.name),
            org=accounts_pb2.Org(id=principal.org_id, name=row.org_name),
            role=options_pb2.Role.ValueType(principal.role),
            plan=accounts_pb2.Plan(
                name=row.plan,
                limits=accounts_pb2.PlanLimits(
                    monitors=limits.monitors,
                    monthly_checks=limits.monthly_checks,
                    monthly_log_bytes=limits.monthly_log_bytes,
                ),
            ),
            usage=accounts_pb2.Usage(
                monitors=used.monitors, monthly_checks=used.monthly_checks, monthly_log_bytes=used.monthly_log_bytes
            ),
        )

    async def ChangePassword(
        self, request: accounts_pb2.ChangePasswordRequest, ctx: CallContext
    ) -> accounts_pb2.ChangePasswordResponse:
        principal = ctx.require_principal()
        async with self.db.read() as conn:
            stored = (
                await conn.execute(select(t.users.c.password_hash).where(t.users.c.id == principal.user_id))
            ).scalar_one_or_none()
        if not await passwords.verify_password(stored, request.current_password):
            raise ObserveError(ErrorCode.ERROR_CODE_PASSWORD_INVALID, "current password is wrong")
        new_hash = await passwords.hash_password(request.new_password)
        async with self.db.write() as conn:
            await conn.execute(
                update(t.users)
                .where(t.users.c.id == principal.user_id)
                .values(password_hash=new_hash, updated_at=clock.now())
            )
            await end_sessions(
                conn, principal.user_id, keep=principal.token_id if principal.token_kind == "session" else None
            )
        ctx.audit.resource = f"user:{principal.user_id}"
        return accounts_pb2.ChangePasswordResponse()
