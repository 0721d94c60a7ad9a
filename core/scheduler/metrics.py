"""Per-monitor Prometheus series, read from the scheduler's memory at scrape
time (no series churn on the check path). Names follow what Uptime Kuma and
Gatus users chart: status 1 up / 0 down / 2 pending / 3 maintenance, response
time, certificate days left; labels monitor_id, monitor_name, monitor_type,
monitor_tags (comma-separated)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core import clock

if TYPE_CHECKING:
    from core.scheduler.scheduler import Scheduler

STATUS_VALUES = {"down": 0, "up": 1, "pending": 2, "maintenance": 3}
LABELS = ["monitor_id", "monitor_name", "monitor_type", "monitor_tags"]


class MonitorCollector(Collector):
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterator[Metric]:
        status = GaugeMetricFamily(
            "observe_monitor_status", "Monitor status: 1 up, 0 down, 2 pending, 3 maintenance.", labels=LABELS
        )
        up = GaugeMetricFamily("observe_monitor_up", "1 when the last check passed, else 0.", labels=LABELS)
        response = GaugeMetricFamily(
            "observe_monitor_response_time_seconds", "Duration of the last check.", labels=LABELS
        )
        cert = GaugeMetricFamily(
            "observe_monitor_cert_days_remaining", "Days until the monitored TLS certificate expires.", labels=LABELS
        )
        monitors = GaugeMetricFamily("observe_scheduler_monitors", "Monitors held by this checker process.")
        now = clock.now()
        jobs = self.scheduler.snapshot()
        for job in jobs:
            if not job.runs:
                continue
            labels = [str(job.id), job.name, job.type, ",".join(job.tags)]
            status.add_metric(labels, STATUS_VALUES.get(job.status, 2))
            if job.last_ok is not None:
                up.add_metric(labels, 1 if job.last_ok else 0)
            if job.last_response_ms is not None:
                response.add_metric(labels, job.last_response_ms / 1000)
            if job.cert_expires_at is not None:
                cert.add_metric(labels, (job.cert_expires_at - now).total_seconds() / 86400)
        monitors.add_metric([], len(jobs))
        yield from (status, up, response, cert, monitors)
