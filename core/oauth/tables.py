"""The OAuth tables: which provider account belongs to which user, and which
flow states were used (so a replayed callback fails)."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, String, Table, UniqueConstraint

from core.storage.tables import metadata
from core.storage.types import Id, UtcDateTime

# One row per linked provider account, keyed on what the provider says never
# changes: the OpenID ``sub`` or GitHub's numeric user id (an e-mail can move
# between accounts). A user links at most one account of each provider.
oauth_identities = Table(
    "oauth_identities",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("provider", String(16), nullable=False),
    Column("subject", String(255), nullable=False),
    # The account's e-mail at the provider when it was linked or last used.
    Column("email", String(320), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("provider", "subject"),
    UniqueConstraint("user_id", "provider"),
    sqlite_autoincrement=True,
)

# A flow's state once its callback succeeded (SHA-256 of it), kept until the
# flow cookie could no longer be presented: the primary key makes the second
# use fail.
oauth_used_states = Table(
    "oauth_used_states",
    metadata,
    Column("state_hash", String(64), primary_key=True),
    Column("expires_at", UtcDateTime, nullable=False),
    Index(None, "expires_at"),
)
