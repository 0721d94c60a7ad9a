"""The maintenance windows' table."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, ForeignKey, Index, String, Table, Text

from core.storage.tables import metadata
from core.storage.types import Id, UtcDateTime

# A window: its first occurrence, an optional RRULE repeating it in
# ``timezone``, and what it covers (JSON lists of monitor ids and tags, or
# every monitor of the org).
maintenance_windows = Table(
    "maintenance_windows",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=True),
    Column("starts_at", UtcDateTime, nullable=False),
    Column("ends_at", UtcDateTime, nullable=False),
    Column("rrule", String(500), nullable=True),
    Column("timezone", String(64), nullable=False),
    Column("monitor_ids", Text, nullable=False),
    Column("tags", Text, nullable=False),
    Column("all_monitors", Boolean, nullable=False, default=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index(None, "org_id", "id"),
    sqlite_autoincrement=True,
)
