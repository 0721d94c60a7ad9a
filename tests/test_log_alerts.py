"""Log alerts: CRUD with validation, roles, scopes and audit over REST (the session server); the whole path
from ingested records to a signed webhook on a server of its own that evaluates every 0.5 s (cooldown,
grouping, a manual resolve, delete); and the evaluator itself against a real database and log store with
the clock in the test's hands (a window passing below the threshold resolves; one round, one process).

The server and the in-process evaluator each get a database of their own on PostgreSQL (beside
OBSERVE_TEST_DATABASE_URL's): the session server evaluates every 10 s and would claim their rounds.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select
from standardwebhooks import Webhook

from core import clock
from core.config import Settings
from core.incidents.tables import alert_outbox, incident_updates, incidents
from core.log_alerts.evaluator import Claimed, Group, LogAlertEvaluator, Open, Resolve, decide, incident_title
from core.log_alerts.store import LogAlertStore
from core.log_alerts.tables import log_alerts
from core.logs.store import IdSource, LogStore
from core.storage import tables as t
from core.storage.db import Database
from core.storage.migrate import migrate
from core.storage.sealing import Sealer
from tests.conftest import PG_URL, Persona, Server, Team, database_beside, register, start_server, stop_server
from tests.logs_cases import record
from tests.polling import wait_for
from tests.receivers import Receiver, recording_receiver

API = "/api/v1/log-alerts"
HOOK = "/hooks/log-alerts"
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def body(**extra: Any) -> dict[str, Any]:
    return {"name": "api errors", "query": "level>=error service:api", "threshold": 5, "windowSec": 60, **extra}


def fields(r: httpx.Response) -> list[tuple[str, str]]:
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "VALIDATION_FAILED"
    return [(f["path"], f["code"]) for f in r.json()["fields"]]


# ---- CRUD on the session server --------------------------------------------------------------------


def test_crud_defaults_validation_secrets_and_audit(owner: Persona, outsider: Persona) -> None:
    with owner.client() as c:
        r = c.post(API, json=body(name="  api errors ", alertWebhookUrl="https://hooks.example.com/s3cret"))
        assert r.status_code == 201, r.text
        alert = r.json()
        assert alert["name"] == "api errors"
        assert (alert["windowSec"], alert["cooldownSec"], alert["groupBy"], alert["paused"]) == (60, 300, "", False)
        assert alert["hasAlertWebhook"] is True
        assert alert["hasAlertSlack"] is False
        assert alert["firing"] is False
        assert alert["lastTriggeredAt"] is None
        assert "s3cret" not in r.text
        aid = alert["id"]

        # Defaults, required fields, ranges, and the query's grammar with its position.
        r = c.post(API, json={"name": "d", "query": "", "threshold": 1})
        assert r.status_code == 201, r.text
        assert r.json()["windowSec"] == 300
        assert sorted(fields(c.post(API, json={"name": "x"}))) == [("query", "required"), ("threshold", "required")]
        assert fields(c.post(API, json=body(windowSec=30))) == [("windowSec", "too_small")]
        assert fields(c.post(API, json=body(threshold=0))) == [("threshold", "too_small")]
        assert fields(c.post(API, json=body(groupBy="host"))) == [("groupBy", "invalid_enum_value")]
        assert fields(c.post(API, json=body(unknown=1))) == [("unknown", "unrecognized_keys")]
        bad = c.post(API, json=body(query="level>=error (service:api"))
        assert fields(bad) == [("query", "invalid_string")]
        assert bad.json()["fields"][0]["message"] == "'(' is never closed at position 14"
        assert fields(c.post(API, json=body(alertTelegramBotToken="123456:" + "t" * 35))) == [
            ("alertTelegramChatId", "required")
        ]

        # PATCH merges, re-checks the whole, and null restores a default or clears a channel.
        r = c.patch(f"{API}/{aid}", json={"threshold": 10, "groupBy": "service", "alertEmail": "ops@example.com"})
        assert r.status_code == 200, r.text
        assert (r.json()["threshold"], r.json()["groupBy"], r.json()["query"]) == (10, "service", body()["query"])
        assert r.json()["alertEmail"] == "ops@example.com"
        assert r.json()["hasAlertEmail"] is True
        assert fields(c.patch(f"{API}/{aid}", json={"query": "-"})) == [("query", "invalid_string")]
        assert fields(c.patch(f"{API}/{aid}", json={"name": None})) == [("name", "required")]
        r = c.patch(f"{API}/{aid}", json={"windowSec": None, "alertWebhookUrl": None})
        assert (r.json()["windowSec"], r.json()["hasAlertWebhook"]) == (300, False), r.text

        listed = c.get(API).json()
        assert len(listed["alerts"]) == 2
        assert listed["alerts"][0]["id"] == aid
        page = c.get(API, params={"limit": 1}).json()
        assert len(page["alerts"]) == 1
        assert page["nextCursor"]
        assert c.get(API, params={"cursor": "nope"}).status_code == 400

        entries = c.get("/api/v1/audit-logs").json()["entries"]
        actions = [e["action"] for e in entries]
        assert actions[:3] == ["UPDATE_LOG_ALERT", "UPDATE_LOG_ALERT", "CREATE_LOG_ALERT"], actions
        assert "s3cret" not in str(entries)
        assert entries[3]["resource"] == f"log-alert:{aid}"
        cleared = entries[0]["meta"]["diff"]
        assert cleared["alertWebhookUrl"] == {"redacted": True}
        assert cleared["windowSec"] == {"from": 60, "to": 300}

    # Another org sees nothing, and changes nothing.
    with outsider.client() as c:
        assert c.get(f"{API}/{aid}").status_code == 404
        assert c.patch(f"{API}/{aid}", json={"threshold": 1}).status_code == 404
        assert c.delete(f"{API}/{aid}").status_code == 404
        assert c.get(API).json()["alerts"] == []

    with owner.client() as c:
        assert c.delete(f"{API}/{aid}").status_code == 204
        assert c.get(f"{API}/{aid}").status_code == 404
        entry = c.get("/api/v1/audit-logs", params={"action": "DELETE_LOG_ALERT"}).json()["entries"][0]
        assert entry["meta"]["snapshot"]["name"] == "api errors"


def test_roles_and_scopes(team: Team) -> None:
    with team.viewer.client() as c:
        assert c.post(API, json=body()).status_code == 403
        assert c.get(API).status_code == 200
    with team.member.client() as c:
        r = c.post(API, json=body())
        assert r.status_code == 201, r.text
        aid = r.json()["id"]
        assert c.patch(f"{API}/{aid}", json={"paused": True}).json()["paused"] is True
    reader = team.owner.mint(scopes=["alerts:read"])["token"]
    with team.owner.client(reader) as c:
        assert c.get(f"{API}/{aid}").status_code == 200
        r = c.delete(f"{API}/{aid}")
        assert (r.status_code, r.json()["code"]) == (403, "PAT_SCOPE_INSUFFICIENT")
    logs_only = team.owner.mint(scopes=["logs:read"])["token"]
    with team.owner.client(logs_only) as c:
        assert c.get(API).status_code == 403
    with team.member.client() as c:
        assert c.delete(f"{API}/{aid}").status_code == 204


# ---- end to end on a server of its own ---------------------------------------------------------------


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with recording_receiver() as r:
        yield r


@pytest.fixture(scope="module", params=BACKENDS)
def alert_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    backend = request.param
    srv = start_server(
        tmp_path_factory.mktemp(f"log-alerts-{backend}"),
        backend=backend,
        database_url=database_beside(PG_URL, "_logalerts") if backend == "postgresql" and PG_URL else None,
        extra_env={
            "OBSERVE_LOG_ALERT_INTERVAL_SEC": "0.5",
            "OBSERVE_ALLOW_PRIVATE_TARGETS": "true",
            "OBSERVE_ALERT_RETRY_DELAYS": "0.3,0.6,1.2,2.4",
        },
    )
    yield srv
    stop_server(srv)


def ingest(c: httpx.Client, service: str, count: int, level: str = "error") -> None:
    records = [{"level": level, "service": service, "message": f"boom {i}"} for i in range(count)]
    r = c.post("/api/v1/logs", json=records)
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == count


def log_incidents(c: httpx.Client, alert_id: int) -> list[dict[str, Any]]:
    return [i for i in c.get("/api/v1/incidents").json()["incidents"] if i["logAlertId"] == alert_id]


def evaluated_after(c: httpx.Client, alert_id: int, moment: float) -> None:
    """Waits for two rounds that began after ``moment`` (time.time()): lastEvaluatedAt is whole seconds."""

    def seen() -> bool:
        at = c.get(f"{API}/{alert_id}").json()["lastEvaluatedAt"]
        return at is not None and datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() >= moment + 1

    wait_for(seen, what="an evaluation after the records", timeout=15)


def test_error_records_open_an_incident_and_a_signed_webhook_arrives(alert_server: Server, receiver: Receiver) -> None:
    owner = register(alert_server)
    path = f"{HOOK}/{uuid.uuid4().hex}"  # the receiver outlives the servers of both backends
    with owner.client() as c:
        secret = c.get("/api/v1/me/webhook-secret").json()["secret"]
        r = c.post(API, json=body(alertWebhookUrl=receiver.url(path)))
        assert r.status_code == 201, r.text
        aid = r.json()["id"]
        # Four errors of api, and what the query leaves out: no incident.
        ingest(c, "api", 4)
        ingest(c, "api", 3, level="info")
        ingest(c, "web", 5)
        evaluated_after(c, aid, time.time())
        assert log_incidents(c, aid) == []
        assert receiver.at(path) == []

        # The fifth opens one.
        ingest(c, "api", 1)
        (incident,) = wait_for(lambda: log_incidents(c, aid), what="the incident")
        assert incident["monitorId"] is None
        assert incident["status"] == "investigating"
        assert incident["title"] == "api errors: 5 matching log records in 1 min"
        assert incident["cause"]["reason"] == "log_alert"
        assert incident["cause"]["error"] == "5 matching log records in 1 min (threshold 5)"
        hook = receiver.wait_for(path)[0]
        event = Webhook(secret).verify(hook.body, hook.headers)  # raises unless the signature holds
        assert event["type"] == "incident.opened"
        assert event["data"]["incident"]["id"] == incident["id"]
        assert event["data"]["incident"]["logAlertId"] == aid
        assert event["data"]["monitor"] is None
        alert = c.get(f"{API}/{aid}").json()
        assert alert["firing"] is True
        assert alert["lastTriggeredAt"] is not None
        detail = c.get(f"/api/v1/incidents/{incident['id']}").json()
        assert detail["logAlertId"] == aid
        assert "at or above the threshold of 5" in detail["updates"][0]["message"]
        # Internal: no status page shows a log alert's incident (manual ones show on every page).
        slug = f"logs-{uuid.uuid4().hex[:8]}"
        page = c.post("/api/v1/status-pages", json={"name": "Status", "slug": slug, "published": True})
        assert page.status_code == 201, page.text
        assert c.get(f"/api/v1/status-pages/public/{slug}").json()["activeIncidents"] == []

        # Resolved by hand while the count stays high: the cooldown (300 s) opens no other, and the
        # alert's own channel hears of the resolve.
        assert c.post(f"/api/v1/incidents/{incident['id']}/resolve", json={}).status_code == 200
        resolved = receiver.wait_for(path, 2)[1]
        assert Webhook(secret).verify(resolved.body, resolved.headers)["type"] == "incident.resolved"
        ingest(c, "api", 2)
        evaluated_after(c, aid, time.time())
        assert [i["id"] for i in log_incidents(c, aid)] == [incident["id"]]
        assert c.get(f"{API}/{aid}").json()["firing"] is False

        # Grouped by service without a cooldown: one incident per service over the threshold, and
        # again at once after a manual resolve.
        r = c.post(API, json=body(name="errors", query="level>=error", groupBy="service", cooldownSec=0))
        grouped = r.json()["id"]
        opened = wait_for(lambda: len(log_incidents(c, grouped)) == 2 and log_incidents(c, grouped), what="two")
        titles = sorted(i["title"] for i in opened)
        assert titles == [
            "errors: 5 matching log records in 1 min (service web)",
            "errors: 7 matching log records in 1 min (service api)",
        ]
        web = next(i for i in opened if "web" in i["title"])
        assert c.post(f"/api/v1/incidents/{web['id']}/resolve", json={}).status_code == 200
        again = wait_for(lambda: len(log_incidents(c, grouped)) == 3 and log_incidents(c, grouped), what="again")
        assert "(service web)" in again[0]["title"]
        assert again[0]["resolvedAt"] is None

        # Deleting an alert resolves what it left open, with an update saying so.
        assert c.delete(f"{API}/{grouped}").status_code == 204
        left = log_incidents(c, grouped)
        assert all(i["resolvedAt"] is not None for i in left)
        assert left[0]["updates"][-1]["message"] == "The log alert errors was deleted."


# ---- the evaluator in process: the clock in the test's hands ----------------------------------------


@asynccontextmanager
async def evaluation_env(backend: str, tmp: Path) -> AsyncIterator[tuple[Database, LogStore, LogAlertStore]]:
    if backend == "postgresql":
        from core.logs.postgres_store import PostgresLogStore

        assert PG_URL is not None
        db = Database(await asyncio.to_thread(database_beside, PG_URL, "_logalerts_eval"))
        store: LogStore = PostgresLogStore(db)
    else:
        from core.logs.sqlite_store import SqliteLogStore

        db = Database(f"sqlite+aiosqlite:///{tmp}/main.db")
        store = SqliteLogStore(str(tmp / "logs.db"))
    await migrate(db)
    await store.open()
    try:
        yield db, store, LogAlertStore(Sealer([("k1", os.urandom(32))]))
    finally:
        await store.close()
        await db.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_window_below_the_threshold_resolves_and_a_round_is_claimed_once(backend: str, tmp_path: Path) -> None:
    async def run() -> None:
        async with evaluation_env(backend, tmp_path) as (db, store, alerts):
            t0 = clock.now()
            async with db.write() as conn:
                org = (
                    await conn.execute(insert(t.orgs).values(name="o", created_at=t0).returning(t.orgs.c.id))
                ).scalar_one()
                m = {**body(), "windowSec": 60, "cooldownSec": 300, "groupBy": "", "paused": False,
                     "alertWebhookUrl": "http://127.0.0.1:9/hook"}  # fmt: skip
                aid = await alerts.insert(conn, org, m, t0)
            errors = [record(f"boom {i}", "api", 17, t0 - timedelta(seconds=10)) for i in range(5)]
            await store.write(IdSource(14).assign([(org, r) for r in errors], t0))
            settings = Settings(data_dir=tmp_path, log_alert_interval_sec=10)
            woken: list[int] = []
            one = LogAlertEvaluator(db=db, settings=settings, store=store, notify=lambda: woken.append(1))
            other = LogAlertEvaluator(db=db, settings=settings, store=store)

            # One process claims the round; the other finds nothing due until the interval passes.
            assert await one.run_once(t0) == 1
            assert await other.run_once(t0 + timedelta(seconds=5)) == 0
            async with db.read() as conn:
                (opened,) = (await conn.execute(select(incidents).where(incidents.c.log_alert_id == aid))).all()
                rows = (await conn.execute(select(alert_outbox).where(alert_outbox.c.log_alert_id == aid))).all()
            assert opened.resolved_at is None
            assert opened.monitor_id is None
            assert woken == [1]
            assert [(r.channel, r.event) for r in rows] == [("webhook", "incident.opened")]

            # Still over the threshold: nothing new. A window later the records are out of it: resolved.
            assert await other.run_once(t0 + timedelta(seconds=20)) == 1
            assert await one.run_once(t0 + timedelta(seconds=55)) == 1
            async with db.read() as conn:
                assert (await conn.execute(select(incidents.c.resolved_at).where(incidents.c.id == opened.id))).scalar()
                last = (
                    await conn.execute(
                        select(incident_updates.c.message)
                        .where(incident_updates.c.incident_id == opened.id)
                        .order_by(incident_updates.c.id.desc())
                    )
                ).first()
                events = (
                    await conn.execute(select(alert_outbox.c.event).where(alert_outbox.c.log_alert_id == aid))
                ).scalars()
                assert sorted(events) == ["incident.opened", "incident.resolved"]
            assert last is not None
            assert last.message == "api errors: 0 matching log records in 1 min, below the threshold of 5. Resolved."

            # A round overtaken by an edit writes nothing: its count is stale.
            more = [record(f"again {i}", "api", 17, t0 + timedelta(seconds=400)) for i in range(5)]
            await store.write(IdSource(14).assign([(org, r) for r in more], t0 + timedelta(seconds=400)))
            later = t0 + timedelta(seconds=401)
            claimed = await one._claim(later)
            async with db.write() as conn:
                row = (await conn.execute(select(log_alerts).where(log_alerts.c.id == aid))).one()
                await alerts.update(conn, row, {**m, "threshold": 5}, later, due=True)
            assert await one._apply(claimed[0], [Open("", 5)], later) == 0
            assert await one.run_once(later) == 1  # the edit made it due again: this round opens it
            async with db.read() as conn:
                count = len((await conn.execute(select(incidents.c.id).where(incidents.c.log_alert_id == aid))).all())
            assert count == 2

    asyncio.run(run())


def test_decisions_cooldown_groups_and_titles() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    alert = Claimed(1, 1, "checkout", "level:error", 5, 60, "service", 300, 1, {})
    assert decide(alert, {"api": 4, "web": 5}, now) == [Open("web", 5)]
    recent = Group(None, now - timedelta(seconds=299))
    cooled = Group(None, now - timedelta(seconds=300))
    firing = Group(7, now - timedelta(hours=1))
    alert = Claimed(1, 1, "checkout", "level:error", 5, 60, "service", 300, 1,
                    {"api": recent, "web": cooled, "db": firing, "old": Group(8, None)})  # fmt: skip
    assert decide(alert, {"api": 9, "web": 6, "db": 50}, now) == [Open("web", 6), Resolve("old", 8, 0)]
    assert incident_title(alert, "api", 9) == "checkout: 9 matching log records in 1 min (service api)"
    assert incident_title(alert, "", 1) == "checkout: 1 matching log record in 1 min (no service)"
    long = Claimed(1, 1, "n" * 200, "", 5, 3600, "", 0, 1, {})
    title = incident_title(long, "", 12)
    assert len(title) == 200
    assert title.endswith(": 12 matching log records in 1 h")
    # Many services at once: the largest counts first, at most 50 open.
    many = {f"s{i:03}": 100 + i for i in range(80)}
    opened = decide(Claimed(1, 1, "x", "", 5, 60, "service", 0, 1, {}), many, now)
    assert len(opened) == 50
    assert opened[0] == Open("s079", 179)
