"""Password hashing with Argon2id (argon2-cffi's RFC 9106 defaults).

Hashing is CPU- and memory-heavy by design, so it runs in a worker thread
and never blocks the event loop.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 10
MAX_LENGTH = 256

_hasher = PasswordHasher()
# Verified when the e-mail is unknown, so both answers take the same time.
_DUMMY_HASH = _hasher.hash("observe-dummy-password")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


def _verify(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored``; a None ``stored`` never matches."""
    return await asyncio.to_thread(_verify, stored, password)


def needs_rehash(stored: str) -> bool:
    """True when ``stored`` was made with other parameters than today's."""
    return _hasher.check_needs_rehash(stored)
