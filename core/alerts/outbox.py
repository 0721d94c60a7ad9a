"""The alert outbox: alerts to send, written in the transaction that changes
the incident, so a crash can lose neither the change nor its alerts.

:func:`enqueue` writes one ``alert_outbox`` row per channel the monitor (or
the log alert, :mod:`core.log_alerts`) has configured; the dispatcher
(:mod:`core.alerts.dispatcher`) sends them. The destination (URL, address,
bot token) is not copied here: the dispatcher reads it from the monitor or
log alert, sealed as it is stored, when it makes the attempt.
:func:`enqueue_subscribers` writes one row per status-page subscriber
(channel ``subscriber``): the row names the subscriber, never its address.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from core.incidents.tables import alert_outbox
from core.log_alerts.tables import log_alerts
from core.storage import tables as t

# Channel → the monitor setting that turns it on (secret ones are listed in
# monitors.secret_fields; alertEmail is a plain setting).
CHANNEL_FIELDS = {
    "email": "alertEmail",
    "slack": "alertSlackUrl",
    "discord": "alertDiscordUrl",
    "telegram": "alertTelegramBotToken",
    "webhook": "alertWebhookUrl",
}


def configured_channels(settings_json: str, secret_fields_json: str) -> list[str]:
    """The channels a monitor row has configured, from its ``settings`` and ``secret_fields`` columns."""
    settings: dict[str, Any] = json.loads(settings_json)
    secret = set(json.loads(secret_fields_json))
    out = []
    for channel, key in CHANNEL_FIELDS.items():
        if settings.get(key) or key in secret:
            out.append(channel)
    return out


async def enqueue(
    conn: AsyncConnection,
    *,
    org_id: int,
    monitor_id: int | None,
    incident_id: int | None,
    event: str,
    payload: Mapping[str, Any],
    now: datetime,
    log_alert_id: int | None = None,
) -> int:
    """Queues ``event`` for every channel of the monitor (or, without one, of
    the log alert), due now; returns the number of rows written (0 without
    either, or without channels). ``payload`` is ``{"incident": …, "monitor":
    …}`` in REST JSON, as of the event. The caller commits, then wakes the
    dispatcher."""
    owner = t.monitors if monitor_id is not None else log_alerts
    owner_id = monitor_id if monitor_id is not None else log_alert_id
    if owner_id is None:
        return 0
    row = (
        await conn.execute(
            select(owner.c.settings, owner.c.secret_fields).where(owner.c.id == owner_id, owner.c.org_id == org_id)
        )
    ).one_or_none()
    if row is None:
        return 0
    channels = configured_channels(row.settings, row.secret_fields)
    if not channels:
        return 0
    base = _row(org_id, incident_id, event, payload, now, now)
    names = {"monitor_id": monitor_id, "log_alert_id": log_alert_id if monitor_id is None else None}
    await conn.execute(insert(alert_outbox), [{**base, **names, "channel": c} for c in channels])
    return len(channels)


async def enqueue_subscribers(
    conn: AsyncConnection,
    *,
    org_id: int,
    subscriber_ids: Sequence[int],
    incident_id: int | None,
    event: str,
    notice: Mapping[str, Any],
    now: datetime,
    delay: timedelta = timedelta(0),
) -> int:
    """Queues a mail to each of ``subscriber_ids`` (status-page subscribers of the org), created
    ``now`` and due ``delay`` later; returns the number of rows written. ``notice`` is what they are
    told, public fields only (:mod:`core.alerts.subscriber`). The caller commits, then wakes the
    dispatcher."""
    if not subscriber_ids:
        return 0
    base = _row(org_id, incident_id, event, {"notice": notice}, now, now + delay)
    await conn.execute(
        insert(alert_outbox), [{**base, "channel": "subscriber", "subscriber_id": s} for s in subscriber_ids]
    )
    return len(subscriber_ids)


def _row(
    org_id: int, incident_id: int | None, event: str, payload: Mapping[str, Any], now: datetime, due: datetime
) -> dict[str, Any]:
    """An outbox row's columns but the channel and its destination (monitor or subscriber)."""
    return {
        "org_id": org_id,
        "incident_id": incident_id,
        "event": event,
        "payload": json.dumps(payload, separators=(",", ":")),
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": due,
        "created_at": now,
    }
