"""A monitor as the scheduler holds it: its check spec and its running state."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from core.checks.base import CheckSpec
from core.monitors import validation as val
from core.scheduler.metrics import label_set

CHECKED_TYPES = frozenset({"http", "https", "keyword", "tcp", "dns", "tls", "ping"})
_CLASS_RANGES = {c: range(int(c[0]) * 100, int(c[0]) * 100 + 100) for c in val.STATUS_CLASSES}


def check_spec(m: dict[str, Any], *, allow_private: bool) -> CheckSpec:
    """The checker's view of a monitor's settings (secrets opened)."""
    expected = m.get("expectedStatus")
    codes: frozenset[int] | None = None
    if isinstance(expected, str):
        codes = frozenset(_CLASS_RANGES[expected])
    elif isinstance(expected, list):
        codes = frozenset(int(c) for c in expected)
    return CheckSpec(
        type=m["type"],
        timeout_ms=m["timeoutMs"],
        url=m.get("url"),
        host=m.get("host"),
        port=m.get("port"),
        method=m.get("method", "GET"),
        headers=tuple((m.get("headers") or {}).items()),
        body=m.get("body"),
        expected_status=codes,
        max_redirects=m.get("maxRedirects", 10),
        ignore_tls_errors=bool(m.get("ignoreTlsErrors")),
        keyword=m.get("keyword"),
        keyword_inverted=bool(m.get("keywordInverted")),
        dns_record_type=m.get("dnsRecordType", "A"),
        dns_resolver=m.get("dnsResolver"),
        expected_value=m.get("expectedValue"),
        tls_expiry_days=m.get("tlsExpiryDays", 14),
        allow_private=allow_private,
    )


def target_key(spec: CheckSpec) -> str:
    """What the per-target concurrency cap groups by: host and port."""
    if spec.url:
        parts = urlsplit(spec.url)
        return f"{parts.hostname}:{spec.port or parts.port or (443 if parts.scheme == 'https' else 80)}"
    return f"{spec.host}:{spec.port or ''}"


def phase(monitor_id: int, interval: float) -> float:
    """A stable offset in [0, interval): monitors sharing an interval start
    spread evenly over it instead of in one burst."""
    return zlib.crc32(monitor_id.to_bytes(8, "little")) / 2**32 * interval


@dataclass(slots=True)
class Job:
    id: int
    org_id: int
    version: int
    name: str
    type: str
    tags: tuple[str, ...]
    interval: float  # seconds, after OBSERVE_CHECK_INTERVAL_SCALE
    failure_threshold: int
    recovery_threshold: int
    spec: CheckSpec | None  # None: not checked here (paused, heartbeat, remote regions only)
    target: str = ""
    labels: str = ""  # Prometheus label set (core.scheduler.metrics)
    status: str = "pending"
    consecutive_ok: int = 0
    consecutive_fail: int = 0
    next_due: float = 0.0  # epoch seconds
    seq: int = 0  # heap entries of older seqs are stale
    last_checked_at: datetime | None = None
    status_changed_at: datetime | None = None
    # Last result, for the Prometheus gauges.
    last_ok: bool | None = None
    last_response_ms: float | None = None
    cert_expires_at: datetime | None = None

    @property
    def runs(self) -> bool:
        return self.spec is not None

    def record(self, ok: bool) -> str | None:
        """Counts a result; the new status when the thresholds flip it."""
        if ok:
            self.consecutive_ok += 1
            self.consecutive_fail = 0
            if self.status != "up" and self.consecutive_ok >= self.recovery_threshold:
                return "up"
        else:
            self.consecutive_fail += 1
            self.consecutive_ok = 0
            if self.status != "down" and self.consecutive_fail >= self.failure_threshold:
                return "down"
        return None


def job_from_row(row: Any, m: dict[str, Any], *, allow_private: bool, scale: float = 1.0) -> Job:
    runs = not m.get("paused") and m["type"] in CHECKED_TYPES and "local" in m.get("regions", ["local"])
    spec = check_spec(m, allow_private=allow_private) if runs else None
    return Job(
        id=row.id,
        org_id=row.org_id,
        version=row.version,
        name=m["name"],
        type=m["type"],
        tags=tuple(m.get("tags", ())),
        interval=m["intervalSec"] * scale,
        failure_threshold=m["failureThreshold"],
        recovery_threshold=m["recoveryThreshold"],
        spec=spec,
        target=target_key(spec) if spec else "",
        labels=label_set(row.id, m["name"], m["type"], m.get("tags", ())),
        status=row.status or "pending",
        consecutive_ok=row.consecutive_ok or 0,
        consecutive_fail=row.consecutive_fail or 0,
        last_checked_at=row.last_checked_at,
        status_changed_at=row.status_changed_at,
    )
