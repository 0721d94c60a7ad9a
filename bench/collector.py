"""Benchmark: syslog messages/s through the collector (issue 14).

Three runs, all in this one invocation, each with a fresh buffer directory:

1. **Baseline: read and frame only.** A process pinned to CPU 0 that accepts the same TCP
   connections and splits the stream with the collector's own `collector.syslog.Framer`, and does
   nothing else: what one Python core can read off the sockets. Its rate is the ceiling for the
   collector's rate (both ratios are printed against it).
2. **Collector → null sink.** ``python -m collector`` pinned to CPU 0 with one syslog TCP input;
   it parses, maps to OTLP, batches (1,000 records), appends each batch to its on-disk buffer
   (fsynced, the default) and ships it gzip-compressed over OTLP/HTTP to a sink on CPU 1 that
   answers 200 to every request without reading it further. Messages/s = N over the wall time from
   the first byte sent to the collector's ``observe_collector_shipped_records`` reaching N (the sink
   took every one).
3. **Collector → the server.** The same, shipping to a real ``observe serve`` (SQLite, a fresh data
   directory, not pinned); shipped means the server committed the records (a 200 is a commit).
4. **The server alone** (the baseline for run 3): the same messages parsed and encoded here
   beforehand, the same requests (1,000 records, gzip) POSTed straight to that server by 4
   keep-alive clients — the collector's default ``server.concurrency``. The server's OTLP ingest is
   what bounds run 3; the ratio says what the collector adds.

The sender (this process, CPU 1) builds every message before the clock starts: RFC 5424 lines with
structured data and RFC 3164 lines, from a dozen hosts and apps, octet-counted (RFC 6587) and written
with ``sendall`` over --connections TCP connections, so it costs little beside the measured process.
The target of issue 14 — 50,000 messages/s into the null sink on one core — is printed as a ratio,
never asserted.

    python -m bench.collector [--messages 300000] [--e2e-messages 100000] [--connections 4]
                              [--skip-server] [--profile FILE] [--profile-server FILE]

--profile FILE samples the collector with py-spy during the null-sink run (``pip install py-spy``);
--profile-server FILE samples the server (idle threads too) during the end-to-end run.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import itertools
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.api_me import free_port, pinned
from bench.heartbeats import stop, wait_http
from bench.logs import SERVER_ENV, Server
from bench.logs_engines import engine_for
from bench.monitors_scale import cpu_seconds
from collector.syslog import parse
from collector.syslog_otlp import encode_request

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
TARGET = 50_000.0  # messages/s into the null sink on one core (issue 14)
FAKE_TOKEN = "obs_" + "x" * 43  # the null sink takes any token
HOSTS = [f"web-{i:02d}" for i in range(6)] + [f"db-{i:02d}" for i in range(6)]
APPS = ["nginx", "api", "worker", "sshd", "cron", "postgres", "redis", "billing", "auth", "mailer", "search", "cdn"]


def messages(n: int, seed: int = 14) -> list[bytes]:
    """``n`` syslog lines: three in four RFC 5424 with structured data, the rest RFC 3164."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        host, app = rng.choice(HOSTS), rng.choice(APPS)
        pri = rng.choice((8, 11, 12, 14, 15, 131, 134, 163, 190))
        text = (
            f"request {i} user={rng.randrange(10**6)} path=/api/v1/items/{rng.randrange(10**4)} "
            f"status={rng.choice((200, 200, 201, 404, 500))} took={rng.random() * 100:.2f}ms"
        )
        if i % 4:
            stamp = f"2026-11-30T10:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}Z"
            sd = f'[req@32473 id="{i}" region="eu-{rng.randrange(3)}"]'
            line = f"<{pri}>1 {stamp} {host} {app} {rng.randrange(1, 32768)} ACCESS {sd} {text}"
        else:
            line = f"<{pri}>Nov 30 10:{i // 60000 % 60:02d}:{i // 1000 % 60:02d} {host} {app}[{i % 30000}]: {text}"
        out.append(line.encode())
    return out


def octet_counted(lines: list[bytes]) -> bytes:
    return b"".join(b"%d %s" % (len(line), line) for line in lines)


