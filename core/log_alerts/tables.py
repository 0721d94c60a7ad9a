"""The log alerts' tables: the alerts (with their evaluation schedule) and the
state of each group they count (its open incident, when it last fired)."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, ForeignKey, Index, Integer, String, Table, Text

from core.storage.tables import metadata
from core.storage.types import Id, UtcDateTime

# One row per log alert. The alert channels are kept as a monitor keeps them
# (``settings`` JSON holds alertEmail, ``secrets`` the sealed JSON of the
# secret channel fields, ``secret_fields`` which of those are set), so the
# outbox and the dispatcher read both alike.
log_alerts = Table(
    "log_alerts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("query", Text, nullable=False),
    Column("threshold", Integer, nullable=False),
    Column("window_sec", Integer, nullable=False),
    # "" (every matching record together) or "service".
    Column("group_by", String(16), nullable=False),
    Column("cooldown_sec", Integer, nullable=False),
    Column("paused", Boolean, nullable=False, default=False),
    Column("settings", Text, nullable=False),
    Column("secrets", Text, nullable=True),
    Column("secret_fields", Text, nullable=False, default="[]"),
    # The evaluation schedule: a process claims the alert's next round by
    # moving ``next_evaluation_at`` on and bumping ``evaluation_round``; its
    # decisions are written only while the round is still the one it claimed
    # (an edit or a later round makes an older one's count stale).
    Column("next_evaluation_at", UtcDateTime, nullable=False),
    Column("evaluation_round", Integer, nullable=False, default=0),
    Column("last_evaluated_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index(None, "org_id", "id"),
    Index(None, "next_evaluation_at"),
    sqlite_autoincrement=True,
)

# What each group of an alert last did: ``group_key`` is "" without grouping
# (and for records without a service when grouped by service), else the
# service. ``incident_id`` is the group's open incident (NULL when none, or
# once it resolved); ``last_triggered_at`` when the group last opened one
# (the cooldown runs from there).
log_alert_groups = Table(
    "log_alert_groups",
    metadata,
    Column("log_alert_id", Id, ForeignKey("log_alerts.id", ondelete="CASCADE"), primary_key=True),
    Column("group_key", String(512), primary_key=True),
    Column("incident_id", Id, nullable=True),
    Column("last_triggered_at", UtcDateTime, nullable=True),
)
