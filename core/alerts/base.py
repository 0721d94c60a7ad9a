"""What a channel is given and what it answers: the one interface between the alert dispatcher and the channels.

A channel turns one :class:`AlertMessage` into one attempt at one destination (its ``target``: a URL, an
address, a bot token and chat) and says how it went in a :class:`DeliveryOutcome`. It never raises for a
failed delivery and never retries by itself: whoever calls it (the outbox dispatcher, the test-alert route)
records the outcome and decides when to try again.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeVar

from core.config import Settings, SmtpSettings

EVENTS = ("incident.opened", "incident.acknowledged", "incident.resolved", "incident.reopened", "test")
# What only status-page subscribers are told (channel "subscriber"): a public update of an incident,
# maintenance notices, and the confirmation mail of a new subscription.
SUBSCRIBER_EVENTS = (
    "incident.updated",
    "maintenance.scheduled",
    "maintenance.updated",
    "maintenance.cancelled",
    "subscription.confirm",
)
Event = Literal[
    "incident.opened",
    "incident.acknowledged",
    "incident.resolved",
    "incident.reopened",
    "test",
    "incident.updated",
    "maintenance.scheduled",
    "maintenance.updated",
    "maintenance.cancelled",
    "subscription.confirm",
]
DEFAULT_TIMEOUT_SEC = 10.0  # CONTRACT.md: test alerts wait 10 s per channel; deliveries the same
TELEGRAM_API_URL = "https://api.telegram.org"


@dataclass(frozen=True, slots=True)
class AlertMessage:
    """One event to tell people about, the same for every channel.

    ``incident`` and ``monitor`` are the API's JSON projections (field names as REST shows them); ``incident``
    is None for a ``test`` event and ``monitor`` for a manual incident. ``id`` names the message across its
    attempts (the webhook's ``webhook-id``, so receivers can drop a repeat); ``timestamp`` is when the event
    happened. ``notice`` is what a status-page subscriber is told instead (``{"incident": …}`` or
    ``{"maintenance": …}``, public fields only; see :mod:`core.alerts.subscriber`); the other channels
    leave it None.
    """

    event: Event
    incident: Mapping[str, Any] | None
    monitor: Mapping[str, Any] | None
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))
    id: str = field(default_factory=lambda: f"msg_{uuid.uuid4().hex}")
    notice: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """How one attempt went.

    ``delivered``: the receiver took it (2xx, or the SMTP server accepted the mail). ``retry``: worth trying
    again later (network errors, timeouts, 408, 429, 5xx), after ``retry_after_sec`` if the receiver said so.
    ``failed``: trying again will not help (other answers, a target that is not allowed). ``error`` is one
    line for humans and never contains the target's URL or token: those are secrets.
    """

    outcome: Literal["delivered", "retry", "failed"]
    http_status: int | None = None
    error: str | None = None
    retry_after_sec: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "delivered"


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    """What every channel may need from the server's settings."""

    public_base: str = "http://127.0.0.1:8080"  # links in messages (OBSERVE_PUBLIC_URL)
    timeout_sec: float = DEFAULT_TIMEOUT_SEC  # one attempt, connect to answer
    allow_private: bool = False  # OBSERVE_ALLOW_PRIVATE_TARGETS, for the URLs users give
    telegram_api_url: str = TELEGRAM_API_URL  # OBSERVE_TELEGRAM_API_URL
    smtp: SmtpSettings = field(default_factory=SmtpSettings)

    @classmethod
    def from_settings(cls, settings: Settings) -> ChannelSettings:
        return cls(
            public_base=settings.public_base,
            allow_private=settings.allow_private_targets,
            telegram_api_url=settings.telegram_api_url,
            smtp=settings.smtp,
        )


TargetT_contra = TypeVar("TargetT_contra", contravariant=True)


class Channel(Protocol[TargetT_contra]):
    """One way of reaching people. ``target`` is the channel's own destination type (see each module)."""

    name: str

    async def send(self, message: AlertMessage, target: TargetT_contra) -> DeliveryOutcome:
        """One attempt within the channel's timeout; never raises for a delivery that did not happen."""
        ...
