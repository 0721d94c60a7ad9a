"""Telegram Bot API: ``POST {OBSERVE_TELEGRAM_API_URL}/bot<token>/sendMessage {chat_id, text}``.

The base URL is the operator's (api.telegram.org, or a self-hosted Bot API server that may well run on a
private address), so it is trusted like the SMTP host: the target policy does not apply to it. The bot
token is a secret and sits in the path, so nothing here ever words an error with the URL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from core.alerts import posting
from core.alerts.base import AlertMessage, ChannelSettings, DeliveryOutcome
from core.alerts.messages import render

TEXT_LIMIT = 4096  # Telegram's limit for one message


@dataclass(frozen=True, slots=True)
class TelegramTarget:
    bot_token: str
    chat_id: str


class TelegramChannel:
    name = "telegram"

    def __init__(self, settings: ChannelSettings) -> None:
        self.settings = settings

    async def send(self, message: AlertMessage, target: TelegramTarget) -> DeliveryOutcome:
        rendered = render(message, public_base=self.settings.public_base)
        body = {"chat_id": target.chat_id, "text": rendered.text[:TEXT_LIMIT], "disable_web_page_preview": True}
        return await posting.post(
            f"{self.settings.telegram_api_url.rstrip('/')}/bot{target.bot_token}/sendMessage",
            json.dumps(body).encode(),
            timeout=self.settings.timeout_sec,
            allow_private=True,
        )
