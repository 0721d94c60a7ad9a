"""E-mail over SMTP (``OBSERVE_SMTP_*``), sent the way every mail of ours is: :class:`core.mail.sender.Mailer`.

The target is the recipient's address. Without ``OBSERVE_SMTP_HOST`` the mail is written to the log, as
core.mail does for every mail, and counts as delivered: the operator chose not to send mail. SMTP answers
are classified like HTTP ones: 5xx (and a refused recipient) fail at once, 4xx and network errors retry
(:func:`smtp_attempt`, which the subscriber channel shares).
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Awaitable

from core.alerts.base import AlertMessage, ChannelSettings, DeliveryOutcome
from core.alerts.messages import render
from core.mail.sender import Mailer


class EmailChannel:
    name = "email"

    def __init__(self, settings: ChannelSettings) -> None:
        self.settings = settings
        self._mailer = Mailer(settings.smtp, timeout=settings.timeout_sec)

    async def send(self, message: AlertMessage, target: str) -> DeliveryOutcome:
        rendered = render(message, public_base=self.settings.public_base)
        sending = self._mailer.send(target, f"[observe] {rendered.subject}", rendered.text)
        return await smtp_attempt(sending, self.settings.timeout_sec)


async def smtp_attempt(sending: Awaitable[None], limit_sec: float) -> DeliveryOutcome:
    """Awaits one SMTP delivery within ``limit_sec`` seconds and says how it went."""
    try:
        # smtplib is blocking and runs in a thread: the thread's socket timeout bounds each step, this
        # bounds the whole attempt for the caller.
        async with asyncio.timeout(limit_sec):
            await sending
    except TimeoutError:
        return DeliveryOutcome("retry", error=f"no answer from the SMTP server within {limit_sec:g} s")
    except smtplib.SMTPRecipientsRefused as exc:
        return _by_code(min(code for code, _ in exc.recipients.values()), "the recipient was refused")
    except smtplib.SMTPResponseException as exc:
        reply = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        return _by_code(exc.smtp_code, str(reply)[:200])
    except (smtplib.SMTPException, OSError):
        return DeliveryOutcome("retry", error="could not talk to the SMTP server")
    return DeliveryOutcome("delivered")


def _by_code(code: int, text: str) -> DeliveryOutcome:
    return DeliveryOutcome("failed" if code >= 500 else "retry", error=f"SMTP {code}: {text}")
