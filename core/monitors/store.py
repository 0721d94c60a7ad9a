"""Monitors as rows: sealing the secret fields, the public projection, the
audit view, and the inserts/updates a create, patch or bulk call makes."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format, struct_pb2
from observe.v1 import monitors_pb2
from sqlalchemy import Select, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core import clock
from core.heartbeats.tables import heartbeat_state
from core.monitors import validation as val
from core.rpc.jsonmap import enum_json_names
from core.storage import tables as t
from core.storage.sealing import Sealer
from core.tokens import secrets as token_secrets

if TYPE_CHECKING:
    from core.maintenance.calendar import MaintenanceCalendar

COLUMNS = {"name": "name", "type": "type", "intervalSec": "interval_sec", "timeoutMs": "timeout_ms", "paused": "paused"}
STATUS_NUMBERS = {name: number for number, name in enum_json_names(monitors_pb2.MonitorStatus.DESCRIPTOR).items()}
HEARTBEAT_PREFIX = "hb_"
# Settings shown as they are when set (null otherwise) in the projection.
_OPTIONAL_SHOWN = ("url", "host", "port", "method", "body", "maxRedirects", "keyword", "dnsRecordType", "dnsResolver",
                   "expectedValue", "tlsExpiryDays", "graceSec", "cron", "timezone", "alertEmail")  # fmt: skip

# lastCheckedAt: a heartbeat monitor's last ping (heartbeat_state), else its last check.
SELECT = (
    select(
        t.monitors,
        t.monitor_state.c.status,
        func.coalesce(heartbeat_state.c.last_ping_at, t.monitor_state.c.last_checked_at).label("last_checked_at"),
    )
    .outerjoin(t.monitor_state, t.monitor_state.c.monitor_id == t.monitors.c.id)
    .outerjoin(heartbeat_state, heartbeat_state.c.monitor_id == t.monitors.c.id)
)


def tagged(org_id: int, tags: list[str]) -> Select[tuple[int]]:
    """Ids of the org's monitors holding every one of ``tags`` (distinct).

    One scan of the covering index (org_id, tag, monitor_id) whatever the
    number of tags: the monitors holding them all are those with as many
    matching rows. (A subquery per tag made PostgreSQL plan a join of them
    all: seconds at 200 tags.)"""
    c = t.monitor_tags.c
    return (
        select(c.monitor_id)
        .where(c.org_id == org_id, c.tag.in_(tags))
        .group_by(c.monitor_id)
        .having(func.count() == len(tags))
    )


def shown_status(
    paused: bool, status: str | None, org_id: int | None, monitor_id: int, calendar: MaintenanceCalendar | None
) -> str:
    """The status a monitor shows: paused, maintenance while a window covers it
    (with a calendar and the org known), else its checked status, or pending
    before the first result."""
    if paused:
        return "paused"
    if calendar is not None and org_id is not None and calendar.covered_now(org_id, monitor_id):
        return "maintenance"
    return status or "pending"


class MonitorStore:
    """Turns the settings dict (API field names) into rows and rows into messages."""

    # Covered monitors show "maintenance" (core/app.py sets it; None: never).
    calendar: MaintenanceCalendar | None = None

    def __init__(self, sealer: Sealer, public_url: str) -> None:
        self.sealer = sealer
        self.public_url = public_url

    # ---- rows ------------------------------------------------------------

    def row_values(self, m: dict[str, Any]) -> dict[str, Any]:
        """Column values for settings ``m`` (secret fields sealed)."""
        secrets = {k: m[k] for k in val.SECRET_FIELDS if m.get(k) not in (None, {}, "")}
        rest = {k: v for k, v in m.items() if k not in COLUMNS and k not in secrets}
        return {
            "name": m["name"],
            "type": m["type"],
            "interval_sec": m["intervalSec"],
            "timeout_ms": m["timeoutMs"],
            "paused": bool(m.get("paused")),
            "settings": json.dumps(rest, separators=(",", ":"), sort_keys=True),
            "secrets": self.sealer.seal(json.dumps(secrets, separators=(",", ":"))) if secrets else None,
            "secret_fields": json.dumps(sorted(secrets)),
        }

    def settings(self, row: Any) -> dict[str, Any]:
        """The full settings of a row, secrets opened."""
        m: dict[str, Any] = json.loads(row.settings)
        for key, column in COLUMNS.items():
            m[key] = getattr(row, column)
        m["paused"] = bool(m["paused"])
        if row.secrets:
            m.update(json.loads(self.sealer.open(row.secrets)))
        return m

    def new_heartbeat_token(self) -> tuple[str, str, str]:
        """(plaintext, hash, sealed) of a fresh heartbeat token."""
        token = token_secrets.new_token(HEARTBEAT_PREFIX)
        return token, token_secrets.token_hash(token), self.sealer.seal(token)

    async def insert(self, conn: AsyncConnection, org_id: int, m: dict[str, Any], now: datetime) -> int:
        _, token_hash, sealed = self.new_heartbeat_token()
        monitor_id: int = (
            await conn.execute(
                insert(t.monitors)
                .values(
                    org_id=org_id,
                    heartbeat_token_hash=token_hash,
                    heartbeat_token=sealed,
                    version=1,
                    created_at=now,
                    updated_at=now,
                    **self.row_values(m),
                )
                .returning(t.monitors.c.id)
            )
        ).scalar_one()
        await conn.execute(
            insert(t.monitor_state).values(
                monitor_id=monitor_id, org_id=org_id, status="pending", consecutive_ok=0, consecutive_fail=0
            )
        )
        await self._write_tags(conn, org_id, monitor_id, m["tags"])
        return monitor_id

    async def update(self, conn: AsyncConnection, row: Any, m: dict[str, Any], now: datetime) -> None:
        await conn.execute(
            update(t.monitors)
            .where(t.monitors.c.id == row.id)
            .values(version=t.monitors.c.version + 1, updated_at=now, **self.row_values(m))
        )
        if m["tags"] != json.loads(row.settings).get("tags", []):
            await conn.execute(delete(t.monitor_tags).where(t.monitor_tags.c.monitor_id == row.id))
            await self._write_tags(conn, row.org_id, row.id, m["tags"])

    async def _write_tags(self, conn: AsyncConnection, org_id: int, monitor_id: int, tags: list[str]) -> None:
        if tags:
            await conn.execute(
                insert(t.monitor_tags), [{"monitor_id": monitor_id, "org_id": org_id, "tag": tag} for tag in tags]
            )

    # ---- messages ----------------------------------------------------------

    def projection(self, row: Any) -> monitors_pb2.Monitor:
        """The public projection: no secret values, has* flags instead."""
        m: dict[str, Any] = json.loads(row.settings)
        set_secrets = set(json.loads(row.secret_fields))
        status = shown_status(
            row.paused, getattr(row, "status", None), getattr(row, "org_id", None), row.id, self.calendar
        )
        out = monitors_pb2.Monitor(
            id=row.id,
            name=row.name,
            type=val.TYPE_NUMBERS[row.type],  # type: ignore[arg-type]
            interval_sec=row.interval_sec,
            timeout_ms=row.timeout_ms,
            paused=bool(row.paused),
            status=STATUS_NUMBERS[status],  # type: ignore[arg-type]
            created_at=clock.to_timestamp(row.created_at),
            updated_at=clock.to_timestamp(row.updated_at),
            tags=m.get("tags", []),
            regions=[val.REGION_NUMBERS[r] for r in m.get("regions", ["local"])],  # type: ignore[misc]
            failure_threshold=m["failureThreshold"],
            recovery_threshold=m["recoveryThreshold"],
            public_badge=bool(m.get("publicBadge")),
            ignore_tls_errors=bool(m.get("ignoreTlsErrors")),
            keyword_inverted=bool(m.get("keywordInverted")),
            has_alert_email=bool(m.get("alertEmail")),
            has_alert_slack="alertSlackUrl" in set_secrets,
            has_alert_webhook="alertWebhookUrl" in set_secrets,
            has_alert_discord="alertDiscordUrl" in set_secrets,
            has_alert_telegram="alertTelegramBotToken" in set_secrets,
            has_headers="headers" in set_secrets,
            alert_repeat_interval_min=m.get("alertRepeatIntervalMin", 0),
        )
        last = getattr(row, "last_checked_at", None)
        if last is not None:
            out.last_checked_at.CopyFrom(clock.to_precise_timestamp(last))
        for key in _OPTIONAL_SHOWN:
            if key in m:
                setattr(out, val.FIELDS[key].name, m[key])
        if "expectedStatus" in m:
            json_format.ParseDict(m["expectedStatus"], out.expected_status)
        return out

    def input_view(self, m: dict[str, Any]) -> monitors_pb2.MonitorInput:
        """All settings (secrets included) as a MonitorInput: what the audit
        log diffs; the proto marks the secret fields, so they show redacted."""
        return val.as_input(m)

    def secrets_message(self, row: Any, m: dict[str, Any]) -> monitors_pb2.MonitorSecrets:
        out = monitors_pb2.MonitorSecrets(id=row.id, headers=m.get("headers", {}))
        for key in ("alertSlackUrl", "alertWebhookUrl", "alertDiscordUrl", "alertTelegramBotToken",
                    "alertTelegramChatId"):  # fmt: skip
            if m.get(key):
                setattr(out, val.FIELDS[key].name, m[key])
        if row.type == "heartbeat":
            token = self.sealer.open(row.heartbeat_token)
            out.heartbeat_token = token
            out.heartbeat_url = f"{self.public_url}/api/v1/heartbeats/{token}"
        return out


def _to_value(value: Any) -> struct_pb2.Value:
    out = struct_pb2.Value()
    json_format.ParseDict(value, out)
    return out
