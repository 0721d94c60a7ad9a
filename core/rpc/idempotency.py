"""Idempotency-Key: Stripe semantics, durable in the database.

Keyed by (token, key) for 24 hours. The first call claims the key and runs;
its reply (success, or an error the handler raised below 500) is stored and
replayed to later calls with ``Idempotent-Replayed: true``. A stored reply
is encrypted (AES-GCM) with a key derived from the caller's own bearer
token, which the database never holds: a reply that carries a secret (a
minted PAT) is readable only by the one who can present that token again. A call that
finds the key still claimed gets ``IDEMPOTENCY_IN_PROGRESS``; one whose
method, path or body differ gets ``IDEMPOTENCY_KEY_REUSED``. 5xx replies
are never stored, and a claim left by a crashed process lapses after
``LOCK_SECONDS`` so the key is never stuck.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import Message
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from core.errors import ErrorCode, FieldViolation, ObserveError, validation_failed
from core.rpc.methods import Method
from core.storage import tables as t
from core.storage.db import Database

MAX_KEY_LENGTH = 255
HEADER = "Idempotency-Key"
TTL = timedelta(hours=24)
LOCK_SECONDS = 60
REPLAYED = ("idempotent-replayed", "true")
# Reply headers that describe this request, not the stored one: a replay
# carries the fresh RateLimit-* of its own admission (and never a cookie).
_NOT_REPLAYED = frozenset({"set-cookie", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"})
_ik = t.idempotency_keys


@dataclass(slots=True)
class Claim:
    """This call owns the key: it must finish() or release() it."""

    row_id: int
    locked_until: datetime


@dataclass(slots=True)
class Replay:
    """The stored reply of an earlier call with the same key: the serialised
    response message, or the error; and the headers to send again."""

    response: bytes | None
    error: ObserveError | None
    headers: list[tuple[str, str]]


def _cipher(bearer: str) -> AESGCM:
    return AESGCM(hashlib.sha256(b"observe-idempotency\0" + bearer.encode()).digest())


def _seal(bearer: str, plain: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + _cipher(bearer).encrypt(nonce, plain, None)


def _open(bearer: str, sealed: bytes) -> bytes:
    return _cipher(bearer).decrypt(sealed[:12], sealed[12:], None)


def fingerprint(method: Method, request: Message) -> str:
    digest = hashlib.sha256(method.grpc_path.encode())
    digest.update(b"\0")
    digest.update(request.SerializeToString(deterministic=True))
    return digest.hexdigest()


def received_key(value: str) -> str:
    """The key a transport received (REST header, gRPC metadata). An empty
    one is refused: taken as "no key", a retry would run the call again."""
    if not value.strip():
        raise validation_failed([FieldViolation(HEADER, "too_small", f"{HEADER} must not be empty")])
    return value


def check_key(key: str) -> None:
    if len(key) > MAX_KEY_LENGTH:
        raise ObserveError(
            ErrorCode.ERROR_CODE_IDEMPOTENCY_KEY_TOO_LONG, f"Idempotency-Key is longer than {MAX_KEY_LENGTH} characters"
        )


class IdempotencyStore:
    def __init__(self, *, db: Database) -> None:
        self.db = db

    async def claim(self, token_id: int, bearer: str, key: str, method: Method, request: Message) -> Claim | Replay:
        """Claims ``key`` for this call, or returns the reply to replay.
        Raises IN_PROGRESS or KEY_REUSED."""
        check_key(key)
        print_ = fingerprint(method, request)
        for _ in range(3):
            now = datetime.now(UTC)
            locked_until = now + timedelta(seconds=LOCK_SECONDS)
            try:
                async with self.db.write() as conn:
                    if random.random() < 0.01:
                        await conn.execute(delete(_ik).where(_ik.c.expires_at < now))
                    row_id = (
                        await conn.execute(
                            insert(_ik)
                            .values(
                                token_id=token_id,
                                key=key,
                                fingerprint=print_,
                                state="in_progress",
                                locked_until=locked_until,
                                expires_at=now + TTL,
                                created_at=now,
                            )
                            .returning(_ik.c.id)
                        )
                    ).scalar_one()
                return Claim(row_id, locked_until)
            except IntegrityError:
                pass
            outcome = await self._existing(token_id, bearer, key, print_, now, locked_until)
            if outcome is not None:
                return outcome
        raise ObserveError(
            ErrorCode.ERROR_CODE_IDEMPOTENCY_IN_PROGRESS, "request with this key is in progress", retry_after=1
        )

    async def _existing(
        self, token_id: int, bearer: str, key: str, print_: str, now: datetime, locked_until: datetime
    ) -> Claim | Replay | None:
        """What to do about a key already on record; None means claim again."""
        async with self.db.write() as conn:
            row = (await conn.execute(select(_ik).where((_ik.c.token_id == token_id) & (_ik.c.key == key)))).first()
            if row is None:
                return None
            if row.expires_at <= now:
                await conn.execute(delete(_ik).where(_ik.c.id == row.id))
                return None
            if row.fingerprint != print_:
                raise ObserveError(
                    ErrorCode.ERROR_CODE_IDEMPOTENCY_KEY_REUSED,
                    "this Idempotency-Key was used with another method, path or body",
                )
            if row.state == "done":
                return _replay(bearer, row.response)
            if row.locked_until > now:
                raise ObserveError(
                    ErrorCode.ERROR_CODE_IDEMPOTENCY_IN_PROGRESS,
                    "a request with this Idempotency-Key is still in progress",
                    retry_after=max(1, min(LOCK_SECONDS, int((row.locked_until - now).total_seconds()))),
                )
            # The claim lapsed (its process died): take it over, once.
            taken = await conn.execute(
                update(_ik)
                .where((_ik.c.id == row.id) & (_ik.c.locked_until == row.locked_until))
                .values(locked_until=locked_until)
            )
            if taken.rowcount == 1:
                return Claim(row.id, locked_until)
            return None

    async def finish(self, claim: Claim, bearer: str, response: Message, headers: list[tuple[str, str]]) -> None:
        kept = [[k, v] for k, v in headers if k.lower() not in _NOT_REPLAYED]
        reply = {"response": response.SerializeToString().hex(), "headers": kept}
        await self._store(claim, _seal(bearer, json.dumps(reply).encode()))

    async def finish_error(self, claim: Claim, bearer: str, err: ObserveError) -> None:
        """Stores a handler's 4xx for replay; forgets the key on 5xx."""
        if err.http_status >= 500:
            await self.release(claim)
            return
        error = {
            "code": err.code,
            "message": err.message,
            "fields": [[f.path, f.code, f.message] for f in err.fields],
            "retryAfter": err.retry_after,
            "headers": err.headers,
        }
        await self._store(claim, _seal(bearer, json.dumps({"error": error, "headers": []}).encode()))

    async def release(self, claim: Claim) -> None:
        async with self.db.write() as conn:
            await conn.execute(delete(_ik).where((_ik.c.id == claim.row_id) & (_ik.c.state == "in_progress")))

    async def _store(self, claim: Claim, sealed: bytes) -> None:
        async with self.db.write() as conn:
            await conn.execute(update(_ik).where(_ik.c.id == claim.row_id).values(state="done", response=sealed))


def _replay(bearer: str, sealed: bytes) -> Replay:
    reply = json.loads(_open(bearer, sealed))
    # Replies stored before RateLimit-* were left out may still hold them.
    headers = [(k, v) for k, v in reply["headers"] if k.lower() not in _NOT_REPLAYED]
    headers.append(REPLAYED)
    error = reply.get("error")
    if error is not None:
        err = ObserveError(
            error["code"],
            error["message"],
            [FieldViolation(*f) for f in error["fields"]],
            retry_after=error["retryAfter"],
            headers={**error["headers"], REPLAYED[0]: REPLAYED[1]},
        )
        return Replay(None, err, headers)
    return Replay(bytes.fromhex(reply["response"]), None, headers)
