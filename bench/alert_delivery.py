"""Benchmark: alert deliveries per second through the outbox, against a bare POST loop.

N alerts are queued in the outbox (one transaction, as incidents queue them) and one Dispatcher delivers
them to a local receiver (raw asyncio, a fixed 204, in its own process so its CPU is not counted): claim,
open the monitor's sealed target, one POST on a fresh connection through the SSRF-checked path, then the
delivery record and the outbox update in one transaction per attempt. The floor is an
``httpx.AsyncClient`` posting the same Slack body to the same receiver with the same concurrency (keep-alive
connections, nothing recorded). Both run in this process, in the same run.

    python -m bench.alert_delivery [--alerts 2000] [--concurrency 64] [--database-url URL] [--loop uvloop|asyncio]

Without --database-url a fresh SQLite file in a temporary directory is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvloop
from sqlalchemy import func, insert, select

from core import clock
from core.alerts import AlertMessage, ChannelSettings
from core.alerts.dispatcher import Dispatcher
from core.alerts.outbox import enqueue
from core.alerts.slack import SlackChannel
from core.alerts.slack import payload as slack_payload
from core.config import Settings
from core.incidents.tables import alert_deliveries
from core.monitors.store import MonitorStore
from core.storage import tables as t
from core.storage.db import Database
from core.storage.migrate import migrate
from core.storage.sealing import Sealer

RESPONSE = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
PAYLOAD = {
    "incident": {"id": 1, "title": "api.example.com is down", "status": "investigating",
                 "cause": {"reason": "status", "statusCode": 500, "error": "HTTP 500"}, "durationSec": 0},
    "monitor": {"id": 1, "name": "api.example.com", "type": "https", "status": "down"},
}  # fmt: skip


class _Receiver(asyncio.Protocol):
    """Answers every request (one blank line ends its headers; bodies are JSON) with 204, keep-alive."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.tail = b""

    def data_received(self, data: bytes) -> None:
        chunk = self.tail + data
        self.transport.write(RESPONSE * chunk.count(b"\r\n\r\n"))
        self.tail = chunk[-3:]


def _serve(sock: socket.socket) -> None:
    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(_Receiver, sock=sock, backlog=4096)
        await server.serve_forever()

    uvloop.run(serve())


def start_receiver() -> int:
    with socket.create_server(("127.0.0.1", 0), backlog=4096) as sock:
        multiprocessing.get_context("fork").Process(target=_serve, args=(sock,), daemon=True).start()
        return int(sock.getsockname()[1])


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def through_outbox(url: str, data_dir: Path, hook: str, alerts: int, concurrency: int) -> dict[str, float]:
    settings = Settings(data_dir=data_dir, database_url=url, allow_private_targets=True)
    sealer = Sealer([("bench", os.urandom(32))])
    db = Database(url)
    try:
        await migrate(db)
        store = MonitorStore(sealer, settings.public_base)
        monitor = {"name": "api.example.com", "type": "https", "url": "https://api.example.com/",
                   "intervalSec": 60, "timeoutMs": 5000, "tags": [], "failureThreshold": 1,
                   "recoveryThreshold": 1, "alertSlackUrl": hook}  # fmt: skip
        async with db.write() as conn:
            org_id = (
                await conn.execute(insert(t.orgs).values(name="bench", created_at=clock.now()).returning(t.orgs.c.id))
            ).scalar_one()
            monitor_id = await store.insert(conn, org_id, monitor, clock.now())
            for _ in range(alerts):
                await enqueue(conn, org_id=org_id, monitor_id=monitor_id, incident_id=None,
                              event="incident.opened", payload=PAYLOAD, now=clock.precise_now())  # fmt: skip
        dispatcher = Dispatcher(db=db, settings=settings, sealer=sealer, concurrency=concurrency)
        cpu = _cpu()
        started = time.perf_counter()
        await dispatcher.start()
        while True:  # the bench reads the dispatcher's own counter: no query slows the run
            if sum(dispatcher._counts.values()) >= alerts:
                break
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
        cpu = _cpu() - cpu
        await dispatcher.stop()
        async with db.read() as conn:
            delivered = (
                await conn.execute(
                    select(func.count()).select_from(alert_deliveries).where(alert_deliveries.c.outcome == "delivered")
                )
            ).scalar_one()
        if delivered != alerts:
            raise SystemExit(f"only {delivered} of {alerts} alerts were delivered")
    finally:
        await db.close()
    return {"alerts/s": alerts / elapsed, "CPU ms/alert": cpu / alerts * 1000}


async def fresh_posts(hook: str, alerts: int, concurrency: int) -> dict[str, float]:
    """The dispatcher's own POST (core.alerts.posting: target policy, a fresh connection), without the outbox."""
    channel = SlackChannel(ChannelSettings(allow_private=True))
    message = AlertMessage("incident.opened", PAYLOAD["incident"], PAYLOAD["monitor"])
    remaining = alerts

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            outcome = await channel.send(message, hook)
            if not outcome.ok:
                raise SystemExit(f"the receiver answered {outcome}")

    cpu = _cpu()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu = _cpu() - cpu
    return {"alerts/s": alerts / elapsed, "CPU ms/alert": cpu / alerts * 1000}


async def bare_posts(hook: str, alerts: int, concurrency: int) -> dict[str, float]:
    body = json.dumps(slack_payload(AlertMessage("incident.opened", PAYLOAD["incident"], PAYLOAD["monitor"]),
                                    public_base="http://127.0.0.1:8080")).encode()  # fmt: skip
    remaining = alerts
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                response = await client.post(hook, content=body, headers={"content-type": "application/json"})
                if response.status_code // 100 != 2:
                    raise SystemExit(f"the receiver answered {response.status_code}")

        cpu = _cpu()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = _cpu() - cpu
    return {"alerts/s": alerts / elapsed, "CPU ms/alert": cpu / alerts * 1000}


async def run(alerts: int, concurrency: int, database_url: str | None) -> dict[str, dict[str, float]]:
    hook = f"http://127.0.0.1:{start_receiver()}/services/T000/B000/bench"
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite+aiosqlite:///{tmp}/bench.db"
        outbox = await through_outbox(url, Path(tmp), hook, alerts, concurrency)
    bare = await bare_posts(hook, alerts, concurrency)
    fresh = await fresh_posts(hook, alerts, concurrency)
    return {"outbox": outbox, "bare httpx": bare, "posting.post": fresh}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--database-url", default=None, help="an empty database (PostgreSQL: its schema is used)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    runner = uvloop.run if args.loop == "uvloop" else asyncio.run
    results = runner(run(args.alerts, args.concurrency, args.database_url))
    backend = "postgresql" if args.database_url and "postgresql" in args.database_url else "sqlite"
    print(f"\n{args.alerts} alerts, {args.concurrency} at a time, {backend}, {args.loop}, one process\n")
    print(f"{'path':14}{'alerts/s':>11}{'CPU ms/alert':>14}")
    for label, row in results.items():
        print(f"{label:14}{row['alerts/s']:11.0f}{row['CPU ms/alert']:14.2f}")
    ratio = results["outbox"]["alerts/s"] / results["bare httpx"]["alerts/s"]
    print(f"\nthe outbox delivers at {ratio:.0%} of the bare httpx POST loop's rate (outbox / bare httpx)")
    own = results["outbox"]["alerts/s"] / results["posting.post"]["alerts/s"]
    print(f"and at {own:.0%} of the rate of its own POST path without the outbox (outbox / posting.post)")


if __name__ == "__main__":
    main()
