"""Mail to a status page's e-mail subscribers (channel ``subscriber``), over the server's SMTP
(``OBSERVE_SMTP_*``), as :mod:`core.alerts.email` sends.

The target is a :class:`SubscriberTarget`: the address, the page, and the subscription's signed links,
made by the dispatcher right before the attempt (:func:`core.alerts.destinations.subscriber_target`). The
message's ``notice`` says what happened in public words only (``{"incident": …}`` or ``{"maintenance":
…}``, see :mod:`core.status_pages.subscriptions`); a ``subscription.confirm`` message is the double
opt-in's confirmation mail and carries none.

Every mail carries the unsubscribe link in its text and as ``List-Unsubscribe`` with
``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058), so a mail client's one-click button
POSTs to it. Errors never name the address: the delivery records are shown to the page's organisation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import formatdate, make_msgid
from typing import Any

from core.alerts.base import AlertMessage, ChannelSettings, DeliveryOutcome
from core.alerts.email import smtp_attempt
from core.mail.sender import Mailer, one_line


@dataclass(frozen=True, slots=True)
class SubscriberTarget:
    email: str
    page_name: str
    page_url: str  # the public page
    unsubscribe_url: str  # works from any mail, for as long as the subscription exists
    confirm_url: str | None = None  # for the confirmation mail only


@dataclass(frozen=True, slots=True)
class SubscriberMail:
    subject: str
    text: str


_INCIDENT_SUBJECT = {
    "incident.opened": "{title}",
    "incident.updated": "Update: {title}",
    "incident.resolved": "Resolved: {title}",
    "incident.reopened": "Reopened: {title}",
}
_MAINTENANCE_SUBJECT = {
    "maintenance.scheduled": "Scheduled maintenance: {name}",
    "maintenance.updated": "Maintenance changed: {name}",
    "maintenance.cancelled": "Maintenance cancelled: {name}",
}
_MAINTENANCE_LEAD = {
    "maintenance.scheduled": "Maintenance is scheduled.",
    "maintenance.updated": "A maintenance window has changed.",
    "maintenance.cancelled": "This maintenance will not take place.",
}


def render(message: AlertMessage, target: SubscriberTarget) -> SubscriberMail:
    """The subject and plain text of a subscriber mail; ValueError when the message is not one for subscribers."""
    page = target.page_name
    notice: Mapping[str, Any] = message.notice or {}
    if message.event == "subscription.confirm":
        if target.confirm_url is None:
            raise ValueError("a confirmation mail needs its confirm link")
        lines = [
            f"Someone, probably you, asked for e-mail about incidents and maintenance on {page}.",
            "",
            "Confirm the subscription with this link (it works for 7 days):",
            target.confirm_url,
            "",
            "If you did not ask for this, ignore this mail: nothing will be sent to you unless you confirm.",
        ]
        return SubscriberMail(f"Confirm your subscription to {page}", _with_footer(lines, target, confirmed=False))
    incident = notice.get("incident")
    if message.event in _INCIDENT_SUBJECT and isinstance(incident, Mapping):
        title = str(incident.get("title") or "Incident")
        update: Mapping[str, Any] = incident.get("update") or {}
        lines = [title, "", f"Status: {_status(update.get('status') or incident.get('status'))}"]
        if update.get("message"):
            lines += ["", str(update["message"])]
        lines += ["", f"Started: {_when(incident.get('startedAt'))}"]
        if incident.get("resolvedAt"):
            lines.append(f"Resolved: {_when(incident.get('resolvedAt'))}")
        lines += ["", f"Follow it on {target.page_url}"]
        subject = f"[{page}] " + _INCIDENT_SUBJECT[message.event].format(title=title)
        return SubscriberMail(subject, _with_footer(lines, target, confirmed=True))
    window = notice.get("maintenance")
    if message.event in _MAINTENANCE_SUBJECT and isinstance(window, Mapping):
        name = str(window.get("name") or "Maintenance")
        lines = [name, "", _MAINTENANCE_LEAD[message.event]]
        if window.get("startsAt"):
            lines += ["", f"From: {_when(window.get('startsAt'))}", f"Until: {_when(window.get('endsAt'))}"]
        if window.get("recurring"):
            lines.append("It repeats; this is the next time.")
        if window.get("description"):
            lines += ["", str(window["description"])]
        lines += ["", f"See {target.page_url}"]
        subject = f"[{page}] " + _MAINTENANCE_SUBJECT[message.event].format(name=name)
        return SubscriberMail(subject, _with_footer(lines, target, confirmed=True))
    raise ValueError(f"no subscriber mail for {message.event!r}")


def _with_footer(lines: list[str], target: SubscriberTarget, *, confirmed: bool) -> str:
    why = "you subscribed to" if confirmed else "this address was entered on"
    footer = [
        "",
        "--",
        f"You get this mail because {why} {target.page_name}.",
        f"Unsubscribe: {target.unsubscribe_url}",
    ]
    return "\n".join([*lines, *footer]) + "\n"


def _status(value: Any) -> str:
    return str(value or "investigating").replace("_", " ").capitalize()


def _when(value: Any) -> str:
    """An RFC 3339 time as people read it, in UTC."""
    if not value:
        return "not known"
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    return at.strftime("%Y-%m-%d %H:%M UTC")


class _MailPolicy(EmailPolicy):
    """The default policy, but ``List-Unsubscribe`` is written whole: folded, a long URL would become
    RFC 2047 encoded words, which mail clients do not read as a link. (It is ASCII and far below the
    998-character line limit.)"""

    def fold(self, name: str, value: str) -> str:
        if name.lower() == "list-unsubscribe":
            return f"{name}: {value}{self.linesep}"
        folded: str = super().fold(name, value)
        return folded

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() == "list-unsubscribe":
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


_POLICY = _MailPolicy()


class SubscriberChannel:
    name = "subscriber"

    def __init__(self, settings: ChannelSettings) -> None:
        self.settings = settings
        self._mailer = Mailer(settings.smtp, timeout=settings.timeout_sec)
        # Message-IDs name the sender's domain (the From address's), not this host.
        self._domain = settings.smtp.sender.rpartition("@")[2].strip("> ") or "localhost"

    async def send(self, message: AlertMessage, target: SubscriberTarget) -> DeliveryOutcome:
        try:
            mail = render(message, target)
        except ValueError as exc:
            return DeliveryOutcome("failed", error=str(exc))
        msg = EmailMessage(policy=_POLICY)
        msg["From"] = self.settings.smtp.sender
        msg["To"] = target.email
        msg["Subject"] = one_line(mail.subject)
        msg["Date"] = formatdate(localtime=False)
        # Not make_msgid's default: it would name this host (and the outbox row) to the public.
        msg["Message-ID"] = make_msgid(domain=self._domain)
        msg["List-Unsubscribe"] = f"<{target.unsubscribe_url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(mail.text)
        outcome = await smtp_attempt(self._deliver(msg), self.settings.timeout_sec)
        if outcome.error:
            # An SMTP reply may quote the address; the records are shown to the organisation.
            error = re.sub(re.escape(target.email), "the subscriber's address", outcome.error, flags=re.IGNORECASE)
            outcome = DeliveryOutcome(outcome.outcome, outcome.http_status, error, outcome.retry_after_sec)
        return outcome

    async def _deliver(self, msg: EmailMessage) -> None:
        await self._mailer.send_message(msg)
