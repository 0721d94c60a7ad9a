"""Log alerts as rows: the settings dict (API field names) to and from rows,
the merge a patch makes, the audit view and the public projection.

Alert channels are stored as a monitor stores them: ``alertEmail`` in the
``settings`` JSON, the secret channel fields sealed together in ``secrets``
and named in ``secret_fields``; :func:`channel_settings` opens them for the
alert dispatcher.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from observe.v1 import log_alerts_pb2
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core import clock
from core.incidents.tables import incidents
from core.log_alerts.tables import log_alert_groups, log_alerts
from core.rpc import patches
from core.storage.sealing import Sealer

Input = log_alerts_pb2.LogAlertInput
FIELDS = {fd.json_name: fd for fd in Input.DESCRIPTOR.fields}
# API field → column, for the fields that have one.
COLUMNS = {
    "name": "name",
    "query": "query",
    "threshold": "threshold",
    "windowSec": "window_sec",
    "groupBy": "group_by",
    "cooldownSec": "cooldown_sec",
    "paused": "paused",
}
SECRET_FIELDS = (
    "alertSlackUrl",
    "alertWebhookUrl",
    "alertDiscordUrl",
    "alertTelegramBotToken",
    "alertTelegramChatId",
)
DEFAULTS: dict[str, Any] = {"windowSec": 300, "cooldownSec": 300, "groupBy": "", "paused": False}
# A change to one of these makes the alert due at once (and its running round's count stale).
EVALUATION_FIELDS = frozenset({"query", "threshold", "windowSec", "groupBy", "paused"})


def present_fields(msg: Input, mask: Iterable[str] | None = None) -> dict[str, Any]:
    """The fields a create or patch gives (core.rpc.patches); an unset one is None, i.e. cleared."""
    return {fd.json_name: getattr(msg, fd.name) if given else None for fd, given in patches.given_fields(msg, mask)}


def unknown_mask_paths(mask: Iterable[str]) -> list[str]:
    return patches.unknown_mask_paths(Input.DESCRIPTOR, mask)


def merge(current: dict[str, Any] | None, given: dict[str, Any]) -> dict[str, Any]:
    """The alert after applying ``given`` to ``current`` (None on create): a
    field cleared with null falls back to its default or goes (a required
    one is then missing, for the proto's rule to report)."""
    merged = {**(current or {}), **given}
    for key, default in DEFAULTS.items():
        if merged.get(key) is None:
            merged[key] = default
    return {k: v for k, v in merged.items() if v is not None}


def as_input(m: dict[str, Any]) -> Input:
    """Settings as a LogAlertInput: what the validator re-checks and the
    audit log diffs (the proto marks the secret fields, so they show redacted)."""
    msg = Input()
    for key, value in m.items():
        if key in FIELDS and value is not None:
            setattr(msg, FIELDS[key].name, value)
    return msg


def channel_settings(settings_json: str, sealed: str | None, sealer: Sealer) -> dict[str, Any]:
    """The alert channel fields of a row's ``settings`` and ``secrets`` columns, secrets opened."""
    out: dict[str, Any] = json.loads(settings_json)
    if sealed:
        out.update(json.loads(sealer.open(sealed)))
    return out


class LogAlertStore:
    """Turns settings into rows and rows into messages."""

    def __init__(self, sealer: Sealer) -> None:
        self.sealer = sealer

    def row_values(self, m: dict[str, Any]) -> dict[str, Any]:
        secrets = {k: m[k] for k in SECRET_FIELDS if m.get(k)}
        rest = {k: v for k, v in m.items() if k not in COLUMNS and k not in SECRET_FIELDS}
        return {
            **{column: m[key] for key, column in COLUMNS.items()},
            "settings": json.dumps(rest, separators=(",", ":"), sort_keys=True),
            "secrets": self.sealer.seal(json.dumps(secrets, separators=(",", ":"))) if secrets else None,
            "secret_fields": json.dumps(sorted(secrets)),
        }

    def settings(self, row: Any) -> dict[str, Any]:
        """A row's alert in API field names, secrets opened."""
        m = channel_settings(row.settings, row.secrets, self.sealer)
        for key, column in COLUMNS.items():
            m[key] = getattr(row, column)
        m["paused"] = bool(m["paused"])
        return m

    async def insert(self, conn: AsyncConnection, org_id: int, m: dict[str, Any], now: datetime) -> int:
        alert_id: int = (
            await conn.execute(
                insert(log_alerts)
                .values(
                    org_id=org_id,
                    next_evaluation_at=now,
                    evaluation_round=0,
                    created_at=now,
                    updated_at=now,
                    **self.row_values(m),
                )
                .returning(log_alerts.c.id)
            )
        ).scalar_one()
        return alert_id

    async def update(self, conn: AsyncConnection, row: Any, m: dict[str, Any], now: datetime, *, due: bool) -> None:
        """Writes ``m``; ``due``: evaluate at once, and drop the result of a round under way."""
        values = self.row_values(m)
        if due:
            values.update(next_evaluation_at=now, evaluation_round=log_alerts.c.evaluation_round + 1)
        await conn.execute(update(log_alerts).where(log_alerts.c.id == row.id).values(updated_at=now, **values))

    def projection(self, row: Any, state: tuple[bool, datetime | None]) -> log_alerts_pb2.LogAlert:
        """The public projection (no secret values: has* flags); ``state`` is
        (firing, last triggered) from :func:`group_states`."""
        m: dict[str, Any] = json.loads(row.settings)
        secret = set(json.loads(row.secret_fields))
        firing, last_triggered = state
        out = log_alerts_pb2.LogAlert(
            id=row.id,
            name=row.name,
            query=row.query,
            threshold=row.threshold,
            window_sec=row.window_sec,
            group_by=row.group_by,
            cooldown_sec=row.cooldown_sec,
            paused=bool(row.paused),
            has_alert_email=bool(m.get("alertEmail")),
            has_alert_slack="alertSlackUrl" in secret,
            has_alert_webhook="alertWebhookUrl" in secret,
            has_alert_discord="alertDiscordUrl" in secret,
            has_alert_telegram="alertTelegramBotToken" in secret,
            firing=firing,
            created_at=clock.to_timestamp(row.created_at),
            updated_at=clock.to_timestamp(row.updated_at),
        )
        if m.get("alertEmail"):
            out.alert_email = m["alertEmail"]
        if last_triggered is not None:
            out.last_triggered_at.CopyFrom(clock.to_timestamp(last_triggered))
        if row.last_evaluated_at is not None:
            out.last_evaluated_at.CopyFrom(clock.to_timestamp(row.last_evaluated_at))
        return out


async def group_states(conn: AsyncConnection, alert_ids: list[int]) -> dict[int, tuple[bool, datetime | None]]:
    """Per alert: whether one of its groups has an open incident, and when a group last opened one."""
    out: dict[int, tuple[bool, datetime | None]] = {i: (False, None) for i in alert_ids}
    if not alert_ids:
        return out
    g = log_alert_groups.c
    open_incident = func.max(incidents.c.id).filter(incidents.c.resolved_at.is_(None))
    query = (
        select(g.log_alert_id, func.max(g.last_triggered_at), open_incident)
        .select_from(log_alert_groups.outerjoin(incidents, incidents.c.id == g.incident_id))
        .where(g.log_alert_id.in_(alert_ids))
        .group_by(g.log_alert_id)
    )
    for alert_id, last, open_id in (await conn.execute(query)).all():
        out[alert_id] = (open_id is not None, last)
    return out
