"""Operator actions that bypass the API: the first owner of a fresh install,
and sealing the secrets again after a server-key rotation."""

from __future__ import annotations

from typing import Any

from observe.v1 import accounts_pb2
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from core import clock
from core.accounts import passwords
from core.accounts.service import insert_account, normalize_email
from core.errors import ErrorCode, ObserveError
from core.rpc.validator import VALIDATOR
from core.storage import tables as t
from core.storage.db import Database
from core.storage.sealing import Sealer, key_id
from core.tokens.service import insert_pat


async def create_owner(
    db: Database,
    *,
    email: str,
    name: str,
    org_name: str,
    password: str | None,
    mint_token: bool,
    plan: str = "unlimited",
    exist_ok: bool = False,
) -> dict[str, Any]:
    """Creates a user owning a new organisation; with ``mint_token`` also a
    PAT with scope ``*`` (its plaintext is in the result, once). With
    ``exist_ok`` an existing account of ``email`` is kept as it is (the token,
    if asked for, is minted for it): a script can run twice on one install."""
    # The sign-up rules of accounts.proto; a user made without a password
    # (token only) is checked with a stand-in that meets them.
    VALIDATOR.check(
        accounts_pb2.RegisterRequest(email=email, password=password or "-" * 10, name=name, org_name=org_name)
    )
    email = normalize_email(email)
    password_hash = await passwords.hash_password(password) if password else None
    result: dict[str, Any] = {"email": email}
    try:
        async with db.write() as conn:
            existing = (
                await conn.execute(
                    select(t.users.c.id, t.memberships.c.org_id)
                    .join(t.memberships, t.memberships.c.user_id == t.users.c.id)
                    .where(t.users.c.email == email)
                )
            ).first()
            if existing is not None and exist_ok:
                user_id, org_id = existing
                result.update(existing=True)
            else:
                user_id, org_id = await insert_account(
                    conn,
                    email=email,
                    name=name,
                    org_name=org_name or f"{name or email}'s organisation",
                    password_hash=password_hash,
                    plan=plan,
                )
            result.update(userId=user_id, orgId=org_id)
            if mint_token:
                token_id, token = await insert_pat(
                    conn, org_id=org_id, user_id=user_id, name="admin-cli", scopes=["*"], now=clock.now()
                )
                result.update(tokenId=token_id, token=token)
    except IntegrityError as exc:
        raise ObserveError(ErrorCode.ERROR_CODE_CONFLICT, "an account with this email exists") from exc
    return result


# Every sealed column: (table, primary key column, sealed column).
SEALED_COLUMNS = (
    (t.orgs, t.orgs.c.id, t.orgs.c.webhook_secret),
    (t.monitors, t.monitors.c.id, t.monitors.c.secrets),
    (t.monitors, t.monitors.c.id, t.monitors.c.heartbeat_token),
)


async def reseal(db: Database, sealer: Sealer) -> int:
    """Seals every secret not sealed with the primary key again with it; returns how many."""
    changed = 0
    for table, pk, column in SEALED_COLUMNS:
        async with db.write() as conn:
            rows = (await conn.execute(select(pk, column).where(column.is_not(None)))).all()
            for row_id, sealed in rows:
                if key_id(sealed) != sealer.primary:
                    await conn.execute(
                        update(table).where(pk == row_id).values({column.name: sealer.seal(sealer.open(sealed))})
                    )
                    changed += 1
    return changed
