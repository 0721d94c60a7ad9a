"""Personal access tokens: mint, list, revoke."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from observe.v1 import tokens_pb2, tokens_pb2_grpc
from sqlalchemy import and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core import clock
from core.errors import ErrorCode, ObserveError, not_found
from core.rpc import scopes
from core.rpc.context import CallContext
from core.rpc.validator import ASCII_SPACES
from core.storage import tables as t
from core.storage.db import Database
from core.tokens import secrets


async def insert_pat(
    conn: AsyncConnection,
    *,
    org_id: int,
    user_id: int,
    name: str,
    scopes: list[str],
    expires_at: datetime | None = None,
    daily_mutation_limit: int | None = None,
    daily_log_bytes_limit: int | None = None,
    now: datetime,
) -> tuple[int, str]:
    """Stores a new PAT's hash; returns (id, plaintext). The plaintext is not kept."""
    token = secrets.new_token(secrets.PAT_PREFIX)
    token_id = (
        await conn.execute(
            insert(t.api_tokens)
            .values(
                org_id=org_id,
                user_id=user_id,
                kind="pat",
                name=name,
                prefix=secrets.display_prefix(token),
                token_hash=secrets.token_hash(token),
                scopes=json.dumps(scopes),
                expires_at=expires_at,
                daily_mutation_limit=daily_mutation_limit,
                daily_log_bytes_limit=daily_log_bytes_limit,
                created_at=now,
            )
            .returning(t.api_tokens.c.id)
        )
    ).scalar_one()
    return token_id, token


def token_message(row: Any) -> tokens_pb2.Token:
    """A listed PAT from an api_tokens row (with today's usage when joined)."""
    return tokens_pb2.Token(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scopes=json.loads(row.scopes),
        expires_at=clock.to_timestamp(row.expires_at) if row.expires_at else None,
        created_at=clock.to_timestamp(row.created_at),
        last_used_at=clock.to_timestamp(row.last_used_at) if row.last_used_at else None,
        daily_mutation_limit=row.daily_mutation_limit,
        daily_mutation_used_today=getattr(row, "mutations", None) or 0,
        daily_log_bytes_limit=row.daily_log_bytes_limit,
        daily_log_bytes_used_today=getattr(row, "log_bytes", None) or 0,
    )


class TokenService(tokens_pb2_grpc.TokenServiceServicer):
    def __init__(self, *, db: Database) -> None:
        self.db = db

    async def CreateToken(
        self, request: tokens_pb2.CreateTokenRequest, ctx: CallContext
    ) -> tokens_pb2.CreateTokenResponse:
        principal = ctx.require_principal()
        now = clock.now()
        # tokens.proto's rules hold here (the pipeline checked them): the name
        # has a character other than ASCII spaces, which are trimmed.
        name = request.name.strip(ASCII_SPACES)
        expires_at = clock.from_timestamp(request.expires_at) if request.HasField("expires_at") else None
        granted = list(dict.fromkeys(request.scopes)) or [scopes.WILDCARD]
        missing = scopes.covers(principal.scopes, granted)
        if missing:
            raise ObserveError(
                ErrorCode.ERROR_CODE_PAT_SCOPE_INSUFFICIENT,
                f"a token cannot grant scopes it lacks itself: {', '.join(missing)}",
            )
        async with self.db.write() as conn:
            token_id, token = await insert_pat(
                conn,
                org_id=principal.org_id,
                user_id=principal.user_id,
                name=name,
                scopes=granted,
                expires_at=expires_at,
                daily_mutation_limit=request.daily_mutation_limit if request.HasField("daily_mutation_limit") else None,
                daily_log_bytes_limit=request.daily_log_bytes_limit
                if request.HasField("daily_log_bytes_limit")
                else None,
                now=now,
            )
        response = tokens_pb2.CreateTokenResponse(
            id=token_id,
            name=name,
            prefix=secrets.display_prefix(token),
            token=token,
            expires_at=clock.to_timestamp(expires_at) if expires_at else None,
            created_at=clock.to_timestamp(now),
        )
        ctx.audit.resource = f"token:{token_id}"
        ctx.audit.after = tokens_pb2.Token(
            id=token_id,
            name=name,
            prefix=response.prefix,
            scopes=granted,
            expires_at=response.expires_at if expires_at else None,
            created_at=response.created_at,
            daily_mutation_limit=request.daily_mutation_limit if request.HasField("daily_mutation_limit") else None,
            daily_log_bytes_limit=request.daily_log_bytes_limit if request.HasField("daily_log_bytes_limit") else None,
        )
        return response

    async def ListTokens(
        self, request: tokens_pb2.ListTokensRequest, ctx: CallContext
    ) -> tokens_pb2.ListTokensResponse:
        principal = ctx.require_principal()
        today = clock.now().date()
        query = (
            select(t.api_tokens, t.token_usage.c.mutations, t.token_usage.c.log_bytes)
            .outerjoin(
                t.token_usage,
                and_(t.token_usage.c.token_id == t.api_tokens.c.id, t.token_usage.c.day == today),
            )
            .where(
                (t.api_tokens.c.user_id == principal.user_id)
                & (t.api_tokens.c.org_id == principal.org_id)
                & (t.api_tokens.c.kind == "pat")
                & t.api_tokens.c.revoked_at.is_(None)
            )
            .order_by(t.api_tokens.c.id.desc())
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return tokens_pb2.ListTokensResponse(tokens=[token_message(row) for row in rows])

    async def RevokeToken(
        self, request: tokens_pb2.RevokeTokenRequest, ctx: CallContext
    ) -> tokens_pb2.RevokeTokenResponse:
        principal = ctx.require_principal()
        mine = (
            (t.api_tokens.c.id == request.id)
            & (t.api_tokens.c.user_id == principal.user_id)
            & (t.api_tokens.c.org_id == principal.org_id)
            & (t.api_tokens.c.kind == "pat")
            & t.api_tokens.c.revoked_at.is_(None)
        )
        async with self.db.write() as conn:
            row = (await conn.execute(select(t.api_tokens).where(mine))).first()
            if row is None:
                raise not_found("token")
            await conn.execute(update(t.api_tokens).where(mine).values(revoked_at=clock.now()))
        ctx.audit.resource = f"token:{row.id}"
        ctx.audit.before = token_message(row)
        return tokens_pb2.RevokeTokenResponse()
