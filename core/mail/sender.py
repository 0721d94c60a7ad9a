"""Outgoing e-mail over SMTP (stdlib smtplib in a worker thread).

Without ``OBSERVE_SMTP_HOST`` nothing is sent: the mail, body and links
included, is written to the log instead (ARCHITECTURE.md), so whoever runs
the server can finish an invite or a password reset by hand. With SMTP the
log names the recipient only.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage

from core.config import SmtpSettings

log = logging.getLogger("observe.mail")
# SMTP conversations block: they get threads of their own, so a burst of
# mail (a page's subscribers) never queues password hashing or the other
# work of the default pool behind it. Threads start only as needed.
# As many as the alert dispatcher has attempts in flight (64): an attempt's
# timeout must not run out while it waits for a thread.
_SMTP_THREADS = ThreadPoolExecutor(max_workers=64, thread_name_prefix="observe-smtp")


def one_line(text: str) -> str:
    """``text`` fit for a header: line breaks and runs of white space become one space (a header
    cannot carry a line break, and a title or name given to us may hold one)."""
    return " ".join(text.split())


class Mailer:
    def __init__(self, settings: SmtpSettings, *, timeout: float = 30) -> None:
        self.settings = settings
        self.timeout = timeout  # seconds, for each SMTP connect, read and write
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, to: str, subject: str, body: str) -> None:
        if not self.settings.host:
            log.warning(
                "SMTP not configured (OBSERVE_SMTP_HOST); mail not sent, here it is:\nTo: %s\nSubject: %s\n\n%s",
                to,
                subject,
                body.rstrip("\n"),
            )
            return
        msg = EmailMessage()
        msg["From"] = self.settings.sender
        msg["To"] = to
        msg["Subject"] = one_line(subject)
        msg.set_content(body)
        await asyncio.get_running_loop().run_in_executor(_SMTP_THREADS, self._deliver, msg)

    async def send_message(self, msg: EmailMessage) -> None:
        """Sends a message built by the caller (headers of its own, such as
        List-Unsubscribe); From is set when it has none. Without SMTP only its
        subject is logged: such mail goes to the public (status-page
        subscribers), whose addresses and signed links do not belong in the log."""
        if msg["From"] is None:
            msg["From"] = self.settings.sender
        if not self.settings.host:
            log.warning("SMTP not configured (OBSERVE_SMTP_HOST); mail %r not sent", msg["Subject"])
            return
        await asyncio.get_running_loop().run_in_executor(_SMTP_THREADS, self._deliver, msg)

    def send_later(self, to: str, subject: str, body: str) -> None:
        """Sends in the background so a reply's timing says nothing about it."""
        task = asyncio.get_running_loop().create_task(self._send_logged(to, subject, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_logged(self, to: str, subject: str, body: str) -> None:
        try:
            await self.send(to, subject, body)
        except Exception:
            log.exception("sending mail to %s failed", to)

    def _deliver(self, msg: EmailMessage) -> None:
        s = self.settings
        assert s.host is not None
        with smtplib.SMTP(s.host, s.port, timeout=self.timeout) as smtp:
            if s.tls:
                smtp.starttls()
            if s.user and s.password:
                smtp.login(s.user, s.password)
            smtp.send_message(msg)
