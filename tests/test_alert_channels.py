"""Alert channels against real receivers this test starts: an HTTP server that records what it gets and
answers as told, and the SMTP sink of conftest. Each channel's request shape, the webhook's signature
(verified with standardwebhooks' own verifier), how answers are classified, timeouts that do not hold up
another send, the target policy at send time, and no secret in any outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from standardwebhooks import Webhook

from core.alerts import AlertMessage, ChannelSettings, DeliveryOutcome, TelegramTarget, WebhookTarget, channels
from core.alerts.messages import format_duration, render
from core.alerts.posting import parse_retry_after
from core.config import SmtpSettings
from core.members.service import new_webhook_secret
from tests.conftest import SmtpSink, free_port
from tests.receivers import Receiver, recording_receiver

SLACK_PATH = "/services/T0001/B0001/slacksecretXYZ"
DISCORD_PATH = "/api/webhooks/1234/discordsecretXYZ"
BOT_TOKEN = "123456:telegramsecretXYZ"
PUBLIC = "https://observe.example.com"

INCIDENT = {
    "id": 41,
    "monitorId": 7,
    "title": "api.example.com is down",
    "status": "investigating",
    "cause": {"reason": "status", "statusCode": 500, "error": "HTTP 500, expected 2xx or 3xx", "regions": []},
    "startedAt": "2026-11-29T21:00:00Z",
    "durationSec": 200,
}
MONITOR = {"id": 7, "name": "api.example.com", "type": "https", "status": "down"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """Answers ``/status/N[/…]`` with N (``?retry_after=S`` adds Retry-After), hangs on ``/hang``, else 200."""
    with recording_receiver() as r:
        yield r


def settings(**overrides: Any) -> ChannelSettings:
    base: dict[str, Any] = {"public_base": PUBLIC, "timeout_sec": 2.0, "allow_private": True}
    return ChannelSettings(**{**base, **overrides})


def opened() -> AlertMessage:
    return AlertMessage("incident.opened", INCIDENT, MONITOR, timestamp=datetime(2026, 11, 29, 21, 0, tzinfo=UTC))


def send(channel: str, target: Any, message: AlertMessage | None = None, **overrides: Any) -> DeliveryOutcome:
    return asyncio.run(channels(settings(**overrides))[channel].send(message or opened(), target))


def assert_tells_the_story(text: str) -> None:
    for part in (
        "api.example.com is down",
        "HTTP 500, expected 2xx or 3xx",
        "3 min 20 s",
        f"{PUBLIC}/api/v1/incidents/41",
    ):
        assert part in text, (part, text)


# ---- what each channel sends ----------------------------------------------


def test_slack_gets_text_and_blocks(receiver: Receiver) -> None:
    outcome = send("slack", receiver.url(SLACK_PATH))
    assert outcome == DeliveryOutcome("delivered", http_status=200)
    [seen] = receiver.seen
    assert seen.path == SLACK_PATH
    assert seen.headers["content-type"] == "application/json"
    body = seen.json()
    assert set(body) == {"text", "blocks"}
    assert_tells_the_story(body["text"])
    assert [block["type"] for block in body["blocks"]] == ["header", "section", "context"]
    assert body["blocks"][0]["text"]["text"] == "api.example.com is down"


def test_slack_escapes_what_would_ping_a_channel(receiver: Receiver) -> None:
    message = AlertMessage("test", None, {**MONITOR, "name": "<!channel> & co"})
    assert send("slack", receiver.url(SLACK_PATH), message).ok
    body = receiver.seen[0].json()
    assert "&lt;!channel&gt; &amp; co" in body["text"]
    # Only mrkdwn is parsed for mentions; the header is plain text and shows the name as it is.
    mrkdwn = [body["text"], body["blocks"][1]["text"]["text"], body["blocks"][2]["elements"][0]["text"]]
    assert "<!channel>" not in " ".join(mrkdwn)
    assert body["blocks"][0]["text"] == {"type": "plain_text", "text": "Test alert for <!channel> & co"}


def test_discord_gets_content_and_embeds_and_pings_nobody(receiver: Receiver) -> None:
    assert send("discord", receiver.url(DISCORD_PATH)).ok
    body = receiver.seen[0].json()
    assert body["content"] == "api.example.com is down"
    [embed] = body["embeds"]
    assert_tells_the_story(embed["title"] + "\n" + embed["description"])
    assert embed["url"] == f"{PUBLIC}/api/v1/incidents/41"
    assert embed["timestamp"] == "2026-11-29T21:00:00+00:00"
    assert body["allowed_mentions"] == {"parse": []}


def test_telegram_posts_send_message_to_the_configured_api(receiver: Receiver) -> None:
    # The Bot API base is the operator's: trusted even where users' URLs may not reach private addresses.
    outcome = send(
        "telegram",
        TelegramTarget(BOT_TOKEN, "-100200300"),
        telegram_api_url=receiver.url(""),
        allow_private=False,
    )
    assert outcome.ok
    [seen] = receiver.seen
    assert seen.path == f"/bot{BOT_TOKEN}/sendMessage"
    body = seen.json()
    assert body["chat_id"] == "-100200300"
    assert_tells_the_story(body["text"])


def test_webhook_is_signed_as_standard_webhooks_specifies(receiver: Receiver) -> None:
    secret = new_webhook_secret()
    message = opened()
    assert send("webhook", WebhookTarget(receiver.url("/hooks/observe"), secret), message).ok
    [seen] = receiver.seen
    assert seen.headers["webhook-id"] == message.id
    assert seen.headers["webhook-signature"].startswith("v1,")
    verified = Webhook(secret).verify(seen.body, seen.headers)
    assert verified == {
        "type": "incident.opened",
        "timestamp": "2026-11-29T21:00:00Z",
        "data": {"incident": INCIDENT, "monitor": MONITOR},
    }
    with pytest.raises(Exception, match="signature"):
        Webhook(new_webhook_secret()).verify(seen.body, seen.headers)


def test_email_goes_through_smtp(smtp_sink: SmtpSink) -> None:
    to = f"oncall-{time.monotonic_ns()}@example.com"
    smtp = SmtpSettings(host="127.0.0.1", port=smtp_sink.port, sender="alerts@observe.test")
    assert send("email", to, smtp=smtp) == DeliveryOutcome("delivered")
    mail = smtp_sink.wait_for(to)
    assert mail["Subject"] == "[observe] api.example.com is down"
    content = mail.get_payload(decode=True)
    assert isinstance(content, bytes)
    assert_tells_the_story(content.decode())


def test_email_without_smtp_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="observe.mail"):
        assert send("email", "oncall@example.com").ok
    assert "api.example.com is down" in caplog.text


class RefusingSmtp:
    def __init__(self, reply: str) -> None:
        self.reply = reply

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        return self.reply


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("550 5.1.1 no such user", DeliveryOutcome("failed", error="SMTP 550: the recipient was refused")),
        ("451 4.3.0 try again later", DeliveryOutcome("retry", error="SMTP 451: the recipient was refused")),
    ],
)
def test_a_refused_recipient_fails_or_retries_by_its_code(reply: str, expected: DeliveryOutcome) -> None:
    controller = Controller(RefusingSmtp(reply), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        smtp = SmtpSettings(host="127.0.0.1", port=controller.port)
        assert send("email", "nobody@example.com", smtp=smtp) == expected
    finally:
        controller.stop()


def test_email_to_a_closed_smtp_port_is_retried() -> None:
    outcome = send("email", "oncall@example.com", smtp=SmtpSettings(host="127.0.0.1", port=free_port()))
    assert outcome == DeliveryOutcome("retry", error="could not talk to the SMTP server")


# ---- how answers are classified ----------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/status/204", DeliveryOutcome("delivered", http_status=204)),
        ("/status/500", DeliveryOutcome("retry", http_status=500, error="HTTP 500")),
        ("/status/503", DeliveryOutcome("retry", http_status=503, error="HTTP 503")),
        ("/status/408", DeliveryOutcome("retry", http_status=408, error="HTTP 408")),
        ("/status/429?retry_after=7", DeliveryOutcome("retry", http_status=429, error="HTTP 429", retry_after_sec=7)),
        ("/status/400", DeliveryOutcome("failed", http_status=400, error="HTTP 400")),
        ("/status/404", DeliveryOutcome("failed", http_status=404, error="HTTP 404")),
        ("/status/302", DeliveryOutcome("failed", http_status=302, error="HTTP 302: redirects are not followed")),
    ],
)
def test_answers_are_classified(receiver: Receiver, path: str, expected: DeliveryOutcome) -> None:
    assert send("discord", receiver.url(path)) == expected


def test_retry_after_as_a_date() -> None:
    now = datetime(2026, 11, 29, 21, 0, tzinfo=UTC)
    assert parse_retry_after(b"Sun, 29 Nov 2026 21:01:30 GMT", now=now) == 90
    assert parse_retry_after(b"soon", now=now) is None


def test_a_hanging_receiver_is_retried_after_the_timeout_without_holding_up_another(receiver: Receiver) -> None:
    async def both() -> tuple[DeliveryOutcome, DeliveryOutcome, float, float]:
        all_channels = channels(settings(timeout_sec=1.0))
        started = time.monotonic()
        hung, fine = await asyncio.gather(
            all_channels["slack"].send(opened(), receiver.url("/hang")),
            all_channels["webhook"].send(opened(), WebhookTarget(receiver.url("/fine"), new_webhook_secret())),
        )
        return hung, fine, started, time.monotonic() - started

    hung, fine, started, elapsed = asyncio.run(both())
    assert hung == DeliveryOutcome("retry", error="no answer within 1 s")
    assert fine.ok
    arrivals = {seen.path: seen.at - started for seen in receiver.seen}
    assert arrivals["/fine"] < 0.5, arrivals
    assert 0.9 < elapsed < 2, elapsed


def test_a_private_target_is_refused_under_the_default_policy(receiver: Receiver) -> None:
    outcome = send("webhook", WebhookTarget(receiver.url("/hooks"), new_webhook_secret()), allow_private=False)
    assert outcome.outcome == "failed"
    assert outcome.http_status is None
    assert "not allowed" in (outcome.error or "")
    assert receiver.seen == []


def test_no_outcome_names_the_secret_url_or_token(receiver: Receiver) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    outcomes = [
        send("slack", receiver.url(f"/status/500{SLACK_PATH}")),
        send("slack", receiver.url(SLACK_PATH), allow_private=False),
        send("slack", closed + SLACK_PATH),
        send("discord", receiver.url(f"/status/400{DISCORD_PATH}")),
        send("discord", "ftp://example.com" + DISCORD_PATH),
        send("telegram", TelegramTarget(BOT_TOKEN, "1"), telegram_api_url=closed),
        send("telegram", TelegramTarget(BOT_TOKEN, "1"), telegram_api_url=receiver.url("/status/401")),
        send("telegram", TelegramTarget(BOT_TOKEN, "1"), telegram_api_url=receiver.url("/hang"), timeout_sec=0.3),
    ]
    assert all(outcome.error for outcome in outcomes)
    for outcome in outcomes:
        for secret in ("slacksecretXYZ", "discordsecretXYZ", "telegramsecretXYZ", "127.0.0.1"):
            assert secret not in repr(outcome), outcome


# ---- the words ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "first_line"),
    [
        ("incident.opened", "api.example.com is down"),
        ("incident.acknowledged", "api.example.com: incident acknowledged"),
        ("incident.resolved", "api.example.com is up again"),
        ("incident.reopened", "api.example.com is down again"),
    ],
)
def test_every_incident_event_names_monitor_cause_duration_and_link(event: Any, first_line: str) -> None:
    rendered = render(AlertMessage(event, INCIDENT, MONITOR), public_base=PUBLIC)
    assert rendered.text.splitlines()[0] == first_line == rendered.subject
    assert "Cause: HTTP 500, expected 2xx or 3xx" in rendered.text
    assert "3 min 20 s" in rendered.text
    assert rendered.text.endswith(f"{PUBLIC}/api/v1/incidents/41")


def test_a_test_alert_links_the_monitor() -> None:
    rendered = render(AlertMessage("test", None, MONITOR), public_base=PUBLIC + "/")
    assert rendered.subject == "Test alert for api.example.com"
    assert rendered.link == f"{PUBLIC}/api/v1/monitors/7"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (45, "45 s"), (200, "3 min 20 s"), (3600, "1 h"), (7500, "2 h 5 min"), (273600, "3 d 4 h")],
)
def test_durations_read_in_two_units(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text
