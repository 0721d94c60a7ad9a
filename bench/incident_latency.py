"""Benchmark: from a failing check to the webhook's arrival, on a real server.

A fresh ``observe serve`` (SQLite, intervals shrunk to 1.5 s) checks 100 http
monitors against a local target, each with failureThreshold 1 and a webhook to
a local receiver. The target's paths then start answering 500 in waves of ten;
for every incident the latency is the webhook's arrival time minus the failing
check's checkedAt (its start). The path: the check, the result writer's batch
(OBSERVE_CHECK_FLUSH_MS, 1 s by default: the largest share), the incident
engine, the outbox and the dispatcher's POST. The run is repeated with a
100 ms flush to show what the rest costs.

    python -m bench.incident_latency [--monitors 100] [--flush-ms 1000,100]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from tests.receivers import Receiver, recording_receiver

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def failing_target() -> Iterator[tuple[str, set[str]]]:
    """A target answering 500 on the paths in the returned set, 200 elsewhere."""
    failing: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(500 if self.path in failing else 200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", failing
    finally:
        server.shutdown()
        server.server_close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_once(n: int, flush_ms: int, receiver: Receiver) -> list[float]:
    with failing_target() as (target, failing), tempfile.TemporaryDirectory() as tmp:
        http_port, grpc_port = free_port(), free_port()
        env = {
            **os.environ,
            "OBSERVE_DATA_DIR": tmp,
            "OBSERVE_HTTP_PORT": str(http_port),
            "OBSERVE_GRPC_PORT": str(grpc_port),
            "OBSERVE_ALLOW_PRIVATE_TARGETS": "true",
            "OBSERVE_CHECK_INTERVAL_SCALE": "0.05",
            "OBSERVE_CHECK_FLUSH_MS": str(flush_ms),
            "OBSERVE_RATE_LIMIT_TOKEN": "100000/minute",
            "OBSERVE_RATE_LIMIT_AUTH_IP": "100000/minute",
        }
        env.pop("OBSERVE_DATABASE_URL", None)
        log = Path(tmp) / "server.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve"],
            cwd=ROOT,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{http_port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(base + "/health/ready", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(log.read_text())
                time.sleep(0.1)
            with httpx.Client(base_url=base, timeout=30) as c:
                email = f"bench-{flush_ms}@example.com"
                reg = c.post("/api/v1/auth/register", json={"email": email, "password": "correct horse battery"})
                c.headers["authorization"] = f"Bearer {reg.json()['sessionToken']}"
                prefix = f"/run{flush_ms}"
                monitors = [
                    {
                        "name": f"m{i}",
                        "type": "http",
                        "url": f"{target}{prefix}/{i}",
                        "intervalSec": 30,
                        "failureThreshold": 1,
                        "alertWebhookUrl": receiver.url(f"{prefix}/hook/{i}"),
                    }
                    for i in range(n)
                ]
                ids = [m["id"] for m in c.post("/api/v1/monitors/bulk", json={"monitors": monitors}).json()["monitors"]]
                while any(
                    m["status"] != "up" for m in c.get("/api/v1/monitors", params={"limit": 1000}).json()["monitors"]
                ):
                    time.sleep(0.2)
                for wave in range(0, n, 10):
                    failing.update(f"{prefix}/{i}" for i in range(wave, min(n, wave + 10)))
                    time.sleep(0.5)
                arrivals = receiver.wait_for(f"{prefix}/hook/", n, timeout=60)
                latencies = []
                for seen in arrivals:
                    monitor_id = seen.json()["data"]["monitor"]["id"]
                    assert monitor_id in ids
                    checks = c.get(f"/api/v1/monitors/{monitor_id}/checks", params={"limit": 1000}).json()["checks"]
                    first_failure = min(datetime.fromisoformat(ch["checkedAt"]) for ch in checks if not ch["ok"])
                    latencies.append(seen.wall - first_failure.timestamp())
                return latencies
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--monitors", type=int, default=100)
    parser.add_argument("--flush-ms", default="1000,100")
    args = parser.parse_args()
    print(f"failing check → webhook arrival, {args.monitors} incidents per run (SQLite)")
    with recording_receiver() as receiver:
        for flush_ms in (int(x) for x in args.flush_ms.split(",")):
            lat = run_once(args.monitors, flush_ms, receiver)
            print(
                f"  OBSERVE_CHECK_FLUSH_MS={flush_ms:<5} p50 {statistics.median(lat) * 1000:7.1f} ms   "
                f"p99 {pct(lat, 0.99) * 1000:7.1f} ms   max {max(lat) * 1000:7.1f} ms   "
                f"(p50 / flush interval = {statistics.median(lat) * 1000 / flush_ms:.2f})"
            )


if __name__ == "__main__":
    main()
