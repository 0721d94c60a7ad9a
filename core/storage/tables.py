"""The schema, as SQLAlchemy Core tables. Migrations in ``migrations/`` create it."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
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
)
