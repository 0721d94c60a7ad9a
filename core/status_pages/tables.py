"""The status pages' tables."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint

from core.storage.tables import metadata
from core.storage.types import Id, UtcDateTime

# A page. ``groups`` is the JSON of its groups as written ([{name,
# components: [{monitorId, displayName?}]}]); ``status_page_monitors`` indexes
# the monitors it shows, so a monitor's delete drops it from every page.
status_pages = Table(
    "status_pages",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("slug", String(63), nullable=False, unique=True),
    Column("description", Text, nullable=True),
    Column("custom_domain", String(253), nullable=True, unique=True),
    Column("published", Boolean, nullable=False, default=True),
    Column("groups", Text, nullable=False),
    Column("history_days", Integer, nullable=False, default=90),
    Column("show_maintenance", Boolean, nullable=False, default=True),
    Column("accent_color", String(7), nullable=True),
    # Argon2id hash; null: the page is open.
    Column("password_hash", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index(None, "org_id", "id"),
    sqlite_autoincrement=True,
)

# The monitors a page shows (one row per page and monitor).
status_page_monitors = Table(
    "status_page_monitors",
    metadata,
    Column("page_id", Id, ForeignKey("status_pages.id", ondelete="CASCADE"), primary_key=True),
    Column("monitor_id", Id, ForeignKey("monitors.id", ondelete="CASCADE"), primary_key=True),
    Index(None, "monitor_id"),
)

# E-mail subscribers: pending until the address confirms (double opt-in).
# An unsubscribe deletes the row; ids are never reused, so the signed links
# of a deleted subscriber never work again.
status_page_subscribers = Table(
    "status_page_subscribers",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("page_id", Id, ForeignKey("status_pages.id", ondelete="CASCADE"), nullable=False),
    Column("org_id", Id, nullable=False),
    Column("email", String(254), nullable=False),
    Column("confirmed", Boolean, nullable=False, default=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("confirmed_at", UtcDateTime, nullable=True),
    UniqueConstraint("page_id", "email"),
    sqlite_autoincrement=True,
)
