"""Which monitors maintenance windows cover: now (for projections, the
scheduler's rollups and the incident engine) and at a given instant.

SKELETON (issue 10): the maintenance helper implements this; the interface
below is what the rest of the code relies on.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from core.storage.db import Database


class MaintenanceCalendar:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def refresh(self) -> None:
        """Reloads the windows (after a change in this process, and periodically for others')."""

    def covered_now(self, org_id: int, monitor_id: int) -> bool:
        """Whether an active window covers the monitor now (as of the last refresh). Cheap: no I/O."""
        return False

    async def covers(self, conn: AsyncConnection, org_id: int, monitor_id: int, at: datetime) -> bool:
        """Whether a window of the org covers the monitor at ``at`` (reads the monitor's tags on ``conn``)."""
        return False

    def next_change(self) -> datetime | None:
        """The next instant at which some window starts or ends; None when none is left."""
        return None

    async def start(self) -> None:
        """Loads the windows and starts the refresh loop."""
        await self.refresh()

    async def stop(self) -> None:
        """Stops the refresh loop."""
