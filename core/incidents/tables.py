"""The incidents' tables: incidents with their timeline, the alert outbox and
its delivery records, maintenance suppressions and the event cursor."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, ForeignKey, Index, Integer, String, Table, Text

from core.storage.tables import metadata
from core.storage.types import Id, UtcDateTime

# One row per incident. A monitor's incidents go with the monitor (its
# history); ``resolved_at`` NULL means open, and the engine keeps one open
# incident per monitor.
incidents = Table(
    "incidents",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("monitor_id", Id, ForeignKey("monitors.id", ondelete="CASCADE"), nullable=True),
    # The log alert that opened it (core.log_alerts). No foreign key: the
    # incident outlives its alert and keeps naming it (ids are never reused).
    Column("log_alert_id", Id, nullable=True),
    Column("title", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    # Opened by a monitor going down (not by hand): recovery resolves it.
    Column("automatic", Boolean, nullable=False, default=False),
    # JSON {reason, statusCode, error, regions}; NULL for manual incidents.
    Column("cause", Text, nullable=True),
    Column("started_at", UtcDateTime, nullable=False),
    Column("resolved_at", UtcDateTime, nullable=True),
    # Resolved by the monitor's recovery: down again within the reopen
    # window reopens this incident instead of opening another.
    Column("auto_resolved", Boolean, nullable=False, default=False),
    Column("acknowledged_at", UtcDateTime, nullable=True),
    Column("ack_user_id", Id, nullable=True),
    Column("ack_pat_id", Id, nullable=True),
    Column("postmortem", Text, nullable=True),
    Column("postmortem_updated_at", UtcDateTime, nullable=True),
    # When the down alert repeats next (alertRepeatIntervalMin); NULL: never.
    Column("next_repeat_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index(None, "org_id", "id"),
    Index(None, "monitor_id", "id"),
    Index(None, "log_alert_id", "id"),
    Index(None, "next_repeat_at"),
    Index(None, "updated_at"),  # the status pages' change watcher reads its maximum every second
    sqlite_autoincrement=True,
)

# The public timeline.
incident_updates = Table(
    "incident_updates",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("incident_id", Id, ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Column("author_user_id", Id, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Index(None, "incident_id", "id"),
    sqlite_autoincrement=True,
)

# Alerts to send: written in the transaction that changes the incident, one
# row per (event, channel), drained by the dispatcher. The destination is
# read from the monitor (or log alert) when the attempt is made; ``payload`` is the message
# as of the event (JSON {incident, monitor}, public projections).
alert_outbox = Table(
    "alert_outbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("incident_id", Id, ForeignKey("incidents.id", ondelete="CASCADE"), nullable=True),
    Column("monitor_id", Id, ForeignKey("monitors.id", ondelete="CASCADE"), nullable=True),
    # A log alert's channels (read from log_alerts at send time, as a
    # monitor's are); no foreign key: rows of a deleted alert fail as "no
    # longer configured" and keep their delivery records.
    Column("log_alert_id", Id, nullable=True),
    # A status-page subscriber's mail (channel "subscriber"); null otherwise.
    Column("subscriber_id", Id, ForeignKey("status_page_subscribers.id", ondelete="CASCADE"), nullable=True),
    Column("event", String(32), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("payload", Text, nullable=False),
    # pending → delivered | failed
    Column("state", String(12), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    # A dispatcher's claim: others leave the row alone until it lapses.
    Column("claimed_by", String(64), nullable=True),
    Column("claimed_until", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("done_at", UtcDateTime, nullable=True),
    Index(None, "state", "next_attempt_at"),
    Index(None, "incident_id"),
    Index(None, "subscriber_id"),
    sqlite_autoincrement=True,
)

# One row per delivery attempt (GET /incidents/:id shows them).
alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("outbox_id", Id, ForeignKey("alert_outbox.id", ondelete="CASCADE"), nullable=False),
    Column("incident_id", Id, ForeignKey("incidents.id", ondelete="CASCADE"), nullable=True),
    Column("org_id", Id, nullable=False),
    Column("channel", String(16), nullable=False),
    Column("event", String(32), nullable=False),
    Column("attempt", Integer, nullable=False),
    # delivered | failed | retrying
    Column("outcome", String(12), nullable=False),
    Column("http_status", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("at", UtcDateTime, nullable=False),
    Index(None, "incident_id", "id"),
    Index(None, "outbox_id"),
    sqlite_autoincrement=True,
)

# A monitor that went down inside a maintenance window: no incident then;
# if it is still down when no window covers it any more, one opens.
incident_suppressions = Table(
    "incident_suppressions",
    metadata,
    Column("monitor_id", Id, ForeignKey("monitors.id", ondelete="CASCADE"), primary_key=True),
    Column("org_id", Id, nullable=False),
    Column("since", UtcDateTime, nullable=False),
    # The down event's cause, JSON as incidents.cause.
    Column("cause", Text, nullable=True),
)

# How far each consumer has read monitor_events (the incident engine: name
# "incidents"). Its row is also the engine's lock across processes.
event_cursors = Table(
    "event_cursors",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("last_event_id", Id, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)
