"""Slack incoming webhooks: ``POST <hook URL> {text, blocks}``. The target is the hook URL (a secret)."""

from __future__ import annotations

from core.alerts import posting
from core.alerts.base import AlertMessage
from core.alerts.messages import render

SECTION_LIMIT = 3000  # Slack refuses a section text longer than this


class SlackChannel(posting.HookChannel):
    name = "slack"

    def payload(self, message: AlertMessage) -> dict[str, object]:
        return payload(message, public_base=self.settings.public_base)


def payload(message: AlertMessage, *, public_base: str) -> dict[str, object]:
    rendered = render(message, public_base=public_base)
    # Escaped as Slack asks, so a monitor named "<!channel>" cannot ping a whole channel.
    body = rendered.text.removeprefix(rendered.subject).strip().removesuffix(rendered.link).strip()
    return {
        "text": escape(rendered.text),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": rendered.subject[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": escape(body)[:SECTION_LIMIT]}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{escape(rendered.link)}|Open in observe>"}]},
        ],
    }


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
