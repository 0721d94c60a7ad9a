"""Operator actions that bypass the API: the first owner of a fresh install."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError

from core import clock
from core.accounts import passwords
from core.accounts.service import insert_account, normalize_email
from core.errors import ErrorCode, ObserveError, Violations
from core.storage.db import Database
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
) -> dict[str, Any]:
    """Creates a user owning a new organisation; with ``mint_token`` also a
    PAT with scope ``*`` (its plaintext is in the result, once)."""
    v = Violations()
    email = normalize_email(v, "email", email)
    if password is not None:
        passwords.validate(v, "password", password)
    v.raise_if_any()
    password_hash = await passwords.hash_password(password) if password else None
    result: dict[str, Any] = {"email": email}
    try:
        async with db.write() as conn:
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
