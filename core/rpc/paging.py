"""Opaque id cursors and page sizes, the same for every list route."""

from __future__ import annotations

import base64

from core.errors import Violations

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_MAX_ID = 2**63 - 1  # ids are int64: a larger one is no cursor of ours (and no store takes it)


def cursor_out(last_id: int, kind: str = "a") -> str:
    """The cursor after the row ``last_id``; ``kind`` keeps one list's cursor out of another."""
    return base64.urlsafe_b64encode(f"{kind}{last_id}".encode()).decode().rstrip("=")


def cursor_in(v: Violations, cursor: str, kind: str = "a") -> int | None:
    """The row id a cursor names; a violation on ``cursor`` when it is not one of ours."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        digits = text[len(kind) :]
        if text.startswith(kind) and digits.isascii() and digits.isdigit() and int(digits) <= _MAX_ID:
            return int(digits)
    except (ValueError, UnicodeDecodeError):
        pass
    v.add("cursor", "invalid_string", "Invalid cursor")
    return None


def page_limit(v: Violations, limit: int | None) -> int:
    """``limit`` (its 1–1000 range is the proto's rule) or the default of 100."""
    return DEFAULT_LIMIT if limit is None else limit
