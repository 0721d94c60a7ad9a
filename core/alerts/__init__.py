"""Alert channels: each way of reaching people, one module each behind :class:`core.alerts.base.Channel`.

A channel makes one attempt to deliver one :class:`~core.alerts.base.AlertMessage` to one target and
answers a :class:`~core.alerts.base.DeliveryOutcome`; it never retries. Adding a channel is a module here
plus its line in :func:`channels`. Targets, by channel:

- ``email``: the recipient's address (:mod:`core.alerts.email`)
- ``slack``, ``discord``: the incoming-webhook URL (:mod:`core.alerts.slack`, :mod:`core.alerts.discord`)
- ``telegram``: :class:`~core.alerts.telegram.TelegramTarget` (bot token, chat id)
- ``webhook``: :class:`~core.alerts.webhook.WebhookTarget` (URL, the org's ``whsec_`` secret)
- ``subscriber``: :class:`~core.alerts.subscriber.SubscriberTarget` (a status page's e-mail subscriber)
"""

from __future__ import annotations

from typing import Any

from core.alerts.base import AlertMessage, Channel, ChannelSettings, DeliveryOutcome
from core.alerts.discord import DiscordChannel
from core.alerts.email import EmailChannel
from core.alerts.slack import SlackChannel
from core.alerts.subscriber import SubscriberChannel
from core.alerts.telegram import TelegramChannel, TelegramTarget
from core.alerts.webhook import WebhookChannel, WebhookTarget

__all__ = [
    "AlertMessage",
    "Channel",
    "ChannelSettings",
    "DeliveryOutcome",
    "TelegramTarget",
    "WebhookTarget",
    "channels",
]


def channels(settings: ChannelSettings) -> dict[str, Channel[Any]]:
    """Every channel, by name, sharing ``settings``."""
    made: list[Channel[Any]] = [
        EmailChannel(settings),
        SlackChannel(settings),
        DiscordChannel(settings),
        TelegramChannel(settings),
        WebhookChannel(settings),
        SubscriberChannel(settings),
    ]
    return {channel.name: channel for channel in made}
