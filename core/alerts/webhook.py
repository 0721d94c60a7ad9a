"""Generic webhooks, as Standard Webhooks specifies: ``POST <URL> {type, timestamp, data: {incident, monitor}}``
with ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` signed with the org's ``whsec_`` secret.

The target carries the URL and the org secret, opened (core.members keeps it sealed in ``orgs``). The
signature is made per attempt, so its timestamp is the send time and a receiver's five-minute tolerance
holds for retries; the ``webhook-id`` stays the message's, so a receiver can drop a repeat.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from standardwebhooks import Webhook

from core.alerts import posting
from core.alerts.base import AlertMessage, ChannelSettings, DeliveryOutcome


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    url: str
    secret: str  # whsec_…


class WebhookChannel:
    name = "webhook"

    def __init__(self, settings: ChannelSettings) -> None:
        self.settings = settings

    async def send(self, message: AlertMessage, target: WebhookTarget) -> DeliveryOutcome:
        body = json.dumps(payload(message))
        now = datetime.now(UTC)
        signature = Webhook(target.secret).sign(message.id, now, body)
        headers = [
            ("webhook-id", message.id),
            ("webhook-timestamp", str(int(now.timestamp()))),
            ("webhook-signature", signature),
        ]
        return await posting.post(
            target.url,
            body.encode(),
            headers=headers,
            timeout=self.settings.timeout_sec,
            allow_private=self.settings.allow_private,
        )


def payload(message: AlertMessage) -> dict[str, object]:
    return {
        "type": message.event,
        "timestamp": message.timestamp.isoformat().replace("+00:00", "Z"),
        "data": {
            "incident": dict(message.incident) if message.incident is not None else None,
            "monitor": dict(message.monitor) if message.monitor is not None else None,
        },
    }
