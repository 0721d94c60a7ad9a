"""The schema, as SQLAlchemy Core tables. Migrations in ``migrations/`` create it.

Ids are never reused, also after deletes and across organisations: every table
whose integer key the database generates is ``sqlite_autoincrement`` (on
PostgreSQL a sequence never goes back anyway). A new such table needs it too;
tests/test_schema.py checks.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from core.storage.types import Id, UtcDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

users = Table(
    "users",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(100), nullable=False, default=""),
    # Argon2id PHC string; null for accounts made without a password.
    Column("password_hash", String(255), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    sqlite_autoincrement=True,
)

orgs = Table(
    "orgs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("plan", String(50), nullable=False, default="unlimited"),
    Column("created_at", UtcDateTime, nullable=False),
    # Standard Webhooks signing secret, sealed with the server key.
    Column("webhook_secret", Text, nullable=True),
    Column("webhook_secret_created_at", UtcDateTime, nullable=True),
    sqlite_autoincrement=True,
)

# A user belongs to one organisation (unique user_id).
memberships = Table(
    "memberships",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index(None, "org_id"),
    sqlite_autoincrement=True,
)

# PATs (kind "pat", obs_…) and login sessions (kind "session", obss_…).
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("name", String(100), nullable=False),
    Column("prefix", String(16), nullable=False),
    # SHA-256 of the plaintext, hex. The plaintext is never stored.
    Column("token_hash", String(64), nullable=False, unique=True),
    # JSON array of scope strings.
    Column("scopes", Text, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("daily_mutation_limit", BigInteger, nullable=True),
    Column("daily_log_bytes_limit", BigInteger, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_used_at", UtcDateTime, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
    Index(None, "user_id", "kind"),
    sqlite_autoincrement=True,
)

# Per-token usage for one UTC day: what daily caps count against.
token_usage = Table(
    "token_usage",
    metadata,
    Column("token_id", Id, ForeignKey("api_tokens.id", ondelete="CASCADE"), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("mutations", BigInteger, nullable=False, default=0),
    Column("log_bytes", BigInteger, nullable=False, default=0),
)

# Per-organisation usage for one UTC month ("2026-11"): what plan caps count against.
org_usage = Table(
    "org_usage",
    metadata,
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True),
    Column("month", String(7), primary_key=True),
    Column("checks", BigInteger, nullable=False, default=0),
    Column("log_bytes", BigInteger, nullable=False, default=0),
)

password_resets = Table(
    "password_resets",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("token_hash", String(64), nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("token_hash"),
    sqlite_autoincrement=True,
)

# Idempotency-Key records: one per (token, key), kept 24 h. A row is
# "in_progress" while its call runs (locked_until bounds how long a crashed
# call can hold it) and "done" with the reply to replay.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("token_id", Id, ForeignKey("api_tokens.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(255), nullable=False),
    # SHA-256 of the RPC name and the request message: method, path and body.
    Column("fingerprint", String(64), nullable=False),
    Column("state", String(12), nullable=False),
    Column("locked_until", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    # The reply (response or error, and headers), sealed with a key derived
    # from the caller's bearer token: see core.rpc.idempotency.
    Column("response", LargeBinary, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("token_id", "key"),
    Index(None, "expires_at"),
    sqlite_autoincrement=True,
)

# Append-only: no code path updates or deletes a row, and on PostgreSQL a
# trigger refuses both (migration 0003).
audit_logs = Table(
    "audit_logs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("org_id", Id, ForeignKey("orgs.id"), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("actor_user_id", Id, nullable=True),
    Column("actor_pat_id", Id, nullable=True),
    Column("actor_email", String(320), nullable=False),
    Column("action", String(64), nullable=False),
    Column("resource", String(200), nullable=False),
    # JSON: changedFields, diff, ip, ua, snapshot.
    Column("meta", Text, nullable=False),
    Index(None, "org_id", "id"),
    Index(None, "org_id", "action"),
    Index(None, "org_id", "actor_pat_id"),
    Index(None, "org_id", "created_at"),
    sqlite_autoincrement=True,
)

invites = Table(
    "invites",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("email", String(320), nullable=False),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("invited_by", Id, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("accepted_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Index(None, "org_id", "email"),
    sqlite_autoincrement=True,
)


# A monitor's settings. Columns for what lists and the scheduler filter on;
# the rest of the non-secret settings as JSON in API field names; the secret
# ones (headers, alert URLs, Telegram) sealed with the server key.
monitors = Table(
    "monitors",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("org_id", Id, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("type", String(16), nullable=False),
    Column("interval_sec", Integer, nullable=False),
    Column("timeout_ms", Integer, nullable=False),
    Column("paused", Boolean, nullable=False, default=False),
    # JSON: the remaining settings (url, host, expectedStatus, tags, regions, …).
    Column("settings", Text, nullable=False),
    # Sealed JSON of the secret fields; null when none is set.
    Column("secrets", Text, nullable=True),
    # JSON array naming the secret fields that are set (for the has* flags).
    Column("secret_fields", Text, nullable=False, default="[]"),
    # SHA-256 of the heartbeat token (lookup) and the token sealed (shown by /secrets).
    Column("heartbeat_token_hash", String(64), nullable=False, unique=True),
    Column("heartbeat_token", Text, nullable=False),
    # Bumped on every change: a checker reloads a monitor whose version moved.
    Column("version", Integer, nullable=False, default=1),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index(None, "org_id", "id"),
    Index(None, "updated_at"),
    sqlite_autoincrement=True,
)

# Tags, one row each, for the ?tag=a&tag=b (AND) filter. The filter reads
# (org_id, tag IN …) and groups by monitor_id: the index covers it, so both
# databases answer from the index alone (core.monitors.service.ListMonitors).
monitor_tags = Table(
    "monitor_tags",
    metadata,
    Column("monitor_id", Id, ForeignKey("monitors.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(50), primary_key=True),
    Column("org_id", Id, nullable=False),
    Index(None, "org_id", "tag", "monitor_id"),
)

# What the checkers know of a monitor: status, consecutive counts, when it
# is next due, and which checker holds it (leases, ``--role checker``).
monitor_state = Table(
    "monitor_state",
    metadata,
    Column("monitor_id", Id, ForeignKey("monitors.id", ondelete="CASCADE"), primary_key=True),
    Column("org_id", Id, nullable=False),
    Column("status", String(16), nullable=False, default="pending"),
    Column("consecutive_ok", Integer, nullable=False, default=0),
    Column("consecutive_fail", Integer, nullable=False, default=0),
    Column("last_checked_at", UtcDateTime, nullable=True),
    Column("status_changed_at", UtcDateTime, nullable=True),
    Column("next_due_at", UtcDateTime, nullable=True),
    # The checker node holding the monitor; the lease is good while the node's
    # checker_nodes row is fresh.
    Column("lease_owner", String(64), nullable=True),
    Index(None, "lease_owner"),
)

# Raw check results, kept for OBSERVE_CHECK_RETENTION_DAYS.
check_results = Table(
    "check_results",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("monitor_id", Id, ForeignKey("monitors.id", ondelete="CASCADE"), nullable=False),
    Column("checked_at", UtcDateTime, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("response_ms", Float, nullable=True),
    Column("status_code", SmallInteger, nullable=True),
    Column("reason", String(32), nullable=True),
    Column("error", Text, nullable=True),
    # JSON object of phase timings in ms; null when none.
    Column("timings", Text, nullable=True),
    Column("cert_expires_at", UtcDateTime, nullable=True),
    Column("region", String(8), nullable=False, default="local"),
    Index(None, "monitor_id", "id"),
    Index(None, "checked_at"),
    sqlite_autoincrement=True,
)

# Rollups kept as results arrive: per monitor, per bucket of 5 minutes
# (level 0), 1 hour (1) or 1 day (2). ``hist`` is a sparse JSON histogram of
# response times (see core.monitors.rollups) from which percentiles merge.
check_rollups = Table(
    "check_rollups",
    metadata,
    Column("monitor_id", Id, ForeignKey("monitors.id", ondelete="CASCADE"), primary_key=True),
    Column("level", SmallInteger, primary_key=True),
    Column("bucket_start", UtcDateTime, primary_key=True),
    Column("checks", Integer, nullable=False),
    Column("up_checks", Integer, nullable=False),
    Column("timed", Integer, nullable=False),
    Column("sum_ms", Float, nullable=False),
    Column("min_ms", Float, nullable=True),
    Column("max_ms", Float, nullable=True),
    Column("hist", Text, nullable=False),
    Index(None, "level", "bucket_start"),
)

# Every status change of a monitor: what incidents and alerts consume.
monitor_events = Table(
    "monitor_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("monitor_id", Id, ForeignKey("monitors.id", ondelete="CASCADE"), nullable=False),
    Column("org_id", Id, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("from_status", String(16), nullable=False),
    Column("to_status", String(16), nullable=False),
    Column("reason", String(32), nullable=True),
    Column("error", Text, nullable=True),
    Index(None, "monitor_id", "id"),
    Index(None, "org_id", "id"),
    sqlite_autoincrement=True,
)

# Live checker processes (``observe serve`` with a scheduler): the lease
# balancer divides the monitors among those seen recently.
checker_nodes = Table(
    "checker_nodes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("started_at", UtcDateTime, nullable=False),
    Column("seen_at", UtcDateTime, nullable=False),
)
