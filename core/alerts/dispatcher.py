"""The outbox dispatcher: claims due alert_outbox rows, sends each through
its channel, records every attempt and schedules retries.

SKELETON (issue 10): the delivery helper implements this.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric

from core.config import Settings
from core.storage.db import Database
from core.storage.sealing import Sealer


class Dispatcher:
    """A prometheus collector too: the server registers it on /metrics."""

    def __init__(self, *, db: Database, settings: Settings, sealer: Sealer) -> None:
        self.db = db
        self.settings = settings
        self.sealer = sealer

    def wake(self) -> None:
        """Outbox rows were committed: look now rather than at the next poll."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def collect(self) -> Iterator[Metric]:
        return iter(())
