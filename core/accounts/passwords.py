"""Password hashing with Argon2id (argon2-cffi's RFC 9106 defaults).

Hashing is CPU- and memory-heavy by design, so it runs in a worker thread
and never blocks the event loop.

``OBSERVE_INSECURE_TEST_PASSWORD_HASHING=1`` uses Argon2id's minimum cost
instead (1 pass, 8 KiB): for test suites that sign up hundreds of users,
never for real accounts. The server logs a warning when it is set.
"""

from __future__ import annotations

import asyncio
import logging
import os

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 10
MAX_LENGTH = 256

INSECURE_TEST_SETTING = "OBSERVE_INSECURE_TEST_PASSWORD_HASHING"


def cheap_hasher() -> PasswordHasher:
    """Argon2id at its minimum cost (1 pass, 8 KiB, 1 lane)."""
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


INSECURE = os.environ.get(INSECURE_TEST_SETTING) == "1"
if INSECURE:
    logging.getLogger("observe.accounts").warning(
        "%s=1: passwords are hashed at Argon2id's minimum cost (tests only, never real accounts)",
        INSECURE_TEST_SETTING,
    )
_hasher = cheap_hasher() if INSECURE else PasswordHasher()
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
