"""From a failing check to the people who must know, end to end with real parts: a local HTTP target
that starts answering 500, the real server checking it, and real receivers for every channel (the SMTP
sink, Slack-, Discord-, Telegram- and webhook-shaped HTTP receivers). Also: a server SIGKILLed between
the incident's commit and the delivery, maintenance windows holding incidents back, gRPC parity."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from observe.v1 import incidents_pb2, incidents_pb2_grpc
from sqlalchemy import select, update
from standardwebhooks import Webhook

from core.incidents.tables import alert_deliveries, incidents
from core.rpc.jsonmap import JsonCodec
from tests.conftest import CHECKING_ENV, Persona, Server, SmtpSink, register, start_server, stop_server
from tests.polling import wait_for
from tests.receivers import Receiver, recording_receiver
from tests.targets import Target, http_target

SLACK_PATH = "/services/T0001/B0001/slacksecretXYZ"
DISCORD_PATH = "/api/webhooks/1234/discordsecretXYZ"
BOT_TOKEN = "123456:" + "t" * 35
TELEGRAM_PATH = f"/tg/bot{BOT_TOKEN}/sendMessage"
HOOK_PATH = "/hooks/observe"
ALL_CHANNELS = {"email", "slack", "discord", "telegram", "webhook"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with recording_receiver() as r:
        yield r


@pytest.fixture(scope="module")
def flow_server(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver, smtp_sink: SmtpSink) -> Iterator[Server]:
    """Its own server (SQLite; the session server's scheduler would share a PostgreSQL database's monitors),
    with Telegram's API at the local receiver."""
    srv = _start(tmp_path_factory.mktemp("incident-flow"), receiver, smtp_sink)
    yield srv
    stop_server(srv)


def _start(tmp: Path, receiver: Receiver, smtp_sink: SmtpSink) -> Server:
    env = {
        **CHECKING_ENV,
        # Checks every 0.75 s (intervalSec 30 × 0.025; the session server's 1.5 s): every step below waits on
        # two or three checks, and nothing here measures the interval itself.
        "OBSERVE_CHECK_INTERVAL_SCALE": "0.025",
        "OBSERVE_SMTP_HOST": "127.0.0.1",
        "OBSERVE_SMTP_PORT": str(smtp_sink.port),
        "OBSERVE_TELEGRAM_API_URL": receiver.url("/tg"),
    }
    return start_server(tmp, backend="sqlite", extra_env=env, role="all")


@pytest.fixture
def target() -> Iterator[Target]:
    with http_target() as t:
        yield t


def monitor_body(target: Target, receiver: Receiver, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "http",
        "url": f"{target.url}/{name}",
        "intervalSec": 30,
        "failureThreshold": 2,
        **extra,
    }


