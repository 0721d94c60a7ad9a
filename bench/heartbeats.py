"""Benchmark: sustained heartbeat pings per second over HTTP, every ping durable.

A real ``observe serve`` (one process pinned to CPU 0) gets --monitors heartbeat
monitors (default 10,000; POST /api/v1/monitors/bulk, 100 a call) and their
tokens (GET /api/v1/monitors/:id/secrets, 64 at a time); each token is pinged
once (every monitor's first ping turns it up, a status change, so that is not
what the run measures). A warm-up of wrk then pings until 10 s into a minute
whose previous minute it pinged throughout (70-130 s; --warmup N instead): the
rate limiter keeps a counter per token and minute, so a server whose monitors
all ping carries two minutes' worth, which a run straight after the set-up
would not (this is how the limiter's old storage, which swept every counter on
every hit, was found: core/rpc/windows.py).

Then wrk (on CPU 1, --connections, default 64) runs bench/heartbeats.lua for
--seconds: each request takes the next of the tokens, round robin, POST with a
16-byte body (or --method GET). Reported: pings/s, p50/p99 latency, non-2xx
answers, the server's CPU per ping, and durability: the rows added to
heartbeat_pings (counted in the database once the run is over) must be at
least the 200 answers, and at most those plus the requests still in flight
when wrk stopped (the server stores those too; wrk no longer reads the
answers).

The server runs with OBSERVE_RATE_LIMIT_HEARTBEAT=100000000/minute (the
default, 60 a minute per token, would refuse most pings: the limiter still
counts every ping, it never refuses one here) and
OBSERVE_RATE_LIMIT_TOKEN=100000000/minute for the set-up calls.

In the same run the same wrk script runs against bench/raw_asgi.py (uvicorn,
uvloop + httptools, a constant 200, on CPU 0): the HTTP stack's ceiling on
this machine. Healthchecks.io's own figure is printed for reference.

--profile also samples the server with py-spy (not a dependency of observe:
``.venv/bin/pip install py-spy``) during a second run of --seconds after the
measured one, and prints where the server's CPU goes per ping.

    python -m bench.heartbeats [--seconds 10] [--connections 64] [--monitors 10000] [--warmup N]
                               [--method POST|GET] [--backend sqlite|postgresql]
                               [--database-url URL] [--profile]

PostgreSQL: OBSERVE_TEST_DATABASE_URL (default
postgresql+asyncpg://postgres@127.0.0.1:5432/test); the run drops and
recreates a database observe_bench next to it. --database-url uses that
database as it is instead (only the rows the run adds are counted).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.api_me import free_port, pinned
from bench.monitors_scale import CLK_TCK, Backend, cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
LUA = Path(__file__).with_suffix(".lua")
BODY_BYTES = 16
BULK = 100  # monitors per bulk create (the route's maximum)
SETUP_CONCURRENCY = 64
# Healthchecks.io's documented figure for its open-source (Django) ping handler:
# "on my dev machine (Intel i7-9700K CPU, NVMe SSD, PostgreSQL runs locally on the
# same machine), using uWSGI as the web server, and benchmarking with wrk, Healthchecks
# can serve about 250 ping requests per second."
# https://blog.healthchecks.io/2025/07/throughput-upgrade-with-train-illustrations
# (The same post: hc-ping.com, served by a closed-source Go handler, writes ~500
# pings/s on average and over 10,000/s at the start of each hour.)
HEALTHCHECKS_PINGS_PER_SEC = 250.0
HEALTHCHECKS_SOURCE = "https://blog.healthchecks.io/2025/07/throughput-upgrade-with-train-illustrations"
SERVER_ENV = {
    "OBSERVE_RATE_LIMIT_HEARTBEAT": "100000000/minute",
    "OBSERVE_RATE_LIMIT_TOKEN": "100000000/minute",
    "OBSERVE_LOG_LEVEL": "warning",
}
UVICORN = [PY, "-m", "uvicorn", "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]


@dataclass
class WrkResult:
    rps: float
    p50: float  # ms
    p99: float  # ms
    non2xx: int
    socket_errors: str
    sent: int
    answered: int
    ok: int
    server_cpu_sec: float = 0.0
    db_cpu_sec: float = 0.0
    seconds: float = 0.0
    cpu0_busy_sec: float = 0.0  # CPU 0's busy time in the run, whoever used it
    batches: float = 0.0  # the ping writer's transactions during the run (observe only)
    stored: float = 0.0  # pings it stored during the run, by its own count


def _ms(v: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", v)
    assert m, v
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def run_wrk(base: str, tokens_file: Path, seconds: int, connections: int, method: str) -> WrkResult:
    cmd = pinned(1, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency",
                     "-s", str(LUA), base, "--", str(tokens_file), method, str(BODY_BYTES)])  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    pings = re.search(r"pings: sent (\d+) answered (\d+) ok (\d+)", out)
    lat = dict(re.findall(r"\s+(50|99)%\s+([\d.]+\w+)", out))
    if not rps or not pings or "50" not in lat:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return WrkResult(
        rps=float(rps.group(1)),
        p50=_ms(lat["50"]),
        p99=_ms(lat["99"]),
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=errors.group(1) if errors else "",
        sent=int(pings.group(1)),
        answered=int(pings.group(2)),
        ok=int(pings.group(3)),
        seconds=seconds,
    )


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- the database ---------------------------------------------------------------------


def count_pings(backend: Backend) -> int:
    if backend.kind == "sqlite":
        assert backend.sqlite_path is not None
        with contextlib.closing(sqlite3.connect(backend.sqlite_path, timeout=30)) as conn:
            return int(conn.execute("SELECT count(*) FROM heartbeat_pings").fetchone()[0])

    async def count() -> int:
        conn = await asyncpg.connect(backend.dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM heartbeat_pings"))
        finally:
            await conn.close()

    return asyncio.run(count())


def settled_count(backend: Backend, at_least: int, timeout: float = 30) -> int:
    """The row count once it stops growing (the pings in flight when wrk stopped commit
    a few milliseconds later), and no lower than ``at_least`` unless ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last = count_pings(backend)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = count_pings(backend)
        if now == last and now >= at_least:
            return now
        last = now
    return last


