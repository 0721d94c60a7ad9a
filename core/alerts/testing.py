"""Test alerts (``POST /monitors/:id/test-alert``): one attempt per configured channel, all at once.

Nothing goes through the outbox and nothing is retried: the caller wants to know now whether each channel
works. Each attempt keeps to the channel timeout (10 s), so the reply comes within about that.
"""

from __future__ import annotations

import asyncio
from typing import Any

from observe.v1 import monitors_pb2
from sqlalchemy import select

from core.alerts import AlertMessage, ChannelSettings, DeliveryOutcome, channels
from core.alerts import destinations as dest
from core.alerts.outbox import configured_channels
from core.monitors.store import MonitorStore
from core.rpc.jsonmap import JsonCodec
from core.storage import tables as t
from core.storage.db import Database

_codec = JsonCodec()


async def send_test_alert(
    db: Database, store: MonitorStore, settings: ChannelSettings, row: Any
) -> list[monitors_pb2.TestAlertResult]:
    """Sends a ``test`` event for the monitor ``row`` (a monitors row) to each of its channels."""
    names = configured_channels(row.settings, row.secret_fields)
    if not names:
        return []
    opened = store.settings(row)
    secret = None
    if "webhook" in names:
        async with db.read() as conn:
            sealed = (await conn.execute(select(t.orgs.c.webhook_secret).where(t.orgs.c.id == row.org_id))).scalar()
        secret = await dest.org_webhook_secret(db, store.sealer, row.org_id, sealed)
    message = AlertMessage(event="test", incident=None, monitor=_codec.encode(store.projection(row)))
    by_name = channels(settings)

    async def one(name: str) -> monitors_pb2.TestAlertResult:
        target = dest.target(name, opened, secret)
        if target is None:
            outcome = DeliveryOutcome("failed", error="the channel is not fully configured")
        else:
            try:
                async with asyncio.timeout(settings.timeout_sec + 1):
                    outcome = await by_name[name].send(message, target)
            except TimeoutError:
                outcome = DeliveryOutcome("retry", error=f"no answer within {settings.timeout_sec:g} s")
        result = monitors_pb2.TestAlertResult(channel=name, ok=outcome.ok)
        if outcome.http_status is not None:
            result.http_status = outcome.http_status
        if not outcome.ok and outcome.error:
            result.error = outcome.error
        return result

    return list(await asyncio.gather(*(one(name) for name in names)))