def create_monitor(c: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    r = c.post("/api/v1/monitors", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def incidents_of(c: httpx.Client, monitor_id: int) -> list[dict[str, Any]]:
    r = c.get("/api/v1/incidents", params={"monitorId": monitor_id})
    assert r.status_code == 200, r.text
    return list(r.json()["incidents"])


def mails_to(sink: SmtpSink, address: str) -> list[Any]:
    return [m for m in sink.messages if address in str(m["To"])]


def test_a_failing_target_reaches_every_channel_and_its_recovery_too(
    flow_server: Server, receiver: Receiver, smtp_sink: SmtpSink, target: Target
) -> None:
    owner = register(flow_server)
    email = f"oncall-{owner.user_id}@example.com"
    with owner.client() as c:
        secret = c.get("/api/v1/me/webhook-secret").json()["secret"]
        monitor = create_monitor(
            c,
            monitor_body(
                target,
                receiver,
                "e2e",
                alertEmail=email,
                alertSlackUrl=receiver.url(SLACK_PATH),
                alertDiscordUrl=receiver.url(DISCORD_PATH),
                alertTelegramBotToken=BOT_TOKEN,
                alertTelegramChatId="424242",
                alertWebhookUrl=receiver.url(HOOK_PATH),
            ),
        )
        mid = monitor["id"]
        wait_for(lambda: c.get(f"/api/v1/monitors/{mid}").json()["status"] == "up", what="up")
        assert incidents_of(c, mid) == []
        target.status = 500
        (incident,) = wait_for(lambda: incidents_of(c, mid), what="an incident")
        assert incident["status"] == "investigating"
        assert incident["resolvedAt"] is None
        assert incident["title"] == "e2e is down"
        assert incident["cause"]["statusCode"] == 500
        assert incident["cause"]["regions"] == ["local"]

        # Every channel hears of it, once each.
        slack = receiver.wait_for(SLACK_PATH)[0].json()
        assert "e2e is down" in slack["text"]
        assert slack["blocks"]
        discord = receiver.wait_for(DISCORD_PATH)[0].json()
        assert "e2e is down" in discord["content"] + str(discord["embeds"])
        telegram = receiver.wait_for(TELEGRAM_PATH)[0].json()
        assert telegram["chat_id"] == "424242"
        assert "e2e is down" in telegram["text"]
        hook = receiver.wait_for(HOOK_PATH)[0]
        event = Webhook(secret).verify(hook.body, hook.headers)  # raises unless the signature holds
        assert event["type"] == "incident.opened"
        assert event["data"]["incident"]["id"] == incident["id"]
        assert event["data"]["monitor"]["id"] == mid
        mail = wait_for(lambda: mails_to(smtp_sink, email), what="the mail")[0]
        assert "e2e is down" in mail["Subject"]

        # More failing checks: still the one incident.
        checks_before = len(c.get(f"/api/v1/monitors/{mid}/checks").json()["checks"])
        wait_for(
            lambda: len(c.get(f"/api/v1/monitors/{mid}/checks").json()["checks"]) >= checks_before + 2,
            what="two more checks",
        )
        assert len(incidents_of(c, mid)) == 1

        # Recovery resolves it, and everyone hears that too.
        target.status = 200
        resolved = wait_for(lambda: incidents_of(c, mid)[0]["resolvedAt"] and incidents_of(c, mid)[0], what="resolve")
        assert resolved["status"] == "resolved"
        assert resolved["durationSec"] >= 1
        for path in (SLACK_PATH, DISCORD_PATH, TELEGRAM_PATH, HOOK_PATH):
            receiver.wait_for(path, 2)
        hook = receiver.at(HOOK_PATH)[1]
        assert Webhook(secret).verify(hook.body, hook.headers)["type"] == "incident.resolved"
        wait_for(lambda: len(mails_to(smtp_sink, email)) == 2, what="the recovery mail")

        detail = wait_for(
            lambda: (d := c.get(f"/api/v1/incidents/{incident['id']}").json()) and len(d["deliveries"]) == 10 and d,
            what="ten delivery records",
        )
        assert {d["channel"] for d in detail["deliveries"]} == ALL_CHANNELS
        assert {d["outcome"] for d in detail["deliveries"]} == {"delivered"}
        assert [u["status"] for u in detail["updates"]] == ["investigating", "resolved"]
        # Nothing was sent twice.
        assert len(receiver.at(SLACK_PATH)) == 2
        assert len(receiver.at(HOOK_PATH)) == 2


def test_the_same_incident_over_grpc_and_rest(flow_server: Server, receiver: Receiver, target: Target) -> None:
    owner = register(flow_server)
    with owner.client() as c:
        monitor = create_monitor(c, monitor_body(target, receiver, "parity", alertWebhookUrl=receiver.url("/parity")))
        target.status = 500
        (incident,) = wait_for(lambda: incidents_of(c, monitor["id"]), what="an incident")
        metadata = [("authorization", f"Bearer {owner.pat}")]
        codec = JsonCodec()
        with grpc.insecure_channel(flow_server.grpc_target) as channel:
            stub = incidents_pb2_grpc.IncidentServiceStub(channel)
            listed = stub.ListIncidents(incidents_pb2.ListIncidentsRequest(monitor_id=monitor["id"]), metadata=metadata)
            rest_list = c.get("/api/v1/incidents", params={"monitorId": monitor["id"]}).json()
            as_json = codec.encode(listed)
            for item in (as_json, rest_list):  # a clock tick apart
                for one in item["incidents"]:
                    one.pop("durationSec")
            assert as_json == rest_list
            acked = stub.AcknowledgeIncident(
                incidents_pb2.AcknowledgeIncidentRequest(id=incident["id"]), metadata=metadata
            ).incident
        assert acked.acknowledged
        assert acked.acknowledged_by.pat_id == owner.pat_id
        rest = c.get(f"/api/v1/incidents/{incident['id']}").json()
        assert rest["acknowledged"] is True
        assert rest["acknowledgedBy"] == {"userId": owner.user_id, "patId": owner.pat_id}
        assert rest["acknowledgedAt"] == codec.encode(acked)["acknowledgedAt"]
        receiver.wait_for("/parity", 2)  # opened, acknowledged
        target.status = 200


@pytest.mark.slow
def test_a_server_killed_before_delivery_sends_after_restart_exactly_once(
    tmp_path_factory: pytest.TempPathFactory, receiver: Receiver, smtp_sink: SmtpSink, target: Target
) -> None:
    """The webhook receiver is not listening yet, so the first attempt fails and the alert waits in the
    outbox; the server is SIGKILLed then. After a restart it goes out once; the Slack alert, recorded
    delivered before the kill, is not sent again."""
    tmp = tmp_path_factory.mktemp("killed")
    srv = _start(tmp, receiver, smtp_sink)
    with recording_receiver() as placeholder:
        late_port = placeholder.server.server_address[1]
    try:
        owner = register(srv)
        with owner.client() as c:
            body = monitor_body(
                target,
                receiver,
                "killed",
                alertSlackUrl=receiver.url("/killed-slack"),
                alertWebhookUrl=f"http://127.0.0.1:{late_port}/late",
            )
            mid = create_monitor(c, body)["id"]
            target.status = 500
            (incident,) = wait_for(lambda: incidents_of(c, mid), what="an incident")
            receiver.wait_for("/killed-slack")

            def webhook_attempts() -> list[Any]:
                query = select(alert_deliveries).where(
                    alert_deliveries.c.incident_id == incident["id"], alert_deliveries.c.channel == "webhook"
                )
                return list(srv.sql(query))

            wait_for(webhook_attempts, what="a failed webhook attempt")
            srv.process.send_signal(signal.SIGKILL)
            srv.process.wait()
            assert all(row.outcome == "retrying" for row in webhook_attempts())
    finally:
        stop_server(srv)

    with recording_receiver(port=late_port) as late:
        again = start_server(
            tmp,
            backend="sqlite",
            extra_env={k: v for k, v in srv.env.items() if k.startswith("OBSERVE_") and "PORT" not in k},
            role="all",
        )
        try:
            hook = late.wait_for("/late")[0]
            assert hook.json()["type"] == "incident.opened"
            time.sleep(1.0)  # long enough for a duplicate to show up if one were coming
            assert len(late.at("/late")) == 1
            assert len(receiver.at("/killed-slack")) == 1
        finally:
            target.status = 200
            stop_server(again)


def test_a_maintenance_window_holds_the_incident_until_it_ends(
    flow_server: Server, receiver: Receiver, target: Target
) -> None:
    owner: Persona = register(flow_server)
    with owner.client() as c:
        monitor = create_monitor(c, monitor_body(target, receiver, "maint", alertWebhookUrl=receiver.url("/maint")))
        mid = monitor["id"]
        wait_for(lambda: c.get(f"/api/v1/monitors/{mid}").json()["status"] == "up", what="up")
        now = datetime.now(UTC).replace(microsecond=0)
        ends = now + timedelta(seconds=8)
        window = {
            "name": "deploy",
            "startsAt": (now - timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
            "endsAt": ends.isoformat().replace("+00:00", "Z"),
            "monitorIds": [mid],
        }
        r = c.post("/api/v1/maintenance-windows", json=window)
        assert r.status_code == 201, r.text
        wait_for(lambda: c.get(f"/api/v1/monitors/{mid}").json()["status"] == "maintenance", what="maintenance")
        target.status = 500
        # Down during the window: the checks go on and are stored, but no incident and no message.
        wait_for(
            lambda: sum(not ch["ok"] for ch in c.get(f"/api/v1/monitors/{mid}/checks").json()["checks"]) >= 3,
            what="three failed checks",
        )
        assert datetime.now(UTC) < ends, "the window ended before the failures were seen; lengthen it"
        assert incidents_of(c, mid) == []
        assert receiver.at("/maint") == []
        # Still down when the window ends: the incident opens then.
        (incident,) = wait_for(lambda: incidents_of(c, mid), what="the incident after the window")
        assert datetime.fromisoformat(incident["startedAt"]) >= ends - timedelta(seconds=1)
        assert receiver.wait_for("/maint")[0].json()["type"] == "incident.opened"
        target.status = 200


def test_a_flapping_target_keeps_one_incident_and_repeats_stop_on_acknowledge(
    flow_server: Server, receiver: Receiver, target: Target
) -> None:
    owner = register(flow_server)
    with owner.client() as c:
        body = monitor_body(target, receiver, "flap", alertWebhookUrl=receiver.url("/flap"), alertRepeatIntervalMin=5)
        mid = create_monitor(c, body)["id"]
        wait_for(lambda: c.get(f"/api/v1/monitors/{mid}").json()["status"] == "up", what="up")
        target.status = 500
        (incident,) = wait_for(lambda: incidents_of(c, mid), what="an incident")
        target.status = 200
        wait_for(lambda: incidents_of(c, mid)[0]["resolvedAt"], what="the resolve")
        target.status = 500  # down again well within the 300 s reopen window
        wait_for(lambda: incidents_of(c, mid)[0]["resolvedAt"] is None, what="the reopen")
        (again,) = incidents_of(c, mid)
        assert again["id"] == incident["id"]
        events = [s.json()["type"] for s in receiver.wait_for("/flap", 3)]
        assert events == ["incident.opened", "incident.resolved", "incident.reopened"]
        detail = c.get(f"/api/v1/incidents/{incident['id']}").json()
        assert [u["status"] for u in detail["updates"]] == ["investigating", "resolved", "investigating"]

        # The repeat is due (moved forward in the database rather than waiting five minutes): the down
        # alert goes out again; once acknowledged, no more repeats.
        def make_repeat_due() -> None:
            flow_server.sql(
                update(incidents).where(incidents.c.id == incident["id"]).values(next_repeat_at=datetime.now(UTC))
            )

        make_repeat_due()
        repeat = receiver.wait_for("/flap", 4)[3].json()
        assert repeat["type"] == "incident.opened"
        assert repeat["data"]["incident"]["id"] == incident["id"]
        assert c.post(f"/api/v1/incidents/{incident['id']}/acknowledge").status_code == 200
        assert receiver.wait_for("/flap", 5)[4].json()["type"] == "incident.acknowledged"
        make_repeat_due()
        time.sleep(1.5)  # the engine looks every second
        assert len(receiver.at("/flap")) == 5
        target.status = 200
