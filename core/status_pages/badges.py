"""PLACEHOLDER (helper D replaces this file): monitor badges."""

from __future__ import annotations

from core.storage.db import Database


class Badges:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def render(self, monitor_id: int, *, metric: str, period: str, label: str | None, style: str) -> bytes | None:
        return None
