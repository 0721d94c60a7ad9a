"""MaintenanceService: CRUD for maintenance windows.

SKELETON (issue 10): the maintenance helper implements the RPCs.
"""

from __future__ import annotations

from observe.v1 import maintenance_pb2_grpc

from core.maintenance.calendar import MaintenanceCalendar
from core.storage.db import Database


class MaintenanceService(maintenance_pb2_grpc.MaintenanceServiceServicer):
    def __init__(self, *, db: Database, calendar: MaintenanceCalendar) -> None:
        self.db = db
        self.calendar = calendar
