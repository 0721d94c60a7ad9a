"""Alert delivery: the outbox dispatcher against real local receivers and a real database, and the
test-alert route against the session server.

The dispatcher runs in-process on its own database (a SQLite file; on PostgreSQL a database of its own
next to OBSERVE_TEST_DATABASE_URL's, since the session server's dispatcher would claim rows from it).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update
from standardwebhooks import Webhook

from core import clock
from core.alerts.dispatcher import Dispatcher
from core.alerts.outbox import enqueue
from core.config import Settings
from core.incidents.tables import alert_deliveries, alert_outbox
from core.monitors.store import MonitorStore
from core.storage import tables as t
from core.storage.db import Database
from core.storage.migrate import migrate
from core.storage.sealing import Sealer
from tests.conftest import PG_URL, Persona, database_beside
from tests.receivers import Answer, Receiver, recording_receiver, standard_answer

PAYLOAD = {
    "incident": {"id": 1, "title": "api is down", "status": "investigating"},
    "monitor": {"id": 1, "name": "api", "type": "http", "status": "down"},
}


# ---- a receiver ------------------------------------------------------------------


def delivery_answer(path: str, seen: int) -> Answer:
    """``/flaky/…`` 500 twice, then 200; ``/limited/…`` 429 with Retry-After: 1 once, then 200; ``/slow/…``
    200 after 30 ms; else as the standard receiver (``/status/N/…``, ``/hang/…``, 200)."""
    kind = path.split("/")[1]
    if kind == "flaky" and seen < 2:
        return 500, []
    if kind == "limited" and seen < 1:
        return 429, [("Retry-After", "1")]
    if kind == "slow":
        time.sleep(0.03)
    return standard_answer(path, seen)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with recording_receiver(answer=delivery_answer) as r:
        yield r


# ---- a database of the dispatcher's own ------------------------------------------


@dataclass
class Env:
    url: str
    settings: Settings
    sealer: Sealer
    org_id: int = 0


@pytest.fixture(scope="module", params=["sqlite"] + (["postgresql"] if PG_URL else []))
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Env:
    tmp: Path = tmp_path_factory.mktemp("dispatch")
    url = (
        database_beside(PG_URL, "_dispatch")
        if request.param == "postgresql" and PG_URL
        else f"sqlite+aiosqlite:///{tmp}/a.db"
    )
    settings = Settings(
        data_dir=tmp,
        database_url=url,
        public_url="http://observe.test",
        allow_private_targets=True,
        alert_retry_delays=(0.2, 0.2, 0.2, 0.2),
    )
    out = Env(url, settings, Sealer([("k1", os.urandom(32))]))

    async def prepare() -> None:
        async with database(out) as db:
            await migrate(db)
            async with db.write() as conn:
                out.org_id = (
                    await conn.execute(insert(t.orgs).values(name="o", created_at=clock.now()).returning(t.orgs.c.id))
                ).scalar_one()

    asyncio.run(prepare())
    return out


@pytest.fixture(autouse=True)
def _empty_outbox(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "env" not in request.fixturenames:
        return
    e: Env = request.getfixturevalue("env")

    async def empty() -> None:
        async with database(e) as db, db.write() as conn:
            await conn.execute(delete(alert_outbox))

    asyncio.run(empty())


@asynccontextmanager
async def database(e: Env) -> AsyncIterator[Database]:
    db = Database(e.url)
    try:
        yield db
    finally:
        await db.close()


async def add_monitor(db: Database, e: Env, **alerts: str) -> int:
    store = MonitorStore(e.sealer, e.settings.public_base)
    m = {"name": "api", "type": "http", "url": "http://127.0.0.1:1/", "intervalSec": 60, "timeoutMs": 5000,
         "tags": [], "failureThreshold": 1, "recoveryThreshold": 1, **alerts}  # fmt: skip
    async with db.write() as conn:
        return await store.insert(conn, e.org_id, m, clock.now())


async def add_alerts(db: Database, e: Env, monitor_id: int, times: int = 1) -> list[int]:
    """Queues ``times`` incident.opened events for the monitor; returns the outbox ids, oldest first."""
    async with db.write() as conn:
        for _ in range(times):
            await enqueue(conn, org_id=e.org_id, monitor_id=monitor_id, incident_id=None,
                          event="incident.opened", payload=PAYLOAD, now=clock.precise_now())  # fmt: skip
        ids = (await conn.execute(select(alert_outbox.c.id).where(alert_outbox.c.monitor_id == monitor_id))).all()
    return sorted(row.id for row in ids)


async def outbox(db: Database, outbox_id: int) -> Any:
    async with db.read() as conn:
        return (await conn.execute(select(alert_outbox).where(alert_outbox.c.id == outbox_id))).one()


async def records(db: Database, outbox_id: int) -> list[Any]:
    async with db.read() as conn:
        query = select(alert_deliveries).where(alert_deliveries.c.outbox_id == outbox_id)
        return list((await conn.execute(query.order_by(alert_deliveries.c.id))).all())


async def settled(db: Database, outbox_id: int, within: float = 8) -> Any:
    """The outbox row once it is delivered or failed."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        row = await outbox(db, outbox_id)
        if row.state != "pending":
            return row
        await asyncio.sleep(0.02)
    raise AssertionError(f"outbox row {outbox_id} still pending")


