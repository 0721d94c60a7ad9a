"""Benchmark: the checking engine at scale, on a real server.

For each size N (default 1,000, 5,000 and 10,000 http monitors at 30 s) a fresh
``observe serve`` checks a minimal local target (bench.checker_throughput's, in
its own process). The monitors are made with POST /api/v1/monitors/bulk; after
one interval of warm-up, a window of --measure-sec gives:
  - achieved checks/s (rows added to check_results in the window) against the
    ideal N/30
  - schedule lag p50/p99 from the server's observe_scheduler_lag_seconds
    histogram (bucket counts at the window's end minus its start,
    interpolated within buckets)
  - start-to-start jitter p50/p99: |gap between a monitor's consecutive
    checked_at − 30 s|, for each check in the window and the one before it
  - CPU of the server and of the target, in % of one core
  - missed: monitors with no check in the window

Then, on the largest size's data, 90 days of rollups are seeded straight into
check_rollups (daily for 90 days, hourly for 7, 5-minute for 1, as the server
keeps them), the server is restarted (still checking) and stats, timelines and
the monitor list are timed against GET /me on the same server.

    python -m bench.monitors_scale [--sizes 1000,5000,10000] [--measure-sec 60]
                                   [--backend sqlite|postgresql]

PostgreSQL: OBSERVE_TEST_DATABASE_URL (default
postgresql+asyncpg://postgres@127.0.0.1:5432/test); the run drops and recreates
a database observe_bench next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import multiprocessing
import os
import random
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from bench.checker_throughput import start_target
from core.monitors.rollups import LEVELS, Agg, bucket_start

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
INTERVAL = 30
WARMUP_SEC = 35
BULK = 100
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
BENCH_DB = "observe_bench"
# Rollup buckets seeded per monitor and level: 5-minute for 1 day, hourly for 7, daily for 90.
SEED_BUCKETS = {0: 288, 1: 7 * 24, 2: 90}
LATENCY_REQUESTS = 200
CLK_TCK = os.sysconf("SC_CLK_TCK")
LAG_RE = re.compile(r'^observe_scheduler_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', re.M)
SKIPPED_RE = re.compile(r"^observe_checks_skipped_total\{([^}]*)\} (\S+)$", re.M)
SQLITE_TS = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a UtcDateTime on SQLite (naive UTC)


class ServerDiedError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile (0–1) of values, linearly interpolated; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# ---- the database, read and seeded directly ------------------------------------------


@dataclass
class Backend:
    """Where the server's data lives, and direct access to it for the bench."""

    kind: str  # sqlite | postgresql
    admin_dsn: str = ""  # asyncpg DSN of the database observe_bench is created next to
    server_url: str = ""  # OBSERVE_DATABASE_URL for postgresql
    sqlite_path: Path | None = None

    @classmethod
    def postgresql(cls) -> Backend:
        url = make_url(os.environ.get("OBSERVE_TEST_DATABASE_URL") or DEFAULT_PG)
        admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
        server = url.set(drivername="postgresql+asyncpg", database=BENCH_DB).render_as_string(hide_password=False)
        return cls("postgresql", admin_dsn=admin, server_url=server)

    @property
    def dsn(self) -> str:
        return make_url(self.server_url).set(drivername="postgresql").render_as_string(hide_password=False)

    def reset(self, data_dir: Path) -> None:
        """A fresh, empty database for a new server."""
        if self.kind == "sqlite":
            self.sqlite_path = data_dir / "observe.db"
            return

        async def recreate() -> None:
            conn = await asyncpg.connect(self.admin_dsn)
            try:
                await conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
                await conn.execute(f"CREATE DATABASE {BENCH_DB}")
            finally:
                await conn.close()

        asyncio.run(recreate())

    def drop(self) -> None:
        if self.kind != "postgresql":
            return

        async def drop() -> None:
            conn = await asyncpg.connect(self.admin_dsn)
            try:
                await conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
            finally:
                await conn.close()

        with contextlib.suppress(Exception):
            asyncio.run(drop())

    def checks_between(self, start: float, end: float) -> list[tuple[int, float]]:
        """(monitor_id, checked_at as epoch seconds) of results in [start, end), by monitor and time."""
        lo, hi = datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
        if self.kind == "sqlite":
            assert self.sqlite_path is not None
            with contextlib.closing(sqlite3.connect(self.sqlite_path, timeout=30)) as conn:
                rows = conn.execute(
                    "SELECT monitor_id, checked_at FROM check_results WHERE checked_at >= ? AND checked_at < ?"
                    " ORDER BY monitor_id, checked_at",
                    (lo.replace(tzinfo=None).strftime(SQLITE_TS), hi.replace(tzinfo=None).strftime(SQLITE_TS)),
                ).fetchall()
            return [(int(mid), datetime.fromisoformat(at).replace(tzinfo=UTC).timestamp()) for mid, at in rows]

        async def fetch() -> list[tuple[int, float]]:
            conn = await asyncpg.connect(self.dsn)
            try:
                rows = await conn.fetch(
                    "SELECT monitor_id, checked_at FROM check_results WHERE checked_at >= $1 AND checked_at < $2"
                    " ORDER BY monitor_id, checked_at",
                    lo,
                    hi,
                )
            finally:
                await conn.close()
            return [(int(r[0]), r[1].timestamp()) for r in rows]

        return asyncio.run(fetch())

    def insert_rollups(self, batches: Iterator[list[tuple[Any, ...]]]) -> int:
        """Inserts every batch (one transaction each, executemany); rows already there are kept."""
        total = 0
        cols = "monitor_id, level, bucket_start, checks, up_checks, timed, sum_ms, min_ms, max_ms, hist"
        if self.kind == "sqlite":
            assert self.sqlite_path is not None
            with contextlib.closing(sqlite3.connect(self.sqlite_path, timeout=30)) as conn:
                for batch in batches:
                    with conn:
                        conn.executemany(
                            f"INSERT OR IGNORE INTO check_rollups ({cols}) VALUES (?,?,?,?,?,?,?,?,?,?)", batch
                        )
                    total += len(batch)
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return total

        async def insert() -> int:
            conn = await asyncpg.connect(self.dsn)
            n = 0
            try:
                for batch in batches:
                    async with conn.transaction():
                        await conn.executemany(
                            f"INSERT INTO check_rollups ({cols}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)"
                            " ON CONFLICT DO NOTHING",
                            batch,
                        )
                    n += len(batch)
            finally:
                await conn.close()
            return n

        return asyncio.run(insert())

    def timestamp(self, at: datetime) -> Any:
        """A bucket start as the driver wants it for a UtcDateTime column."""
        return at.replace(tzinfo=None).strftime(SQLITE_TS) if self.kind == "sqlite" else at


