"""Where an alert goes: each channel's target, read from the monitor when the attempt is made.

The monitor keeps its alert URLs, bot token and chat id sealed (``monitors.secrets``); the webhook channel
also needs the org's ``whsec_`` secret (``orgs.webhook_secret``, sealed), which is made on first use just
as ``GET /me/webhook-secret`` makes it, so a receiver can verify with the secret that route shows.
The dispatcher and the test-alert route both resolve targets here; a status-page subscriber's (the
address, the page, the signed links) is made from the subscriber's row instead.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update

from core import clock
from core.alerts.subscriber import SubscriberTarget
from core.alerts.telegram import TelegramTarget
from core.alerts.webhook import WebhookTarget
from core.members.service import new_webhook_secret
from core.status_pages.access import PageTokens
from core.storage import tables as t
from core.storage.db import Database
from core.storage.sealing import Sealer

NOT_CONFIGURED = "channel no longer configured"
CONFIRM_EVENT = "subscription.confirm"


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


def subscriber_target(row: Any, tokens: PageTokens, public_base: str) -> SubscriberTarget | str:
    """A status-page subscriber's target from an outbox row joined with its subscriber and page
    (``subscriber_email``, ``subscriber_confirmed``, ``page_name``, ``page_slug``, ``page_published``), with
    the subscription's signed links; or why nothing may be sent (a str)."""
    if row.subscriber_email is None or row.page_slug is None:
        return "the subscriber is gone"
    if not row.page_published:
        return "the status page is not published"
    confirming = row.event == CONFIRM_EVENT
    if not confirming and not row.subscriber_confirmed:
        return "the subscription is not confirmed"
    page_url = f"{public_base.rstrip('/')}/status/{row.page_slug}"
    sid = int(row.subscriber_id)
    return SubscriberTarget(
        email=row.subscriber_email,
        page_name=row.page_name,
        page_url=page_url,
        unsubscribe_url=f"{page_url}/unsubscribe?token={tokens.unsubscribe_token(sid)}",
        confirm_url=f"{page_url}/subscribe/confirm?token={tokens.confirm_token(sid)}" if confirming else None,
    )


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
