"""Who is calling: bearer PAT (``obs_…``), bearer session (``obss_…``) or the
session cookie. One database read per call; a revoked or expired token, or one
whose owner left the organisation, fails at once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, select, update

from core.errors import ErrorCode, ObserveError
from core.rpc.context import ROLES_BY_NAME, CallContext, Principal
from core.storage import tables as t
from core.storage.db import Database
from core.storage.fastread import Query
from core.tokens.secrets import looks_like_bearer, token_hash

SESSION_COOKIE = "observe_session"
# last_used_at is written once a minute at most (it may lag that much), with
# the time of the use that wrote it, in whole seconds: truncating it to the
# minute put it before created_at for a token used in its first minute.
_TOUCH_EVERY = timedelta(minutes=1)

_LOOKUP = Query(
    select(
        t.api_tokens.c.id,
        t.api_tokens.c.kind,
        t.api_tokens.c.user_id,
        t.api_tokens.c.org_id,
        t.api_tokens.c.scopes,
        t.api_tokens.c.expires_at,
        t.api_tokens.c.revoked_at,
        t.api_tokens.c.last_used_at,
        t.api_tokens.c.daily_mutation_limit,
        t.api_tokens.c.daily_log_bytes_limit,
        t.memberships.c.role,
        t.users.c.email,
    )
    .join(
        t.memberships,
        (t.memberships.c.user_id == t.api_tokens.c.user_id) & (t.memberships.c.org_id == t.api_tokens.c.org_id),
    )
    .join(t.users, t.users.c.id == t.api_tokens.c.user_id)
    .where(t.api_tokens.c.token_hash == bindparam("token_hash"))
)


def parse_cookies(header: str) -> dict[str, str]:
    """The name=value pairs of a Cookie header (the first of a repeated name)."""
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in out:
            out[name] = value.strip().strip('"')
    return out


def session_from_cookie(header: str) -> str | None:
    """The session token in a Cookie header, if any."""
    return parse_cookies(header).get(SESSION_COOKIE) or None


def bearer_from(ctx: CallContext) -> str:
    """The presented token, from the Authorization header or the cookie."""
    header = ctx.authorization
    if header:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise ObserveError(ErrorCode.ERROR_CODE_TOKEN_INVALID, "Authorization must be 'Bearer <token>'")
        return value.strip()
    if ctx.session_cookie:
        return ctx.session_cookie
    raise ObserveError(
        ErrorCode.ERROR_CODE_AUTH_REQUIRED, "authentication required: send 'Authorization: Bearer obs_…'"
    )


class Authenticator:
    """Resolves the credentials of a call to a :class:`Principal`."""

    def __init__(self, *, db: Database) -> None:
        self.db = db

    async def authenticate(self, ctx: CallContext) -> Principal:
        token = bearer_from(ctx)
        if not looks_like_bearer(token):
            raise ObserveError(ErrorCode.ERROR_CODE_TOKEN_INVALID, "token is malformed")
        row = await self.db.fetch_one(_LOOKUP, {"token_hash": token_hash(token)})
        if row is None or row.revoked_at is not None:
            raise ObserveError(ErrorCode.ERROR_CODE_TOKEN_INVALID, "token is unknown or revoked")
        now = datetime.now(UTC)
        if row.expires_at is not None and row.expires_at <= now:
            raise ObserveError(ErrorCode.ERROR_CODE_TOKEN_EXPIRED, "token has expired")
        if row.last_used_at is None or now - row.last_used_at >= _TOUCH_EVERY:
            await self._touch(row.id, now)
        return Principal(
            user_id=row.user_id,
            org_id=row.org_id,
            role=ROLES_BY_NAME[row.role],
            email=row.email,
            token_id=row.id,
            token_kind=row.kind,
            scopes=frozenset(json.loads(row.scopes)),
            daily_mutation_limit=row.daily_mutation_limit,
            daily_log_bytes_limit=row.daily_log_bytes_limit,
        )

    async def _touch(self, token_id: int, now: datetime) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(t.api_tokens)
                .where(t.api_tokens.c.id == token_id)
                .values(last_used_at=now.replace(microsecond=0))
            )
