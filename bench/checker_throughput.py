"""Benchmark: how many checks one process runs per second, and the CPU each costs.

10,000 monitors every 30 s is ~333 checks/s; this says what share of a core that takes. A minimal target
(raw asyncio, a fixed 200, in its own process so its CPU is not counted) answers:
  - tcp: connect and close, the floor every check pays
  - http: GET on a fresh connection, status judged, body unread
  - keyword: the same, body read and searched
  - https: http over TLS (a throwaway certificate, verification off; the handshake is the cost)

Prints checks/s, p50/p99 check latency, CPU seconds per 1,000 checks and that CPU relative to tcp.

    python -m bench.checker_throughput [--checks 5000] [--concurrency 100] [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import socket
import ssl
import statistics
import time
from typing import Any

import trustme
import uvloop

from core.checks import run_check
from core.checks.base import CheckSpec

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world"


class _Target(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:
            self.transport.write(RESPONSE)


def _serve(sock: socket.socket, tls: ssl.SSLContext | None) -> None:
    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(_Target, sock=sock, ssl=tls, backlog=4096)
        await server.serve_forever()

    uvloop.run(serve())


def start_target(tls: ssl.SSLContext | None = None) -> int:
    """Starts the target in a forked process (a daemon: it ends with us); returns its port."""
    with socket.create_server(("127.0.0.1", 0), backlog=4096) as sock:
        multiprocessing.get_context("fork").Process(target=_serve, args=(sock, tls), daemon=True).start()
        return int(sock.getsockname()[1])


async def measure(spec: CheckSpec, checks: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    failures: list[str] = []
    remaining = checks

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            result = await run_check(spec)
            latencies.append(result.response_ms or 0.0)
            if not result.ok:
                failures.append(f"{result.reason}: {result.error}")

    for _ in range(50):  # warm-up: lazy imports, the shared SSL context
        await run_check(spec)
    cpu = _cpu()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu = _cpu() - cpu
    if failures:
        raise SystemExit(f"{len(failures)} of {checks} {spec.type} checks failed, e.g. {failures[0]}")
    percentiles = statistics.quantiles(latencies, n=100)
    return {
        "checks/s": checks / elapsed,
        "p50 ms": percentiles[49],
        "p99 ms": percentiles[98],
        "CPU s/1k": cpu / checks * 1000,
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(checks: int, concurrency: int) -> dict[str, dict[str, float]]:
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("localhost").configure_cert(server_tls)
    port, tls_port = start_target(), start_target(server_tls)
    url = f"http://127.0.0.1:{port}/"
    specs = {
        "tcp": CheckSpec(type="tcp", timeout_ms=10_000, host="127.0.0.1", port=port, allow_private=True),
        "http": CheckSpec(type="http", timeout_ms=10_000, url=url, allow_private=True),
        "keyword": CheckSpec(type="keyword", timeout_ms=10_000, url=url, keyword="world", allow_private=True),
        "https": CheckSpec(
            type="https",
            timeout_ms=10_000,
            url=f"https://localhost:{tls_port}/",
            ignore_tls_errors=True,
            allow_private=True,
        ),
    }
    return {label: await measure(spec, checks, concurrency) for label, spec in specs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    runner = uvloop.run if args.loop == "uvloop" else asyncio.run
    results = runner(run(args.checks, args.concurrency))
    print(f"\n{args.checks} checks per type, {args.concurrency} at a time, {args.loop}, one process\n")
    columns = ("checks/s", "p50 ms", "p99 ms", "CPU s/1k")
    print(f"{'type':10}" + "".join(f"{column:>11}" for column in columns) + f"{'CPU/tcp':>9}")
    floor = results["tcp"]["CPU s/1k"]
    for label, row in results.items():
        cells = "".join(f"{row[column]:11.2f}" for column in columns)
        print(f"{label:10}{cells}{row['CPU s/1k'] / floor:8.2f}x")
    share = results["http"]["CPU s/1k"] / 3  # 333 checks/s is a third of 1,000
    print(f"\n10,000 http monitors at 30 s (333 checks/s) would keep {share:.0%} of a core busy")


if __name__ == "__main__":
    main()
