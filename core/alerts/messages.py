"""The words of an alert: one plain-text rendering per event, which every channel sends or builds on.

Slack's blocks and Discord's embeds are made from the same :class:`Rendered` text, so a message reads the
same wherever it arrives. An incident a log alert opened (``logAlertId`` set) is told in its own words: its
title names the alert and the count (``checkout errors: 7 matching log records in 1 min``), and nothing
is "down".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.alerts.base import AlertMessage


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str  # one line: the mail's subject, the chat message's heading
    text: str  # the whole message, subject first, link last
    link: str


_OPENING = {
    "incident.opened": "{name} is down",
    "incident.acknowledged": "{name}: incident acknowledged",
    "incident.resolved": "{name} is up again",
    "incident.reopened": "{name} is down again",
    "test": "Test alert for {name}",
}
_LEAD = {
    "incident.opened": "An incident is open.",
    "incident.acknowledged": "Someone is on it; the incident stays open until the monitor recovers.",
    "incident.resolved": "The incident is resolved.",
    "incident.reopened": "It failed again soon after recovering, so the same incident is open again.",
    "test": "This is a test from observe: alerts for this monitor reach this channel.",
}
_LOG_ALERT_OPENING = {
    "incident.opened": "{title}",
    "incident.acknowledged": "{title}: incident acknowledged",
    "incident.resolved": "Resolved: {title}",
    "incident.reopened": "Reopened: {title}",
}
_LOG_ALERT_LEAD = {
    "incident.opened": "A log alert fired: its query matched at least its threshold of records within its window.",
    "incident.acknowledged": "Someone is on it; the incident stays open until the count falls below the threshold.",
    "incident.resolved": "The count fell below the threshold: the incident is resolved.",
    "incident.reopened": "The incident is open again.",
}


def render(message: AlertMessage, *, public_base: str) -> Rendered:
    """The subject, text and link for ``message``; ``public_base`` is OBSERVE_PUBLIC_URL (or where we listen)."""
    incident, monitor = message.incident, message.monitor
    from_logs = incident is not None and incident.get("logAlertId") is not None and message.event in _LOG_ALERT_LEAD
    if from_logs:
        assert incident is not None
        subject = _LOG_ALERT_OPENING[message.event].format(title=incident.get("title") or "Log alert")
        lead = _LOG_ALERT_LEAD[message.event]
    else:
        subject = _OPENING[message.event].format(name=_name(incident, monitor))
        lead = _LEAD[message.event]
    lines = [subject, "", lead]
    if incident is not None:
        cause = describe_cause(incident.get("cause"))
        if cause:
            lines.append(f"Cause: {cause}")
        duration = incident.get("durationSec")
        if isinstance(duration, int | float):
            label = "Duration so far"
            if message.event == "incident.resolved":
                label = "Lasted" if from_logs else "Down for"
            lines.append(f"{label}: {format_duration(int(duration))}")
    link = _link(public_base, incident, monitor)
    lines += ["", link]
    return Rendered(subject=subject, text="\n".join(lines), link=link)


def describe_cause(cause: Mapping[str, Any] | None) -> str | None:
    """``{reason, statusCode, error, regions}`` in one line, e.g. "HTTP 500, expected 2xx or 3xx (eu, us)"."""
    if not cause:
        return None
    text = str(cause.get("error") or cause.get("reason") or "unknown")
    status = cause.get("statusCode")
    if status and str(status) not in text:
        text = f"{text} (HTTP {status})"
    regions = cause.get("regions") or []
    if regions:
        text = f"{text} in {', '.join(str(region) for region in regions)}"
    return text


def format_duration(seconds: int) -> str:
    """``45 s``, ``3 min 20 s``, ``2 h 5 min``, ``3 d 4 h``: the two largest units that are not zero."""
    seconds = max(0, seconds)
    units = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
    parts: list[str] = []
    for label, size in units:
        amount, seconds = divmod(seconds, size)
        if amount or (parts and len(parts) < 2):
            parts.append(f"{amount} {label}")
        if len(parts) == 2:
            break
    parts = [part for part in parts if not part.startswith("0 ")] or ["0 s"]
    return " ".join(parts)


def _name(incident: Mapping[str, Any] | None, monitor: Mapping[str, Any] | None) -> str:
    if monitor is not None and monitor.get("name"):
        return str(monitor["name"])
    if incident is not None and incident.get("title"):
        return str(incident["title"])
    return "observe"


def _link(public_base: str, incident: Mapping[str, Any] | None, monitor: Mapping[str, Any] | None) -> str:
    # The API's own URLs: the one place that shows the incident (or monitor) today.
    base = public_base.rstrip("/")
    if incident is not None and incident.get("id") is not None:
        return f"{base}/api/v1/incidents/{incident['id']}"
    if monitor is not None and monitor.get("id") is not None:
        return f"{base}/api/v1/monitors/{monitor['id']}"
    return base
