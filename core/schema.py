"""The whole schema: the shared tables and every domain's own, on one
``metadata`` (what migrations and the schema test compare against)."""

from __future__ import annotations

import core.heartbeats.tables
import core.incidents.tables
import core.log_alerts.tables
import core.maintenance.tables
import core.status_pages.tables
from core.storage.tables import metadata

__all__ = ["metadata"]
# Imported for their tables, which register on ``metadata``.
_DOMAIN_TABLES = (
    core.heartbeats.tables,
    core.incidents.tables,
    core.log_alerts.tables,
    core.maintenance.tables,
    core.status_pages.tables,
)
