"""Bearer token material: generation, hashing and format checks.

PATs are ``obs_`` + 43 url-safe base64 characters (256 bits), sessions
``obss_`` + 43, password-reset tokens ``obsr_`` + 43. Only the SHA-256 of a
token is stored: 256 bits of entropy need no slow hash.
"""

from __future__ import annotations

import hashlib
import re
import secrets

PAT_PREFIX = "obs_"
SESSION_PREFIX = "obss_"
RESET_PREFIX = "obsr_"
INVITE_PREFIX = "obsi_"
PREFIX_LENGTH = 12

_BODY = r"[A-Za-z0-9_-]{43}"
PAT_RE = re.compile(rf"obs_{_BODY}")
SESSION_RE = re.compile(rf"obss_{_BODY}")


def new_token(prefix: str) -> str:
    """A fresh token: ``prefix`` + 43 url-safe base64 chars of 32 random bytes."""
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def display_prefix(token: str) -> str:
    return token[:PREFIX_LENGTH]


def looks_like_bearer(token: str) -> bool:
    return bool(PAT_RE.fullmatch(token) or SESSION_RE.fullmatch(token))