def send_all(port: int, payload: bytes, connections: int) -> None:
    """Writes ``payload`` (whole frames) split over ``connections`` TCP connections in parallel."""
    parts = split_frames(payload, connections)

    def one(part: bytes) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(part)

    threads = [threading.Thread(target=one, args=(part,)) for part in parts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def split_frames(payload: bytes, parts: int) -> list[bytes]:
    """Octet-counted ``payload`` cut into ``parts`` pieces at frame boundaries."""
    boundaries = [0]
    target = len(payload) // parts
    position = 0
    while position < len(payload):
        space = payload.index(b" ", position)
        position = space + 1 + int(payload[position:space])
        if position - boundaries[-1] >= target and len(boundaries) < parts:
            boundaries.append(position)
    boundaries.append(len(payload))
    return [payload[a:b] for a, b in itertools.pairwise(boundaries) if b > a]


# ---- the null sink and the frame-only baseline (run as subprocesses of this module) ------------


async def null_sink(port: int) -> None:
    """An OTLP/HTTP endpoint that answers 200 (an empty ExportLogsServiceResponse) to every POST."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


async def frame_only(port: int, expected: int) -> None:
    """Reads and frames like a syslog TCP input, then prints the seconds from first byte to the last frame."""
    from collector.syslog import Framer

    count = 0
    first = 0.0
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count, first
        framer = Framer()
        while data := await reader.read(64 * 1024):
            if not first:
                first = time.perf_counter()
            count += len(framer.feed(data))
            if count >= expected:
                done.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await done.wait()
    print(f"{time.perf_counter() - first:.6f}", flush=True)


# ---- runs -----------------------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    messages: int
    seconds: float
    cpu: float  # CPU seconds of the measured process
    server_cpu: float | None = None  # CPU seconds of the observe server, when there is one

    @property
    def per_sec(self) -> float:
        return self.messages / self.seconds


def helper(*args: str, cpu: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        pinned(cpu, [PY, "-m", "bench.collector", *args]), cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise SystemExit(f"bench helper {args[0]} did not start")
    return process


def run_baseline(payload: bytes, n: int, connections: int) -> Run:
    port = free_port()
    process = helper("--frame-only", str(port), str(n), cpu=0)
    cpu0 = cpu_seconds(process.pid)
    send_all(port, payload, connections)
    assert process.stdout is not None
    seconds = float(process.stdout.readline())
    cpu = cpu_seconds(process.pid) - cpu0
    process.wait(timeout=10)
    return Run("read + frame only (baseline)", n, seconds, cpu)


def shipped(metrics_url: str) -> float:
    text = httpx.get(metrics_url, timeout=10).text
    return sum(
        float(value) for value in re.findall(r"^observe_collector_shipped_records_total\{.*\} (\S+)$", text, re.M)
    )


def run_collector(
    name: str,
    tmp: Path,
    endpoint: str,
    token: str,
    payload: bytes,
    n: int,
    connections: int,
    profile: Path | None,
    server_pid: int | None = None,
) -> Run:
    syslog_port, metrics_port = free_port(), free_port()
    work = tmp / f"collector-{name.split()[0]}"
    work.mkdir()
    config = work / "collector.toml"
    config.write_text(
        f'[server]\nendpoint = "{endpoint}"\ntoken = "{token}"\n'
        f'[buffer]\ndir = "{work / "buffer"}"\nmax_bytes = 1073741824\n'
        "[batch]\nmax_records = 1000\nmax_bytes = 1048576\nmax_delay_ms = 200\n"
        f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
        f'[[inputs]]\ntype = "syslog"\nlisten = "tcp://127.0.0.1:{syslog_port}"\ntag = "bench"\n'
    )
    log = work / "collector.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            pinned(0, [PY, "-m", "collector", "--config", str(config)]), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    sampler = None
    try:
        wait_http(metrics_url.replace("/metrics", "/health"), process, log)
        cpu0 = cpu_seconds(process.pid)
        server0 = cpu_seconds(server_pid) if server_pid else 0.0
        if profile is not None:
            # The collector: where its CPU goes (--gil); the server: where its threads wait too (--idle).
            target = ["--idle", "-p", str(server_pid)] if server_pid else ["--gil", "-p", str(process.pid)]
            sampler = subprocess.Popen(
                ["py-spy", "record", "-r", "200", "-f", "raw", "-o", str(profile), *target],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        start = time.perf_counter()
        sender = threading.Thread(target=send_all, args=(syslog_port, payload, connections))
        sender.start()
        deadline = start + 600
        while shipped(metrics_url) < n:
            if time.perf_counter() > deadline or process.poll() is not None:
                raise SystemExit(f"{name}: the collector did not ship {n} messages; see {log}")
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        cpu = cpu_seconds(process.pid) - cpu0
        server_cpu = cpu_seconds(server_pid) - server0 if server_pid else None
        sender.join()
    finally:
        if sampler is not None:
            sampler.send_signal(signal.SIGINT)
            sampler.wait(timeout=60)
        stop(process)
    return Run(name, n, seconds, cpu, server_cpu)


def run_direct(server: Server, token: str, lines: list[bytes], clients: int = 4) -> Run:
    """The server's own ingest of the same requests, no collector: the syslog lines parsed and
    encoded here beforehand, then POSTed (protobuf, gzip) from ``clients`` keep-alive connections."""
    now = datetime.now(UTC)
    bodies = [
        gzip.compress(encode_request([parse(line, received_at=now, source_tag="bench", peer="127.0.0.1")
                                      for line in lines[i : i + 1000]]), 1)
        for i in range(0, len(lines), 1000)
    ]  # fmt: skip
    headers = {
        "authorization": f"Bearer {token}",
        "content-type": "application/x-protobuf",
        "content-encoding": "gzip",
    }

    async def post_all() -> float:
        queue = list(reversed(bodies))
        async with httpx.AsyncClient(base_url=server.base, headers=headers, timeout=120) as client:

            async def worker() -> None:
                while queue:
                    reply = await client.post("/api/v1/otlp/v1/logs", content=queue.pop())
                    if reply.status_code != 200:
                        raise SystemExit(f"direct ingest: {reply.status_code} {reply.text[:300]}")

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(clients)))
            return time.perf_counter() - start

    cpu0 = cpu_seconds(server.proc.pid)
    seconds = asyncio.run(post_all())
    return Run(f"direct the same requests POSTed by {clients} clients (no collector)", len(lines), seconds,
               cpu_seconds(server.proc.pid) - cpu0, cpu_seconds(server.proc.pid) - cpu0)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--e2e-messages", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--profile-server", type=Path)
    parser.add_argument("--null-sink", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--frame-only", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.null_sink:
        asyncio.run(null_sink(args.null_sink))
        return
    if args.frame_only:
        asyncio.run(frame_only(*args.frame_only))
        return

    os.sched_setaffinity(0, {1}) if (os.cpu_count() or 1) > 1 else None
    print(f"building {args.messages:,} syslog messages ...", flush=True)
    lines = messages(max(args.messages, args.e2e_messages))
    payload = octet_counted(lines[: args.messages])
    print(f"  {len(payload) / args.messages:.0f} bytes a frame on average", flush=True)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-collector-") as directory:
        tmp = Path(directory)
        runs.append(run_baseline(payload, args.messages, args.connections))
        print(f"  {runs[-1].name}: {runs[-1].per_sec:,.0f} messages/s", flush=True)
        sink_port = free_port()
        sink = helper("--null-sink", str(sink_port), cpu=1)
        try:
            runs.append(
                run_collector(
                    "null-sink collector → null sink",
                    tmp,
                    f"http://127.0.0.1:{sink_port}",
                    FAKE_TOKEN,
                    payload,
                    args.messages,
                    args.connections,
                    args.profile,
                )
            )
        finally:
            stop(sink)  # type: ignore[arg-type]
        print(f"  {runs[-1].name}: {runs[-1].per_sec:,.0f} messages/s", flush=True)
        if not args.skip_server:
            engine = engine_for("sqlite")
            data_dir = tmp / "server"
            data_dir.mkdir()
            _, token = engine.create_user(data_dir)
            os.environ.update(SERVER_ENV)
            server = Server.start(engine, data_dir)
            try:
                e2e = octet_counted(lines[: args.e2e_messages])
                runs.append(
                    run_collector(
                        "server collector → observe serve (SQLite)",
                        tmp,
                        server.base + "/api/v1/otlp",
                        token,
                        e2e,
                        args.e2e_messages,
                        args.connections,
                        args.profile_server,
                        server.proc.pid,
                    )
                )
                runs.append(run_direct(server, token, lines[: args.e2e_messages]))
            finally:
                server.stop()
            print(f"  {runs[-1].name}: {runs[-1].per_sec:,.0f} messages/s", flush=True)
    report(runs)


def report(runs: list[Run]) -> None:
    baseline = runs[0]
    print()
    print("| run | messages | seconds | messages/s | vs baseline | CPU s of the measured process | µs CPU/message |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        print(
            f"| {run.name} | {run.messages:,} | {run.seconds:.2f} | {run.per_sec:,.0f} | "
            f"{run.per_sec / baseline.per_sec:.2f}x | {run.cpu:.2f} | {run.cpu / run.messages * 1e6:.1f} |"
        )
    for run in runs:
        if run.server_cpu is not None:
            print(
                f"\n{run.name}: the server used {run.server_cpu:.2f} CPU s ({run.server_cpu / run.seconds:.2f} cores;"
                f" {run.server_cpu / run.messages * 1e6:.1f} µs a record)"
            )
    e2e = next((run for run in runs if run.name.startswith("server")), None)
    direct = next((run for run in runs if run.name.startswith("direct")), None)
    if e2e is not None and direct is not None:
        print(
            "through the collector vs the server's own ingest of the same requests:",
            f"{e2e.per_sec / direct.per_sec:.2f}x",
        )
    null = next((run for run in runs if run.name.startswith("null-sink")), None)
    if null is not None:
        print(f"\nnull sink vs the target of {TARGET:,.0f} messages/s on one core: {null.per_sec / TARGET:.2f}x")


if __name__ == "__main__":
    main()
