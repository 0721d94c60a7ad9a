"""Per-monitor Prometheus series, rendered straight from the scheduler's
memory at scrape time. Names follow what Uptime Kuma and Gatus users chart:
status 1 up / 0 down / 2 pending / 3 maintenance, response time, certificate
days left; labels monitor_id, monitor_name, monitor_type, monitor_tags
(comma-separated). They name an org's monitors, so /metrics shows them only
to a scraper with ``OBSERVE_METRICS_TOKEN`` (core.metrics).

Rendered by hand, with each monitor's label set escaped once when it is
loaded: through prometheus_client's collector API, 10,000 monitors took
300–600 ms per scrape, all of it blocking the event loop the checks run on."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from core import clock

if TYPE_CHECKING:
    from core.scheduler.jobs import Job

STATUS_VALUES = {"down": 0, "up": 1, "pending": 2, "maintenance": 3}
_FAMILIES = (
    ("observe_monitor_status", "Monitor status: 1 up, 0 down, 2 pending, 3 maintenance."),
    ("observe_monitor_up", "1 when the last check passed, else 0."),
    ("observe_monitor_response_time_seconds", "Duration of the last check."),
    ("observe_monitor_cert_days_remaining", "Days until the monitored TLS certificate expires."),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def label_set(monitor_id: int, name: str, type_: str, tags: Iterable[str]) -> str:
    return (
        f'monitor_id="{monitor_id}",monitor_name="{_escape(name)}",'
        f'monitor_type="{type_}",monitor_tags="{_escape(",".join(tags))}"'
    )


def render(jobs: list[Job], *, monitors: bool = True) -> bytes:
    """The exposition text of the held-monitor gauge and, with ``monitors``,
    of the per-monitor families."""
    out = _monitor_families(jobs) if monitors else []
    out += [
        "# HELP observe_scheduler_monitors Monitors held by this checker process.",
        "# TYPE observe_scheduler_monitors gauge",
        f"observe_scheduler_monitors {len(jobs)}",
        "",
    ]
    return "\n".join(out).encode()


def _monitor_families(jobs: list[Job]) -> list[str]:
    now = clock.now()
    lines: list[list[str]] = [[], [], [], []]
    status, up, response, cert = lines
    for job in jobs:
        if not job.runs:
            continue
        labels = job.labels
        status.append(f"observe_monitor_status{{{labels}}} {STATUS_VALUES.get(job.status, 2)}")
        if job.last_ok is not None:
            up.append(f"observe_monitor_up{{{labels}}} {1 if job.last_ok else 0}")
        if job.last_response_ms is not None:
            response.append(f"observe_monitor_response_time_seconds{{{labels}}} {job.last_response_ms / 1000}")
        if job.cert_expires_at is not None:
            days = (job.cert_expires_at - now).total_seconds() / 86400
            cert.append(f"observe_monitor_cert_days_remaining{{{labels}}} {days}")
    out: list[str] = []
    for (name, help_text), samples in zip(_FAMILIES, lines, strict=True):
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", *samples]
    return out
