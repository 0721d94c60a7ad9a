"""The heartbeats' tables: every ping received, and what lateness needs."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, ForeignKey, Index, LargeBinary, SmallInteger, String, Table, Text

from core.storage.tables import metadata
from core.storage.types import Id, UtcDateTime

# One row per ping, kept for OBSERVE_CHECK_RETENTION_DAYS like check results.
# ``body`` holds the first 102,400 bytes; ``body_bytes`` the size received.
heartbeat_pings = Table(
    "heartbeat_pings",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("monitor_id", Id, ForeignKey("monitors.id", ondelete="CASCADE"), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("kind", String(8), nullable=False),  # success, start, fail, exit
    Column("exit_status", SmallInteger, nullable=True),
    Column("runtime_ms", BigInteger, nullable=True),
    Column("rid", String(36), nullable=True),
    Column("ip", String(64), nullable=False),
    Column("user_agent", String(512), nullable=False),
    Column("body_bytes", BigInteger, nullable=False),
    Column("body", LargeBinary, nullable=True),
    Index(None, "monitor_id", "id"),
    Index(None, "at"),
    sqlite_autoincrement=True,
)

# Per heartbeat monitor: what the lateness watcher needs. The status itself
# is monitor_state's, as for checked monitors. ``deadline_at`` is when the
# monitor goes down if nothing arrives first (null: nothing is awaited, e.g.
# pending, down, paused); ``deadline_reason`` says why it would ("late": no
# success in time, "start": a start not ended within the grace).
# ``open_starts`` is a JSON object of the starts not ended yet, by run id
# ("" for none): {rid: ISO time}.
heartbeat_state = Table(
    "heartbeat_state",
    metadata,
    Column("monitor_id", Id, ForeignKey("monitors.id", ondelete="CASCADE"), primary_key=True),
    Column("org_id", Id, nullable=False),
    Column("last_ping_at", UtcDateTime, nullable=True),
    Column("last_success_at", UtcDateTime, nullable=True),
    # What the schedule counts from: the last success, or a resume after it.
    Column("counts_from", UtcDateTime, nullable=True),
    Column("open_starts", Text, nullable=False, default="{}"),
    Column("deadline_at", UtcDateTime, nullable=True),
    Column("deadline_reason", String(8), nullable=True),
    Index(None, "deadline_at"),
)
