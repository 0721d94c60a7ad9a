"""IncidentService: list, get, manual incidents, timeline updates,
acknowledge, resolve and postmortems.

SKELETON (issue 10): the incidents helper implements the RPCs.
"""

from __future__ import annotations

from collections.abc import Callable

from observe.v1 import incidents_pb2_grpc

from core.monitors.store import MonitorStore
from core.storage.db import Database


class IncidentService(incidents_pb2_grpc.IncidentServiceServicer):
    def __init__(self, *, db: Database, monitor_store: MonitorStore, notify: Callable[[], None]) -> None:
        self.db = db
        self.monitor_store = monitor_store
        self.notify = notify  # after a commit that wrote outbox rows: wakes the dispatcher