async def until(check: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within the deadline")


@asynccontextmanager
async def dispatching(e: Env, db: Database, **kwargs: Any) -> AsyncIterator[Dispatcher]:
    dispatcher = Dispatcher(db=db, settings=e.settings, sealer=e.sealer, **kwargs)
    await dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.stop()


def counted(dispatcher: Dispatcher) -> dict[tuple[str, str], float]:
    (family, *_) = list(dispatcher.collect())
    return {(s.labels["channel"], s.labels["outcome"]): s.value for s in family.samples if s.name.endswith("_total")}


# ---- the dispatcher ----------------------------------------------------------------


def test_a_5xx_is_retried_until_delivered_and_every_attempt_recorded(env: Env, receiver: Receiver) -> None:
    async def run() -> None:
        async with database(env) as db:
            monitor = await add_monitor(db, env, alertWebhookUrl=receiver.url("/flaky/1"))
            (row_id,) = await add_alerts(db, env, monitor)
            async with dispatching(env, db) as dispatcher:
                dispatcher.wake()
                row = await settled(db, row_id)
                assert counted(dispatcher) == {("webhook", "retrying"): 2, ("webhook", "delivered"): 1}
            assert (row.state, row.attempts, row.claimed_by) == ("delivered", 3, None)
            assert row.done_at is not None
            done = await records(db, row_id)
        assert [(r.attempt, r.outcome, r.http_status) for r in done] == [
            (1, "retrying", 500),
            (2, "retrying", 500),
            (3, "delivered", 200),
        ]
        assert done[0].error == "HTTP 500"
        assert done[2].error is None
        hits = receiver.at("/flaky/1")
        # One message: the same webhook-id on every attempt, so a receiver can drop repeats.
        assert {hit.headers["webhook-id"] for hit in hits} == {f"msg_{row_id}"}
        gaps = [b.at - a.at for a, b in itertools.pairwise(hits)]
        assert all(gap >= 0.15 for gap in gaps), gaps  # 0.2 s ± 20 %
        assert json.loads(hits[-1].body)["type"] == "incident.opened"

    asyncio.run(run())


def test_a_4xx_fails_at_once_and_a_removed_channel_fails(env: Env, receiver: Receiver) -> None:
    async def run() -> None:
        async with database(env) as db:
            refused = await add_monitor(db, env, alertSlackUrl=receiver.url("/status/400/x"))
            removed = await add_monitor(db, env, alertDiscordUrl=receiver.url("/ok/removed"))
            (refused_row,) = await add_alerts(db, env, refused)
            (removed_row,) = await add_alerts(db, env, removed)
            async with db.write() as conn:  # the channel goes after the alert was queued
                await conn.execute(
                    update(t.monitors).where(t.monitors.c.id == removed).values(secrets=None, secret_fields="[]")
                )
            async with dispatching(env, db):
                refused_out = await settled(db, refused_row)
                removed_out = await settled(db, removed_row)
            assert (refused_out.state, refused_out.attempts) == ("failed", 1)
            assert [(r.attempt, r.outcome, r.http_status, r.error) for r in await records(db, refused_row)] == [
                (1, "failed", 400, "HTTP 400")
            ]
            assert removed_out.state == "failed"
            assert [(r.outcome, r.error) for r in await records(db, removed_row)] == [
                ("failed", "channel no longer configured")
            ]
        assert len(receiver.at("/status/400")) == 1
        assert receiver.at("/ok/removed") == []

    asyncio.run(run())


def test_a_hanging_channel_holds_up_no_other(env: Env, receiver: Receiver) -> None:
    async def run() -> None:
        async with database(env) as db:
            hanging = await add_monitor(db, env, alertSlackUrl=receiver.url("/hang/1"))
            others = await add_monitor(
                db,
                env,
                alertWebhookUrl=receiver.url("/ok/webhook"),
                alertDiscordUrl=receiver.url("/ok/discord"),
                alertSlackUrl=receiver.url("/ok/slack"),
            )
            (hanging_row,) = await add_alerts(db, env, hanging)
            async with dispatching(env, db) as dispatcher:
                dispatcher.wake()
                await until(lambda: bool(receiver.at("/hang/1")), within=5)
                # The slack attempt now hangs; the other monitor's alerts arrive regardless.
                await add_alerts(db, env, others)
                queued = time.monotonic()
                dispatcher.wake()
                await until(lambda: len(receiver.at("/ok/")) >= 3, within=5)
                arrived = [hit.at - queued for hit in receiver.at("/ok/")]
                still = await outbox(db, hanging_row)
                receiver.release.set()
        assert len(arrived) == 3
        assert max(arrived) < 1.0, arrived
        assert (still.state, still.attempts) == ("pending", 0)

    asyncio.run(run())


def test_retry_after_is_honoured(env: Env, receiver: Receiver) -> None:
    async def run() -> None:
        async with database(env) as db:
            monitor = await add_monitor(db, env, alertSlackUrl=receiver.url("/limited/1"))
            (row_id,) = await add_alerts(db, env, monitor)
            async with dispatching(env, db) as dispatcher:
                dispatcher.wake()
                row = await settled(db, row_id)
            assert row.state == "delivered"
            assert [(r.outcome, r.http_status) for r in await records(db, row_id)] == [
                ("retrying", 429),
                ("delivered", 200),
            ]
        first, second = receiver.at("/limited/1")
        # Retry-After: 1 beats the 0.2 s delay.
        assert 0.95 <= second.at - first.at < 2.0, second.at - first.at

    asyncio.run(run())


def test_two_dispatchers_deliver_each_row_once(env: Env, receiver: Receiver) -> None:
    async def run() -> None:
        async with database(env) as db, database(env) as other_db:
            monitor = await add_monitor(db, env, alertWebhookUrl=receiver.url("/slow/many"))
            ids = await add_alerts(db, env, monitor, times=50)
            async with dispatching(env, db, concurrency=5) as one, dispatching(env, other_db, concurrency=5) as two:
                one.wake()
                two.wake()
                for row_id in ids:
                    assert (await settled(db, row_id, within=15)).state == "delivered"
                shares = [counted(one).get(("webhook", "delivered"), 0), counted(two).get(("webhook", "delivered"), 0)]
            async with db.read() as conn:
                done = (await conn.execute(select(alert_deliveries.c.outbox_id))).all()
        arrivals = Counter(hit.headers["webhook-id"] for hit in receiver.at("/slow/many"))
        assert arrivals == Counter({f"msg_{row_id}": 1 for row_id in ids})
        assert sorted(row.outbox_id for row in done) == ids
        assert sum(shares) == 50
        assert min(shares) > 0, shares  # both took part

    asyncio.run(run())


# ---- test alerts over REST ------------------------------------------------------------


def test_test_alert_tries_each_channel_once(owner: Persona, outsider: Persona, receiver: Receiver) -> None:
    with owner.client() as c:
        base = {"type": "http", "url": "http://127.0.0.1:1/", "paused": True}
        both = c.post(
            "/api/v1/monitors",
            json={**base, "name": "both", "alertWebhookUrl": receiver.url("/ok/hook"),
                  "alertSlackUrl": receiver.url("/ok/slack")},
        )  # fmt: skip
        assert both.status_code == 201, both.text
        refused = c.post("/api/v1/monitors", json={**base, "name": "r", "alertDiscordUrl": receiver.url("/status/400")})
        silent = c.post("/api/v1/monitors", json={**base, "name": "none"})
        r = c.post(f"/api/v1/monitors/{both.json()['id']}/test-alert")
        assert r.status_code == 200, r.text
        assert sorted(r.json()["results"], key=lambda x: x["channel"]) == [
            {"channel": "slack", "ok": True, "httpStatus": 200, "error": None},
            {"channel": "webhook", "ok": True, "httpStatus": 200, "error": None},
        ]
        assert c.post(f"/api/v1/monitors/{refused.json()['id']}/test-alert").json() == {
            "results": [{"channel": "discord", "ok": False, "httpStatus": 400, "error": "HTTP 400"}]
        }
        assert c.post(f"/api/v1/monitors/{silent.json()['id']}/test-alert").json() == {"results": []}
        secret = c.get("/api/v1/me/webhook-secret").json()["secret"]
        assert c.post("/api/v1/monitors/999999999/test-alert").status_code == 404
    with outsider.client() as c:  # another org's monitor is not found
        assert c.post(f"/api/v1/monitors/{both.json()['id']}/test-alert").status_code == 404

    (hook,) = receiver.at("/ok/hook")
    sent = Webhook(secret).verify(hook.body, hook.headers)  # signed with the org's secret
    assert sent["type"] == "test"
    assert sent["data"]["incident"] is None
    assert sent["data"]["monitor"]["name"] == "both"
    assert sent["data"]["monitor"]["hasAlertWebhook"] is True
    (slack,) = receiver.at("/ok/slack")
    assert "Test alert for both" in json.loads(slack.body)["text"]
