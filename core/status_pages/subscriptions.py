"""PLACEHOLDER (helper C replaces this file): e-mail subscriptions."""

from __future__ import annotations

from collections.abc import Callable

from core.status_pages.access import PageTokens
from core.status_pages.store import PageRow
from core.storage.db import Database


class Subscriptions:
    def __init__(self, db: Database, tokens: PageTokens, public_url: str, *, notify: Callable[[], None]) -> None:
        self.notify = notify  # wakes the alert dispatcher after outbox rows commit
        self.db = db
        self.tokens = tokens
        self.public_url = public_url

    def plausible_email(self, email: str) -> bool:
        return "@" in email

    async def subscribe(self, page: PageRow, email: str) -> None:
        return None

    async def confirm(self, page: PageRow, token: str) -> None:
        return None

    async def unsubscribe(self, page: PageRow | None, token: str) -> None:
        return None
