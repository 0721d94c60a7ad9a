"""The incident engine: turns monitor status changes into incidents and
alerts.

SKELETON (issue 10): written next.
"""

from __future__ import annotations

from collections.abc import Callable

from core.config import Settings
from core.maintenance.calendar import MaintenanceCalendar
from core.monitors.store import MonitorStore
from core.scheduler.events import StatusChange
from core.storage.db import Database


class IncidentEngine:
    def __init__(
        self,
        *,
        db: Database,
        settings: Settings,
        calendar: MaintenanceCalendar,
        monitor_store: MonitorStore,
        notify: Callable[[], None],
    ) -> None:
        self.db = db
        self.settings = settings
        self.calendar = calendar
        self.monitor_store = monitor_store
        self.notify = notify

    async def on_changes(self, changes: list[StatusChange]) -> None:
        """A StatusHooks subscriber: the scheduler committed these changes."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
