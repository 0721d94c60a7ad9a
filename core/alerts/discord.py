"""Discord webhooks: ``POST <webhook URL> {content, embeds}``. The target is the webhook URL (a secret)."""

from __future__ import annotations

from core.alerts import posting
from core.alerts.base import AlertMessage
from core.alerts.messages import render

_COLORS = {
    "incident.opened": 0xD93025,
    "incident.reopened": 0xD93025,
    "incident.acknowledged": 0xF9AB00,
    "incident.resolved": 0x188038,
    "test": 0x1A73E8,
}


class DiscordChannel(posting.HookChannel):
    name = "discord"

    def payload(self, message: AlertMessage) -> dict[str, object]:
        return payload(message, public_base=self.settings.public_base)


def payload(message: AlertMessage, *, public_base: str) -> dict[str, object]:
    rendered = render(message, public_base=public_base)
    body = rendered.text.removeprefix(rendered.subject).strip()
    return {
        "content": rendered.subject[:2000],
        "embeds": [
            {
                "title": rendered.subject[:256],
                "description": body[:4096],
                "url": rendered.link,
                "color": _COLORS[message.event],
                "timestamp": message.timestamp.isoformat(),
            }
        ],
        # A monitor named "@everyone" must not ping anyone.
        "allowed_mentions": {"parse": []},
    }