def db_backend_pids(backend: Backend) -> list[int]:
    """PostgreSQL: the server processes serving the bench database (their CPU is the
    database's share of a ping; they run on either core)."""
    if backend.kind != "postgresql":
        return []

    async def pids() -> list[int]:
        conn = await asyncpg.connect(backend.dsn)
        try:
            me = await conn.fetchval("SELECT pg_backend_pid()")
            rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            return [int(r[0]) for r in rows if r[0] != me]
        finally:
            await conn.close()

    return asyncio.run(pids())


def writer_counts(base: str | None) -> tuple[float, float]:
    """The ping writer's (transactions, pings stored) so far, from the server's /metrics
    (observe_heartbeat_batches_total, observe_heartbeat_pings_total); (0, 0) without them."""
    if base is None:
        return 0.0, 0.0
    text = httpx.get(base + "/metrics", timeout=30).text
    batches = re.search(r"^observe_heartbeat_batches_total (\S+)$", text, re.M)
    stored = re.search(r'^observe_heartbeat_pings_total\{outcome="stored"\} (\S+)$', text, re.M)
    return (float(batches.group(1)) if batches else 0.0), (float(stored.group(1)) if stored else 0.0)


def cpu_busy(cpu: int) -> float:
    """Seconds CPU ``cpu`` has been busy (user, nice, system, irq, softirq, steal) since boot."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in line.split()[1:9])
            return (user + nice + system + irq + softirq + steal) / CLK_TCK
    return 0.0


def total_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def steady_warmup(now: float) -> int:
    """Seconds of warm-up that end 10 s into a minute whose previous minute was
    pinged throughout. The rate limiter keeps a counter per token and minute
    (a sliding window of two), and its in-process storage sweeps all of them
    over and over: a server whose every monitor pings has two minutes' worth,
    which a run right after the set-up would not have."""
    return int((math.floor(now / 60) + 2) * 60 + 10 - now)


# ---- set-up through the API -------------------------------------------------------------


async def call(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request, sent again on a connection the server closed as it was reused
    (uvicorn drops connections idle for 5 s: a race on a busy machine)."""
    for attempt in range(3):
        try:
            return await client.request(method, url, **kwargs)
        except httpx.TransportError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def make_monitors(base: str, token: str, n: int) -> tuple[list[str], float, float]:
    """Creates n heartbeat monitors; their tokens, and the seconds each step took."""
    headers = {"authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=SETUP_CONCURRENCY, max_keepalive_connections=SETUP_CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=120) as client:
        started = time.perf_counter()
        gate = asyncio.Semaphore(4)  # writes share one database writer: more at once only queue

        async def bulk(first: int) -> list[int]:
            body = {"monitors": [{"name": f"hb-{i}", "type": "heartbeat", "intervalSec": 3600}
                                 for i in range(first, min(first + BULK, n))]}  # fmt: skip
            async with gate:
                key = {"idempotency-key": f"bench-heartbeats-{os.getpid()}-{first}"}  # a resend creates nothing twice
                reply = await call(client, "POST", "/api/v1/monitors/bulk", json=body, headers=key)
            if reply.status_code != 201:
                raise SystemExit(f"bulk create: {reply.status_code} {reply.text[:500]}")
            return [int(m["id"]) for m in reply.json()["monitors"]]

        ids = [i for chunk in await asyncio.gather(*(bulk(f) for f in range(0, n, BULK))) for i in chunk]
        created = time.perf_counter() - started
        started = time.perf_counter()
        gate = asyncio.Semaphore(SETUP_CONCURRENCY)

        async def secret(monitor_id: int) -> str:
            async with gate:
                reply = await call(client, "GET", f"/api/v1/monitors/{monitor_id}/secrets")
            if reply.status_code != 200:
                raise SystemExit(f"secrets of {monitor_id}: {reply.status_code} {reply.text[:500]}")
            return str(reply.json()["heartbeatToken"])

        tokens = await asyncio.gather(*(secret(i) for i in ids))
        return tokens, created, time.perf_counter() - started


async def first_pings(base: str, tokens: list[str]) -> float:
    """Pings each token once (pending → up); every answer must be 200."""
    limits = httpx.Limits(max_connections=SETUP_CONCURRENCY, max_keepalive_connections=SETUP_CONCURRENCY)
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        started = time.perf_counter()

        async def ping(token: str) -> None:
            async with gate:
                reply = await call(client, "POST", f"/api/v1/heartbeats/{token}", content=b"first")
            if reply.status_code != 200 or reply.json() != {"ok": True}:
                raise SystemExit(f"first ping: {reply.status_code} {reply.text[:500]}")

        await asyncio.gather(*(ping(t) for t in tokens))
        return time.perf_counter() - started


# ---- where the time goes ------------------------------------------------------------------

# py-spy's collapsed stacks: "frame;frame;...;frame count", outermost first, a
# frame "function (path:line)"; only busy threads are sampled. Each sample gets
# a task (who runs: TASK_RULES, first match from the outermost frame) and a
# layer (what code: LAYER_RULES, first frame that matches any rule, from the
# innermost frame outwards, so protovalidate called by the pipeline counts as
# protovalidate and SQLAlchemy called by the ping writer as SQLAlchemy).
# SQLAlchemy's async engine runs its statements in greenlets, whose stacks
# py-spy shows without their caller: they start in sqlalchemy/ or the driver,
# and in this run they are the ping writer's (the ping route reads nothing).
TASK_RULES: list[tuple[str, str, str]] = [  # (label, pattern, which frames: any | root | leaf)
    ("ping writer task (group commit)", r"PingWriter\._(loop|flush)", "any"),
    ("ping writer task (group commit)", r"\((sqlalchemy|aiosqlite|asyncpg)/", "root"),
    ("request handling (HTTP -> gateway -> pipeline -> Ping)",
     r"\(uvicorn/protocols/|\(gateway/(app|dispatch|transcoder)\.py|\(core/rpc/pipeline\.py", "any"),
    ("background loops (checks, incidents, alerts, lateness, limiter expiry)",
     r"\(core/(scheduler|incidents|alerts|maintenance)/|\(core/heartbeats/watcher\.py|\(limits/", "any"),
    ("event loop itself (uvloop: epoll, socket I/O, callbacks)", r"^Runner\.run \(asyncio/runners\.py", "leaf"),
]  # fmt: skip
LAYER_RULES: list[tuple[str, str]] = [
    ("metrics (prometheus_client)", r"\(prometheus_client/|\(core/metrics\.py"),
    ("rate limiter (core/rpc/ratelimit + limits)", r"\(limits/|\(core/rpc/ratelimit\.py"),
    ("request rules (core/rpc/validator)", r"\(protovalidate/|\(core/rpc/validator\.py"),
    ("database driver (sqlite3 C calls, inline / asyncpg protocol)",
     r"\(core/storage/sqlite_inline\.py|\(aiosqlite/|\(asyncpg/"),
    ("SQLAlchemy Core (build, compile, cache key, bind, results)", r"\(sqlalchemy/"),
    ("ping writer's Python (state, schedule, rows, transaction)",
     r"\(core/heartbeats/(ingest|state|schedule)\.py|\(core/storage/"),
    ("Ping service (hash, Ping, future)", r"\(core/heartbeats/service\.py"),
    ("call pipeline (admit, limit key)", r"\(core/rpc/"),
    ("REST gateway (app, router, transcoder, reply)", r"\(gateway/"),
    ("background loops' own code", r"\(core/(scheduler|incidents|alerts|maintenance)/|\(core/heartbeats/watcher\.py"),
    ("uvicorn + httptools (parse, ASGI cycle, write)", r"\(uvicorn/|httptools"),
    ("event loop (uvloop C, asyncio tasks/futures)", r"\(asyncio/|uvloop"),
]  # fmt: skip


@dataclass
class Profile:
    samples: int
    by_task: list[tuple[str, int]]
    by_layer: list[tuple[str, int]]
    by_frame: list[tuple[str, int]]


def _stacks(raw: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            out.append((stack.split(";") if stack else [], int(count)))
    return out


def profile_of(raw: Path) -> Profile:
    tasks = [(label, re.compile(rx), where) for label, rx, where in TASK_RULES]
    layers = [(label, re.compile(rx)) for label, rx in LAYER_RULES]
    by_task: Counter[str] = Counter()
    by_layer: Counter[str] = Counter()
    by_frame: Counter[str] = Counter()
    total = 0
    for frames, n in _stacks(raw):
        total += n
        if not frames:
            by_task["threads without a Python frame"] += n
            by_layer["no Python frame (C threads: gRPC core, ...)"] += n
            by_frame["(no Python frame)"] += n
            continue
        task = "other"
        for label, rx, where in tasks:
            if any(rx.search(f) for f in {"root": frames[:1], "leaf": frames[-1:]}.get(where, frames)):
                task = label
                break
        by_task[task] += n
        layer = "other"
        for frame in reversed(frames):
            hit = next((label for label, rx in layers if rx.search(frame)), None)
            if hit:
                layer = hit
                break
        by_layer[layer] += n
        by_frame[re.sub(r"\s*\(.*?([^/]+/[^/]+\.py):\d+\)", r" (\1)", frames[-1])] += n
    return Profile(total, by_task.most_common(), by_layer.most_common(), by_frame.most_common(20))


# ---- the run --------------------------------------------------------------------------------


def measured(base: str, tokens_file: Path, args: argparse.Namespace, pid: int, backend: Backend | None) -> WrkResult:
    db_pids = db_backend_pids(backend) if backend else []
    writer0 = writer_counts(base if backend else None)
    cpu0, db0, busy0 = cpu_seconds(pid), total_cpu(db_pids), cpu_busy(0)
    result = run_wrk(base, tokens_file, args.seconds, args.connections, args.method)
    result.server_cpu_sec = cpu_seconds(pid) - cpu0
    result.db_cpu_sec = total_cpu(db_pids) - db0
    result.cpu0_busy_sec = cpu_busy(0) - busy0
    if backend is not None:
        time.sleep(0.5)  # the pings in flight when wrk stopped
        batches, stored = writer_counts(base)
        result.batches, result.stored = batches - writer0[0], stored - writer0[1]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--monitors", type=int, default=10_000)
    parser.add_argument("--method", choices=("POST", "GET"), default="POST")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--database-url", help="a PostgreSQL database to use as it is (implies postgresql)")
    parser.add_argument(
        "--warmup", type=int, help="seconds of pings before the measured run (default: 70-130, see above)"
    )
    parser.add_argument("--profile", action="store_true", help="sample the server with py-spy in a second run")
    parser.add_argument("--profile-out", type=Path, help="with --profile: keep py-spy's collapsed stacks here")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk")
    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    if args.profile and not Path(spy).exists():
        sys.exit("--profile needs py-spy: .venv/bin/pip install py-spy")

    if args.database_url:
        backend = Backend("postgresql", server_url=args.database_url)
    elif args.backend == "postgresql":
        backend = Backend.postgresql()
    else:
        backend = Backend("sqlite")

    with tempfile.TemporaryDirectory(prefix="observe-bench-hb-") as tmp_name:
        tmp = Path(tmp_name)
        data_dir = tmp / "data"
        data_dir.mkdir()
        if not args.database_url:
            backend.reset(data_dir)
        else:
            backend.sqlite_path = None
        env = {**os.environ, "OBSERVE_DATA_DIR": str(data_dir), **SERVER_ENV}
        env.pop("OBSERVE_DATABASE_URL", None)
        if backend.kind == "postgresql":
            env["OBSERVE_DATABASE_URL"] = backend.server_url
        token = subprocess.run(
            [PY, "-m", "core.cli", "admin", "create-user", "--email", f"bench-hb-{os.getpid()}@example.com",
             "--print-token"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]  # fmt: skip
        procs: list[subprocess.Popen[bytes]] = []
        log = tmp / "server.log"
        raw_profile = tmp / "profile.txt"
        try:
            port = free_port()
            with log.open("wb") as log_file:
                server = subprocess.Popen(
                    pinned(0, [PY, "-m", "gateway.cli", "serve", "--port", str(port), "--grpc-port", str(free_port())]),
                    cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                )  # fmt: skip
            procs.append(server)
            base = f"http://127.0.0.1:{port}"
            wait_http(base + "/health/ready", server, log)
            print(f"{args.monitors} heartbeat monitors, {backend.kind}: creating them ...", flush=True)
            tokens, created_sec, secrets_sec = asyncio.run(make_monitors(base, token, args.monitors))
            tokens_file = tmp / "tokens.txt"
            tokens_file.write_text("\n".join(tokens) + "\n")
            first_sec = asyncio.run(first_pings(base, tokens))
            print(
                f"created in {created_sec:.1f} s (bulk, {BULK} a call), tokens read in {secrets_sec:.1f} s"
                f" ({args.monitors / secrets_sec:.0f} secrets/s), first pings in {first_sec:.1f} s",
                flush=True,
            )
            warmup = args.warmup if args.warmup is not None else steady_warmup(time.time())
            print(f"warm-up: {warmup} s of pings (see --warmup) ...", flush=True)
            warm = run_wrk(base, tokens_file, warmup, args.connections, args.method)
            before = settled_count(backend, 0)
            observe = measured(base, tokens_file, args, server.pid, backend)
            after = settled_count(backend, before + observe.ok)
            stored = after - before
            profile: Profile | None = None
            profiled: WrkResult | None = None
            if args.profile:
                spy_cmd = pinned(1, [spy, "record", "--pid", str(server.pid), "--rate", "200", "--nonblocking",
                                     "--format", "raw", "--output", str(raw_profile),
                                     "--duration", str(args.seconds)])  # fmt: skip
                sampler = subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                time.sleep(0.5)
                profiled = measured(base, tokens_file, args, server.pid, backend)
                _, spy_err = sampler.communicate(timeout=60)
                if sampler.returncode != 0 or not raw_profile.exists():
                    print(f"py-spy failed: {spy_err.decode(errors='replace')[-2000:]}", file=sys.stderr)
                else:
                    profile = profile_of(raw_profile)
                    if args.profile_out:
                        shutil.copyfile(raw_profile, args.profile_out)
            stop(server)
            findings = [ln for ln in log.read_text(errors="replace").splitlines() if "WARNING" in ln or "ERROR" in ln]

            port = free_port()
            raw = subprocess.Popen(pinned(0, [*UVICORN, "--port", str(port), "bench.raw_asgi:app"]), cwd=ROOT,
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            procs.append(raw)
            wait_http(f"http://127.0.0.1:{port}/", raw, log)
            run_wrk(f"http://127.0.0.1:{port}", tokens_file, 2, args.connections, args.method)
            ceiling = measured(f"http://127.0.0.1:{port}", tokens_file, args, raw.pid, None)
            stop(raw)
        except BaseException:
            with contextlib.suppress(OSError):
                print("--- server log (tail) ---\n" + log.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            if not args.database_url:
                backend.drop()

    in_flight = observe.sent - observe.answered
    print(f"\nwarm-up: {warm.rps:.0f} pings/s over {warmup} s, p50 {warm.p50:.2f} ms, p99 {warm.p99:.2f} ms")
    print(f"\n{args.method} /api/v1/heartbeats/<token>, {args.monitors} distinct tokens round robin, {backend.kind},"
          f" {args.connections} connections, {args.seconds} s")  # fmt: skip
    print("one server process on CPU 0, wrk on CPU 1" + (", PostgreSQL on either" if backend.kind != "sqlite" else ""))
    print("server env: " + " ".join(f"{k}={v}" for k, v in SERVER_ENV.items()) + "\n")
    print(f"{'variant':24} {'pings/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'CPU ms/ping':>12}"
          f" {'CPU 0: server':>14} {'others':>7}")  # fmt: skip
    for label, r in (("observe serve", observe), ("raw ASGI constant", ceiling)):
        per = r.server_cpu_sec / max(r.answered, 1) * 1000
        mine, others = r.server_cpu_sec / r.seconds, max(r.cpu0_busy_sec - r.server_cpu_sec, 0.0) / r.seconds
        print(f"{label:24} {r.rps:9.0f} {r.p50:8.2f} {r.p99:8.2f} {r.non2xx:8d} {per:12.3f} {mine:14.0%} {others:7.0%}")
    if observe.db_cpu_sec:
        print(f"{'  + PostgreSQL backends':24} {'':9} {'':8} {'':8} {'':8} "
              f"{observe.db_cpu_sec / max(observe.answered, 1) * 1000:12.3f}")  # fmt: skip
    if observe.batches > 0:
        print(f"group commit: {observe.batches:.0f} transactions in the run, {observe.stored / observe.batches:.1f}"
              f" pings a transaction on average (the server's /metrics)")  # fmt: skip
    if observe.socket_errors:
        print(f"socket errors (observe): {observe.socket_errors}")
    print()
    print(f"observe / raw ASGI         = {observe.rps / ceiling.rps:.2f}x   (share of the HTTP stack's ceiling)")
    print(f"observe / Healthchecks.io  = {observe.rps / HEALTHCHECKS_PINGS_PER_SEC:.0f}x   (their documented"
          f" ~{HEALTHCHECKS_PINGS_PER_SEC:.0f} pings/s: Django, PostgreSQL, i7-9700K, wrk;"
          f" {HEALTHCHECKS_SOURCE})")  # fmt: skip
    print(f"observe / target 10,000/s  = {observe.rps / 10_000:.2f}x")
    durable = observe.ok <= stored <= observe.ok + in_flight
    print(f"\ndurability: {observe.ok} answered 200 and {stored} rows added to heartbeat_pings;"
          f" {in_flight} requests were in flight when wrk stopped, of which {stored - observe.ok} were stored:"
          f" {'OK' if durable else 'FAILED'} (every 200 is a stored row, no row without a request)")  # fmt: skip
    if findings:
        print(f"\nserver log: {len(findings)} warning/error lines, e.g.\n  " + "\n  ".join(findings[:5]))
    if profiled is not None and profile is not None and profile.samples:
        per_ping = profiled.server_cpu_sec / max(profiled.answered, 1) * 1e6
        print(f"\nwhere the server's CPU goes: py-spy, {profile.samples} samples of busy threads in a second run of"
              f" {args.seconds} s at {profiled.rps:.0f} pings/s, {per_ping:.0f} us of server CPU a ping")  # fmt: skip
        for title, rows in (("by task", profile.by_task), ("by layer", profile.by_layer),
                            ("busiest innermost frames", profile.by_frame)):  # fmt: skip
            print(f"\n  {title}:")
            for label, n in rows:
                print(f"  {n / profile.samples:6.1%} {per_ping * n / profile.samples:5.0f} us/ping  {label}")
    if not durable or observe.non2xx:
        sys.exit(1)


if __name__ == "__main__":
    main()
