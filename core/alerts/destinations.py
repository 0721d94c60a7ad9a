"""Where an alert goes: each channel's target, read from the monitor when the attempt is made.

The monitor keeps its alert URLs, bot token and chat id sealed (``monitors.secrets``); the webhook channel
also needs the org's ``whsec_`` secret (``orgs.webhook_secret``, sealed), which is made on first use just
as ``GET /me/webhook-secret`` makes it, so a receiver can verify with the secret that route shows.
The dispatcher and the test-alert route both resolve targets here.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update

from core import clock
from core.alerts.telegram import TelegramTarget
from core.alerts.webhook import WebhookTarget
from core.members.service import new_webhook_secret
from core.storage import tables as t
from core.storage.db import Database
from core.storage.sealing import Sealer

NOT_CONFIGURED = "channel no longer configured"


def target(channel: str, settings: Mapping[str, Any], webhook_secret: str | None) -> Any | None:
    """The ``channel``'s target from a monitor's opened settings; None when it is not configured."""
    if channel == "email":
        return settings.get("alertEmail") or None
    if channel == "slack":
        return settings.get("alertSlackUrl") or None
    if channel == "discord":
        return settings.get("alertDiscordUrl") or None
    if channel == "telegram":
        token, chat = settings.get("alertTelegramBotToken"), settings.get("alertTelegramChatId")
        return TelegramTarget(bot_token=str(token), chat_id=str(chat)) if token and chat else None
    if channel == "webhook":
        url = settings.get("alertWebhookUrl")
        return WebhookTarget(url=str(url), secret=webhook_secret) if url and webhook_secret else None
    return None


async def org_webhook_secret(db: Database, sealer: Sealer, org_id: int, sealed: str | None = None) -> str:
    """The org's webhook secret, opened; made (and stored) when the org has none yet.

    ``sealed`` is the column's value when the caller already read it. Two makers racing store one secret:
    the update only fills an empty column, and both then read what it holds. The write runs in its own
    transaction even inside a request's unit of work, so the sends that follow hold no write lock."""
    if sealed is not None:
        return sealer.open(sealed)

    async def make() -> str:
        async with db.write() as conn:
            await conn.execute(
                update(t.orgs)
                .where(t.orgs.c.id == org_id, t.orgs.c.webhook_secret.is_(None))
                .values(webhook_secret=sealer.seal(new_webhook_secret()), webhook_secret_created_at=clock.now())
            )
            stored = (await conn.execute(select(t.orgs.c.webhook_secret).where(t.orgs.c.id == org_id))).scalar_one()
        return sealer.open(stored)

    # A fresh context: no unit of work of the caller's (core.storage.db) takes this write in.
    return await asyncio.create_task(make(), context=contextvars.Context())