# ---- the server ------------------------------------------------------------------------


@dataclass
class Server:
    """``observe serve`` in a subprocess, its output in a log file."""

    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    base: str = ""
    _log: Any = None

    def start(self) -> None:
        http_port, grpc_port = free_port(), free_port()
        self.env = {**self.env, "OBSERVE_HTTP_PORT": str(http_port), "OBSERVE_GRPC_PORT": str(grpc_port)}
        self.base = f"http://127.0.0.1:{http_port}"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [PY, "-m", "gateway.cli", "serve"], cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base + "/health/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise ServerDiedError(f"server not ready after 90 s\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ServerDiedError(f"the server exited with code {self.proc.returncode}\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "--- server log (tail) ---\n" + "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                print("server did not stop within 20 s of SIGTERM; killing it", file=sys.stderr)
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def create_token(self) -> str:
        out = subprocess.run(
            [PY, "-m", "core.cli", "admin", "create-user", "--email", "bench@example.com", "--print-token"],
            cwd=ROOT, env=self.env, capture_output=True, text=True,
        )  # fmt: skip
        token = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
        if out.returncode != 0 or not token.startswith("obs_"):
            # Most likely a source file half-way through an edit: worth a retry, as a dead server is.
            raise ServerDiedError(f"create-user failed ({out.returncode}): {out.stdout}\n{out.stderr[-3000:]}")
        return token

    def metrics(self) -> str:
        reply = httpx.get(self.base + "/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30)
        reply.raise_for_status()
        return reply.text


def with_retries(what: str, fn: Callable[[], Any], attempts: int = 3) -> Any:
    """Runs fn; if the server died (say, on a half-edited source file), waits a minute and tries again."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except ServerDiedError as err:
            if attempt == attempts:
                raise
            print(f"{what}: {err}\nretrying in 60 s ({attempt}/{attempts - 1})", file=sys.stderr)
            time.sleep(60)
    raise AssertionError("unreachable")


# ---- measuring ---------------------------------------------------------------------------


def lag_buckets(metrics_text: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) of observe_scheduler_lag_seconds, +Inf last."""
    out = [(float(le), float(count)) for le, count in LAG_RE.findall(metrics_text)]
    return sorted(out)


def skipped_total(metrics_text: str) -> float:
    return sum(float(v) for _, v in SKIPPED_RE.findall(metrics_text))


def histogram_quantile(before: list[tuple[float, float]], after: list[tuple[float, float]], q: float) -> float:
    """The q-quantile of what was observed between two scrapes, linear within a bucket
    (the upper finite bound if it falls in +Inf)."""
    prior = dict(before)
    counts = [(le, count - prior.get(le, 0.0)) for le, count in after]
    if not counts or counts[-1][1] <= 0:
        return math.nan
    rank = q * counts[-1][1]
    lower, below = 0.0, 0.0
    for le, cum in counts:
        if cum >= rank:
            if math.isinf(le):
                return lower
            share = (rank - below) / (cum - below) if cum > below else 0.0
            return lower + (le - lower) * share
        lower, below = le, cum
    return lower


def worst_lag_bound(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> str:
    """The smallest bucket bound holding every lag observed between two scrapes."""
    prior = dict(before)
    counts = [(le, count - prior.get(le, 0.0)) for le, count in after]
    if not counts or counts[-1][1] <= 0:
        return "-"
    finite = [le for le, _ in counts if not math.isinf(le)]
    for le, cum in counts:
        if cum >= counts[-1][1]:
            return f"<= {le:g} s" if not math.isinf(le) else f"> {finite[-1]:g} s"
    return "-"


@dataclass
class ScaleResult:
    monitors: int
    created_per_sec: float
    ideal: float
    achieved: float
    lag_p50: float
    lag_p99: float
    jitter_p50: float
    jitter_p99: float
    server_cpu: float
    target_cpu: float
    missed: int
    skipped: float
    lag_max_bucket: str
    scrape_ms: float
    notes: list[str] = field(default_factory=list)


def create_monitors(client: httpx.Client, target_url: str, n: int, bulk: int = BULK) -> tuple[list[int], float]:
    ids: list[int] = []
    started = time.perf_counter()
    for first in range(0, n, bulk):
        body = {
            "monitors": [
                {"name": f"bench-{i}", "type": "http", "url": f"{target_url}/{i}", "intervalSec": INTERVAL,
                 "timeoutMs": 10000}
                for i in range(first, min(first + bulk, n))
            ]
        }  # fmt: skip
        reply = client.post("/api/v1/monitors/bulk", json=body, timeout=120)
        if reply.status_code != 201:
            raise RuntimeError(f"bulk create: {reply.status_code} {reply.text[:500]}")
        ids.extend(int(m["id"]) for m in reply.json()["monitors"])
    return ids, time.perf_counter() - started


def sleep_watching(server: Server, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        server.check_alive()
        time.sleep(min(1.0, left))
    server.check_alive()


def measure_scale(
    n: int, server: Server, backend: Backend, target_url: str, target_pid: int, measure_sec: float, bulk: int
) -> tuple[ScaleResult, str, list[int]]:
    token = server.create_token()
    with httpx.Client(base_url=server.base, headers={"authorization": f"Bearer {token}"}) as client:
        ids, took = create_monitors(client, target_url, n, bulk)
    print(f"  {n} monitors created in {took:.1f} s ({n / took:.0f}/s); warming up {WARMUP_SEC} s", flush=True)
    sleep_watching(server, WARMUP_SEC)

    # The window opens as the first scrape starts: checks it delays (it holds the server's loop for a
    # while at scale) start inside the window, and no check due before the window is pushed into it.
    t0 = time.time()
    cpu_s0, cpu_t0 = cpu_seconds(server.pid), cpu_seconds(target_pid)
    scrape = time.perf_counter()
    m0 = server.metrics()
    scrape_ms = (time.perf_counter() - scrape) * 1000
    sleep_watching(server, t0 + measure_sec - time.time())
    t1 = time.time()
    cpu_s1, cpu_t1 = cpu_seconds(server.pid), cpu_seconds(target_pid)
    scrape = time.perf_counter()
    m1 = server.metrics()
    scrape_ms = max(scrape_ms, (time.perf_counter() - scrape) * 1000)
    elapsed = t1 - t0
    time.sleep(3)  # the writer flushes every second
    server.check_alive()

    rows = backend.checks_between(t0 - INTERVAL - 1, t1)
    in_window = [(mid, at) for mid, at in rows if at >= t0]
    jitter: list[float] = []
    for (prev_mid, prev_at), (mid, at) in itertools.pairwise(rows):
        if mid == prev_mid and at >= t0:
            jitter.append(abs(at - prev_at - INTERVAL))
    checked = {mid for mid, _ in in_window}
    before, after = lag_buckets(m0), lag_buckets(m1)
    result = ScaleResult(
        monitors=n,
        created_per_sec=n / took,
        ideal=n / INTERVAL,
        achieved=len(in_window) / elapsed,
        lag_p50=histogram_quantile(before, after, 0.50),
        lag_p99=histogram_quantile(before, after, 0.99),
        jitter_p50=pct(jitter, 0.50),
        jitter_p99=pct(jitter, 0.99),
        server_cpu=(cpu_s1 - cpu_s0) / elapsed * 100,
        target_cpu=(cpu_t1 - cpu_t0) / elapsed * 100,
        missed=n - len(checked & set(ids)),
        skipped=skipped_total(m1) - skipped_total(m0),
        lag_max_bucket=worst_lag_bound(before, after),
        scrape_ms=scrape_ms,
    )
    return result, token, ids


# ---- rollups and read latency ------------------------------------------------------------


def agg_pool(level: int, size: int, rng: random.Random) -> list[tuple[Any, ...]]:
    """Rollup values of realistic buckets at a level: one check per 30 s, response times
    log-normal around 20–80 ms (≈20 histogram bins when full), the odd slow or failed check."""
    per_bucket = LEVELS[level] // INTERVAL
    pool = []
    for _ in range(size):
        agg = Agg()
        mu = math.log(rng.uniform(20, 80))
        for _ in range(per_bucket):
            ok = rng.random() > 0.001
            ms = rng.lognormvariate(mu, 0.15) * (8 if rng.random() < 0.002 else 1)
            agg.add(ok, ms if ok else None)
        row = agg.row()
        pool.append(tuple(row[c] for c in ("checks", "up_checks", "timed", "sum_ms", "min_ms", "max_ms", "hist")))
    return pool


def rollup_batches(
    backend: Backend, ids: list[int], now: datetime, batch_rows: int = 50_000
) -> tuple[Iterator[list[tuple[Any, ...]]], int, float]:
    rng = random.Random(7)
    pools = {level: agg_pool(level, 64, rng) for level in SEED_BUCKETS}
    bins = [len(p[-1].split(",")) for p in pools[2]]
    starts = {
        level: [backend.timestamp(bucket_start(now, level) - timedelta(seconds=LEVELS[level] * k))
                for k in range(count, 0, -1)]
        for level, count in SEED_BUCKETS.items()
    }  # fmt: skip
    total = len(ids) * sum(SEED_BUCKETS.values())

    def gen() -> Iterator[list[tuple[Any, ...]]]:
        batch: list[tuple[Any, ...]] = []
        for mid in ids:
            for level, level_starts in starts.items():
                pool = pools[level]
                for i, start in enumerate(level_starts):
                    batch.append((mid, level, start, *pool[(mid + i) % len(pool)]))
            if len(batch) >= batch_rows:
                yield batch
                batch = []
        if batch:
            yield batch

    return gen(), total, statistics.mean(bins)


@dataclass
class Latency:
    label: str
    p50: float
    p99: float
    mean: float


def measure_reads(server: Server, token: str, ids: list[int], requests: int) -> list[Latency]:
    now = datetime.now(UTC).replace(microsecond=0)
    from_90d = (now - timedelta(days=90)).strftime("%Y-%m-%dT%H:%M:%SZ")
    from_24h = (now - timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")
    endpoints: list[tuple[str, Callable[[int], str]]] = [
        ("GET /me", lambda _: "/api/v1/me"),
        ("GET /monitors/{id}/stats", lambda i: f"/api/v1/monitors/{i}/stats"),
        ("timeline 90 d, 1 d buckets", lambda i: f"/api/v1/monitors/{i}/timeline?from={from_90d}&bucketSec=86400"),
        ("timeline 24 h, 1 h buckets", lambda i: f"/api/v1/monitors/{i}/timeline?from={from_24h}&bucketSec=3600"),
        ("GET /monitors?limit=100", lambda _: "/api/v1/monitors?limit=100"),
    ]
    rng = random.Random(11)
    times: dict[str, list[float]] = {label: [] for label, _ in endpoints}
    with httpx.Client(base_url=server.base, headers={"authorization": f"Bearer {token}"}, timeout=30) as client:
        for round_ in range(requests + 20):  # the first 20 rounds warm up; endpoints take turns
            for label, path in endpoints:
                url = path(rng.choice(ids))
                started = time.perf_counter()
                reply = client.get(url)
                took = (time.perf_counter() - started) * 1000
                if reply.status_code != 200:
                    server.check_alive()
                    raise RuntimeError(f"GET {url}: {reply.status_code} {reply.text[:300]}")
                if label == "timeline 90 d, 1 d buckets" and round_ == 0:
                    buckets = reply.json().get("buckets", [])
                    if sum(int(b.get("checks", 0)) for b in buckets) == 0:
                        raise RuntimeError(f"the 90-day timeline is empty: seeding missed? {reply.text[:300]}")
                if round_ >= 20:
                    times[label].append(took)
    return [Latency(label, pct(v, 0.5), pct(v, 0.99), statistics.mean(v)) for label, v in times.items()]


# ---- the run -------------------------------------------------------------------------------


def start_target_process() -> tuple[str, int]:
    """bench.checker_throughput's target, forked; returns its URL and pid."""
    before = {p.pid for p in multiprocessing.active_children()}
    port = start_target()
    new = [p for p in multiprocessing.active_children() if p.pid not in before]
    assert len(new) == 1
    assert new[0].pid is not None
    return f"http://127.0.0.1:{port}", new[0].pid


METRICS_TOKEN = "bench-metrics-token"


def base_env(backend: Backend, data_dir: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "OBSERVE_DATA_DIR": str(data_dir),
        "OBSERVE_ALLOW_PRIVATE_TARGETS": "true",
        "OBSERVE_RATE_LIMIT_TOKEN": "1000000/minute",
        # The scrape measured is the full one, with the per-monitor series.
        "OBSERVE_METRICS_TOKEN": METRICS_TOKEN,
    }
    env.pop("OBSERVE_DATABASE_URL", None)
    if backend.kind == "postgresql":
        env["OBSERVE_DATABASE_URL"] = backend.server_url
    return env


def log_findings(log_path: Path, skip_lines: int = 0) -> list[str]:
    """WARNING/ERROR lines of a server log (after its first skip_lines), counted by message,
    each with the last line of the traceback that follows it, if any."""
    counts: dict[str, int] = {}
    try:
        lines = log_path.read_text(errors="replace").splitlines()[skip_lines:]
    except OSError:
        return []
    for i, line in enumerate(lines):
        if re.search(r" (WARNING|ERROR|CRITICAL) ", line):
            key = re.sub(r"^\S+ \S+ ", "", line)[:160]
            if i + 1 < len(lines) and lines[i + 1].startswith("Traceback"):
                end = next((j for j in range(i + 2, len(lines)) if not lines[j].startswith((" ", "Traceback"))), i)
                if end > i:
                    key += " <- " + lines[end][:200]
            key = re.sub(r"\d+", "N", key)
            counts[key] = counts.get(key, 0) + 1
    return [f"{n:6d} x {msg}" for msg, n in sorted(counts.items(), key=lambda kv: -kv[1])][:12]


def log_lines(log_path: Path) -> int:
    try:
        return len(log_path.read_text(errors="replace").splitlines())
    except OSError:
        return 0


def run(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    backend = Backend.postgresql() if args.backend == "postgresql" else Backend("sqlite")
    target_url, target_pid = start_target_process()
    results: list[ScaleResult] = []
    latencies: list[Latency] = []
    seed_note = ""
    findings: dict[str, list[str]] = {}
    servers: list[Server] = []
    tmp = Path(tempfile.mkdtemp(prefix="observe-scale-"))
    try:
        for n in sizes:
            data_dir = tmp / f"data-{n}"
            data_dir.mkdir()
            print(f"\n[{n} monitors] {args.backend}, data in {data_dir}", flush=True)

            def fresh(n: int = n, data_dir: Path = data_dir) -> tuple[Server, ScaleResult, str, list[int]]:
                backend.reset(data_dir)
                for stale in data_dir.glob("observe.db*"):
                    stale.unlink()
                server = Server(base_env(backend, data_dir), data_dir.parent / f"server-{n}.log")
                servers.append(server)
                server.start()
                result, token, ids = measure_scale(
                    n, server, backend, target_url, target_pid, args.measure_sec, args.bulk
                )
                return server, result, token, ids

            server, result, token, ids = with_retries(f"{n} monitors", fresh)
            results.append(result)
            print(
                f"  achieved {result.achieved:.1f}/s of {result.ideal:.1f}/s, lag p99 {result.lag_p99 * 1000:.1f} ms,"
                f" server CPU {result.server_cpu:.0f}%, missed {result.missed}",
                flush=True,
            )
            server.stop()
            findings[f"{n} monitors"] = log_findings(server.log_path)
            if n != max(sizes):
                backend.drop()
                continue

            # Seed 90 days of rollups for the largest size, then time the reads.
            print(f"  seeding rollups for {n} monitors", flush=True)
            batches, total, bins = rollup_batches(backend, ids, datetime.now(UTC))
            started = time.perf_counter()
            inserted = backend.insert_rollups(batches)
            took = time.perf_counter() - started
            assert inserted == total
            seed_note = (
                f"seeded {inserted:,} rollup rows ({n} monitors x {sum(SEED_BUCKETS.values())} buckets,"
                f" daily hist ~{bins:.0f} bins) in {took:.1f} s: {inserted / took:,.0f} rows/s"
            )
            print(f"  {seed_note}", flush=True)

            seen = log_lines(server.log_path)

            def restart(server: Server = server) -> Server:
                server.start()
                return server

            server = with_retries("restart", restart)
            sleep_watching(server, 5)  # let the scheduler load the monitors
            cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
            latencies = measure_reads(server, token, ids, args.requests)
            cpu = (cpu_seconds(server.pid) - cpu0) / (time.monotonic() - t0) * 100
            seed_note += f"\nserver CPU while timing the reads (it keeps checking): {cpu:.0f}%"
            server.stop()
            findings[f"{n} monitors, after seeding"] = log_findings(server.log_path, seen)
    except (ServerDiedError, RuntimeError) as err:
        print(f"\nbenchmark failed: {err}", file=sys.stderr)
        if not isinstance(err, ServerDiedError):
            for server in servers:
                if server.proc is not None:
                    print(server.log_tail(), file=sys.stderr)
        return 1
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()
        for child in multiprocessing.active_children():
            child.terminate()
        backend.drop()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
        else:
            print(f"data and server logs kept in {tmp}")

    print_report(args, results, latencies, seed_note, findings)
    return 0


def print_report(
    args: argparse.Namespace,
    results: list[ScaleResult],
    latencies: list[Latency],
    seed_note: str,
    findings: dict[str, list[str]],
) -> None:
    cores = os.cpu_count() or 1
    print(
        f"\nhttp monitors every {INTERVAL} s against a local target, {args.backend}, one server process,"
        f" {WARMUP_SEC} s warm-up, {args.measure_sec:g} s window, {cores} CPUs\n"
    )
    header = (
        f"{'monitors':>8} {'created/s':>9} {'ideal/s':>8} {'achieved/s':>10} {'ratio':>6} {'lag p50/p99 ms':>15}"
        f" {'jitter p50/p99 ms':>18} {'server CPU':>10} {'target CPU':>10} {'missed':>6} {'skipped':>7}"
        f" {'/metrics ms':>11}"
    )
    print(header)
    for r in results:
        lag = f"{r.lag_p50 * 1000:.1f}/{r.lag_p99 * 1000:.1f}"
        jit = f"{r.jitter_p50 * 1000:.1f}/{r.jitter_p99 * 1000:.1f}"
        print(
            f"{r.monitors:8d} {r.created_per_sec:9.0f} {r.ideal:8.1f} {r.achieved:10.1f} {r.achieved / r.ideal:6.3f}"
            f" {lag:>15} {jit:>18} {r.server_cpu:9.0f}% {r.target_cpu:9.0f}% {r.missed:6d} {r.skipped:7.0f}"
            f" {r.scrape_ms:11.0f}"
        )
    print(
        "\nlag: due time to check start (observe_scheduler_lag_seconds, interpolated in its buckets: 5, 10, 25,"
        " 50, 100, 250, 500 ms, ...);\njitter: |start-to-start gap - 30 s| from check_results;"
        "\nCPU in % of one core; skipped: observe_checks_skipped_total in the window (e.g. still running);"
        "\n/metrics ms: the slower of the two scrapes (window start and end); the server's loop is busy"
        " for about that long,\nso the lag, jitter and CPU figures include one such stall per window (the"
        " first scrape), as Prometheus would add"
    )
    worst = ", ".join(f"{r.monitors}: {r.lag_max_bucket}" for r in results)
    print(f"largest lag in the window (histogram bound): {worst}")
    if latencies:
        print(f"\nreads on {max(r.monitors for r in results)} monitors with 90 days of rollups")
        print(seed_note)
        print(f"{LATENCY_REQUESTS if args.requests == LATENCY_REQUESTS else args.requests} sequential requests each,"
              " random monitors, one keep-alive connection\n")  # fmt: skip
        print(f"{'request':30} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'p50 / me':>9}")
        base = latencies[0].p50
        for lat in latencies:
            print(f"{lat.label:30} {lat.p50:8.2f} {lat.p99:8.2f} {lat.mean:8.2f} {lat.p50 / base:8.2f}x")
    for where, lines in findings.items():
        if lines:
            print(f"\nserver log, {where}: warnings and errors by message")
            print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,5000,10000", help="monitor counts, comma-separated")
    parser.add_argument("--measure-sec", type=float, default=60, help="measurement window after warm-up")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--requests", type=int, default=LATENCY_REQUESTS, help="timed reads per endpoint")
    parser.add_argument("--bulk", type=int, default=BULK, help="monitors per POST /monitors/bulk (1-100)")
    parser.add_argument("--keep", action="store_true", help="keep the data directories and server logs")
    args = parser.parse_args()
    if args.measure_sec < INTERVAL:
        parser.error(f"--measure-sec must be at least {INTERVAL}")
    sys.exit(run(args))


if __name__ == "__main__":
    main()
