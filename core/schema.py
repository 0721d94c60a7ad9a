"""The whole schema: the shared tables and every domain's own, on one
``metadata`` (what migrations and the schema test compare against)."""

from __future__ import annotations

import core.heartbeats.tables
import core.incidents.tables
import core.log_alerts.tables
import core.maintenance.tables
import core.oauth.tables
import core.status_pages.tables
from core.storage.tables import metadata

__all__ = ["metadata", "migrated"]
# Imported for their tables, which register on ``metadata``.
_DOMAIN_TABLES = (
    core.heartbeats.tables,
    core.incidents.tables,
    core.log_alerts.tables,
    core.maintenance.tables,
    core.oauth.tables,
    core.status_pages.tables,
)


def migrated(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's ``include_name``: whether a table (and what hangs off it) is
    the migrations' to compare. The log store owns its own DDL (PostgreSQL's
    ``log_records`` and its day partitions, core.logs.postgres_store)."""
    return not (type_ == "table" and name is not None and name.startswith("log_records"))
