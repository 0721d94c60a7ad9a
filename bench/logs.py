"""Benchmark: log ingest (OTLP/HTTP protobuf) and log search, per store engine.

**Ingest.** A real ``observe serve`` on a fresh, empty data directory (not
pinned: its event loop and the store's writer thread share both cores, as in
production) receives --ingest-records records (default 1,000,000) as
``POST /api/v1/otlp/v1/logs`` (``application/x-protobuf``,
``ExportLogsServiceRequest``) in batches of 1,000 from --clients concurrent
keep-alive connections (httpx, in this process). Every body is serialized
before the clock starts, so the client costs one ``send`` a batch (its CPU is
printed). Realistic records: a dozen services as resources, templated
messages with ids, numbers and hosts in them, levels from debug to error,
HTTP attributes, trace and span ids, times within the last seconds. A 200
means committed (``core.logs.writer``: group commit), so records/s is
acknowledged records over the wall time of the whole run. Afterwards: the
rows in the store must equal the acknowledged records, and a search through
the API must find the unique marker word of the last batch.

Baseline in the same run, the same records, no server: the engine's raw
batched insert, 1,000 rows a transaction — SQLite: the store's own day table
and FTS5 external-content index (its DDL and row values, ``executemany``),
and the same rows without the FTS5 index (what the index costs);
PostgreSQL: ``COPY`` into the store's partitioned table (rows with their
tsvector), and the same without the GIN index.

**Search.** For each --records count (default 1,000,000 and 10,000,000): a
fresh store loaded straight into the store's own tables (its DDL, its
partitions, its row encoding; SQLite ``executemany`` and PostgreSQL binary
``COPY``, 20,000 rows a transaction, see bench.logs_engines), not through the
server or ``write()``: the load is not what is measured, and the writer's
per-record Python (LogRecord datetimes, ``_row_values``) would make 10M take
many minutes longer. The records are spread evenly over --days (default 7)
up to now, so there are that many day tables / partitions. Then a server on
that data answers each query --repeat times (default 50; a kind stops after
30 s, at least 5 runs) through ``GET /api/v1/logs/search`` (limit 100, one
keep-alive client, sequential), over the default range (the last hour: ~1/168
of the records) and over the full range; p50/p95 of the client's wall time
(HTTP + search + JSON of the page). Kinds: a word, a phrase, a field filter,
a level filter, an attribute, a word with filters, a common word (must stop
at the page), a rare word (the index finds its few records), and a rare field
value (no index can drive it: the walk the planner falls back to).

--profile FILE samples the server with py-spy during the ingest (not a
dependency of observe: ``.venv/bin/pip install py-spy``) and prints where its
threads spend their samples. --skip-ingest / --skip-search run one half.

    python -m bench.logs [--backend sqlite|postgres|both] [--records 1000000,10000000]
                         [--ingest-records 1000000] [--clients 8] [--repeat 50] [--days 7] [--quick]
                         [--profile FILE] [--skip-ingest] [--skip-search]

--quick: 50,000 ingested, searches at 100,000 records, 5 repeats (a minute).
PostgreSQL: OBSERVE_TEST_DATABASE_URL (default
postgresql+asyncpg://postgres@127.0.0.1:5432/test) names the server; the run
creates and drops databases observe_bench_logs and observe_bench_logs_raw
next to it (OBSERVE_BENCH_LOGS_DB=name: name and name_raw; an unreachable
PostgreSQL is skipped with a note). The targets of issue 13 (50,000
records/s on SQLite, search p95 under 200 ms at 10M) are printed as ratios,
never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.api_me import free_port
from bench.heartbeats import stop, wait_http
from bench.logs_data import RARE_SERVICE, RARE_WORD, Spec, log_record, otlp_body, specs
from bench.logs_engines import Engine, engine_for
from bench.monitors_scale import cpu_seconds, pct

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
BATCH = 1_000
LOAD_BATCH = 20_000  # the writer's MAX_BATCH
SERVER_ENV = {"OBSERVE_RATE_LIMIT_TOKEN": "100000000/minute", "OBSERVE_LOG_LEVEL": "warning"}
TARGET_INGEST = 50_000.0  # records/s on SQLite (issue 13)
TARGET_P95_MS = 200.0  # search p95 at 10M (issue 13)
MAX_QUERY_MS = 30_000.0  # a query kind stops repeating after this much time (at least 5 runs)
# ---- a server ---------------------------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base: str
    log: Path

    @classmethod
    def start(cls, engine: Engine, data_dir: Path) -> Server:
        port = free_port()
        env = {**os.environ, **SERVER_ENV, **engine.server_env(data_dir)}
        log = data_dir / "server.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [PY, "-m", "gateway.cli", "serve", "--port", str(port), "--grpc-port", str(free_port())],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        server = cls(proc, f"http://127.0.0.1:{port}", log)
        wait_http(server.base + "/health/ready", proc, log)
        return server

    def stop(self) -> None:
        stop(self.proc)


def search(client: httpx.Client, q: str, since: datetime | None = None, limit: int = 100) -> list[dict[str, object]]:
    """One search through the API (``client``: keep-alive, the token in its headers)."""
    params: dict[str, str | int] = {"q": q, "limit": limit}
    if since is not None:
        params["from"] = since.isoformat().replace("+00:00", "Z")
    reply = client.get("/api/v1/logs/search", params=params)
    if reply.status_code != 200:
        raise SystemExit(f"search {q!r}: {reply.status_code} {reply.text[:500]}")
    return list(reply.json()["records"])


def api_client(base: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=600)


# ---- ingest -----------------------------------------------------------------------------------


@dataclass
class IngestResult:
    records: int
    seconds: float
    per_sec: float
    server_cpu: float
    client_cpu: float
    non2xx: int
    stored: int
    marker_found: bool
    raw: dict[str, float] = field(default_factory=dict)  # variant → records/s


async def post_all(base: str, token: str, bodies: list[bytes], clients: int) -> tuple[int, float]:
    """Posts every body (``clients`` at a time, keep-alive); (non-2xx answers, seconds)."""
    headers = {"authorization": f"Bearer {token}", "content-type": "application/x-protobuf"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    queue = list(reversed(bodies))
    failed = 0
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=120) as client:

        async def worker() -> None:
            nonlocal failed
            while queue:
                body = queue.pop()
                for _attempt in range(50):
                    reply = await client.post("/api/v1/otlp/v1/logs", content=body)
                    if reply.status_code not in (429, 503):
                        break
                    await asyncio.sleep(float(reply.headers.get("retry-after", "0.1")) / 10)
                if reply.status_code != 200:
                    failed += 1
                    print(f"  OTLP export: {reply.status_code} {reply.text[:200]}", file=sys.stderr)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return failed, time.perf_counter() - started


def spy_start(pid: int, out: Path) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    cmd = [spy, "record", "--pid", str(pid), "--rate", "200", "--nonblocking", "--threads", "--format", "raw",
           "--output", str(out)]  # fmt: skip
    sampler = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    return sampler


def spy_summary(raw: Path, top: int = 25) -> None:
    """Where the server's samples went: per thread, per file of the innermost frame
    of ours or a library's, and the busiest innermost frames."""
    by_thread: Counter[str] = Counter()
    by_file: Counter[str] = Counter()
    by_frame: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        by_thread[re.sub(r"^thread \(\d+\): ", "", frames[0])[:50]] += n
        leaf = re.sub(r"\s*\(.*?([^/]+/[^/]+\.py):\d+\)", r" (\1)", frames[-1])
        by_frame[leaf] += n
        files = [m.group(1) for f in reversed(frames) if (m := re.search(r"\((?:.*/)?((?:core|gateway)/[^:]+)", f))]
        by_file[files[0] if files else "(libraries, no frame of ours)"] += n
    print(f"\npy-spy: {total} samples of the server's threads (200/s)")
    for title, counter in (("by thread", by_thread), ("by innermost file of ours", by_file),
                           ("busiest innermost frames", by_frame)):  # fmt: skip
        print(f"  {title}:")
        for label, n in counter.most_common(top):
            print(f"  {n / total:6.1%}  {label}")


def run_ingest(engine: Engine, tmp: Path, n: int, clients: int, profile: Path | None = None) -> IngestResult:
    now_ns = time.time_ns()
    all_specs = list(specs(n, now_ns - 60 * 10**9, now_ns, seed=13))
    marker = f"lastbatch{os.getpid()}marker"
    last = all_specs[-1]
    all_specs[-1] = Spec(last.time_ns, last.severity, last.service, f"{last.message} {marker}", last.attributes,
                         last.trace_id, last.span_id)  # fmt: skip
    print(f"  serializing {n:,} records as {n // BATCH} OTLP protobuf bodies ...", flush=True)
    bodies = [otlp_body(all_specs[i : i + BATCH]) for i in range(0, n, BATCH)]
    print(f"  {sum(map(len, bodies)) / len(bodies) / 1024:.0f} KiB a body; posting with {clients} clients ...",
          flush=True)  # fmt: skip
    data_dir = tmp / f"ingest-{engine.name}"
    data_dir.mkdir()
    engine.reset()
    org_id, token = engine.create_user(data_dir)
    server = Server.start(engine, data_dir)
    try:
        cpu0 = cpu_seconds(server.proc.pid)
        sampler = spy_start(server.proc.pid, profile) if profile else None
        me0 = resource.getrusage(resource.RUSAGE_SELF)
        failed, seconds = asyncio.run(post_all(server.base, token, bodies, clients))
        me1 = resource.getrusage(resource.RUSAGE_SELF)
        server_cpu = cpu_seconds(server.proc.pid) - cpu0
        if sampler is not None:
            sampler.send_signal(signal.SIGINT)
            sampler.wait(timeout=60)
        with api_client(server.base, token) as client:
            found = search(client, marker)
        stored = engine.count_rows()
    finally:
        server.stop()
    acked = (len(bodies) - failed) * BATCH
    result = IngestResult(
        records=acked, seconds=seconds, per_sec=acked / seconds, server_cpu=server_cpu,
        client_cpu=(me1.ru_utime + me1.ru_stime) - (me0.ru_utime + me0.ru_stime), non2xx=failed,
        stored=stored, marker_found=len(found) == 1 and marker in str(found[0]["message"]),
    )  # fmt: skip
    print(f"  raw batched insert of the same {n:,} records ...", flush=True)
    records = [log_record(s, datetime.now(UTC)) for s in all_specs]
    result.raw = engine.raw_insert(tmp, org_id, records, BATCH)
    return result


# ---- search -----------------------------------------------------------------------------------

# (kind, query, full range?): the default range is the last hour.
QUERIES: list[tuple[str, str, bool]] = [
    ("word", "timeout", False),
    ("word", "timeout", True),
    ("phrase", '"connection refused"', False),
    ("phrase", '"connection refused"', True),
    ("field", "service:checkout", False),
    ("field", "service:checkout", True),
    ("level", "level:error", False),
    ("level", "level:error", True),
    ("attribute", "attr.http.status_code:503", False),
    ("attribute", "attr.http.status_code:503", True),
    ("word + filters", "timeout service:checkout level>=warn", True),
    ("common word", "request", True),
    ("rare word", RARE_WORD, False),
    ("rare word", RARE_WORD, True),
    ("rare field", f"service:{RARE_SERVICE}", False),
    ("rare field", f"service:{RARE_SERVICE}", True),
]


@dataclass
class SearchRow:
    kind: str
    q: str
    full: bool
    hits: int
    p50: float
    p95: float
    samples: int


def run_search(engine: Engine, tmp: Path, n: int, days: int, repeat: int) -> tuple[float, list[SearchRow]]:
    data_dir = tmp / f"search-{engine.name}-{n}"
    data_dir.mkdir()
    engine.reset()
    org_id, token = engine.create_user(data_dir)
    print(f"  loading {n:,} records over {days} days straight into the store's tables ...", flush=True)
    now_ns = time.time_ns()
    started = time.perf_counter()
    engine.load(org_id, specs(n, now_ns - days * 86_400 * 10**9, now_ns - 10**9, seed=n), LOAD_BATCH)
    load_sec = time.perf_counter() - started
    print(f"  loaded in {load_sec:.0f} s ({n / load_sec:,.0f} records/s); {engine.size_note()}", flush=True)
    server = Server.start(engine, data_dir)
    rows: list[SearchRow] = []
    since = datetime.now(UTC) - timedelta(days=days + 1)
    try:
        client = api_client(server.base, token)
        search(client, "warm up")
        for kind, q, full in QUERIES:
            times: list[float] = []
            hits = 0
            for _ in range(repeat):
                if len(times) >= 5 and sum(times) > MAX_QUERY_MS:
                    break  # a slow kind: enough samples for its p50, fewer for its p95
                started = time.perf_counter()
                hits = len(search(client, q, since if full else None))
                times.append((time.perf_counter() - started) * 1000)
            rows.append(SearchRow(kind, q, full, hits, pct(times, 0.5), pct(times, 0.95), len(times)))
            print(f"    {kind:15} {q:40} {'full' if full else '1h':4} {hits:4} hits"
                  f"  p50 {rows[-1].p50:8.1f} ms  p95 {rows[-1].p95:8.1f} ms", flush=True)  # fmt: skip
        client.close()
    finally:
        server.stop()
    return load_sec, rows


# ---- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--records", default="1000000,10000000", help="search: comma-separated record counts")
    parser.add_argument("--ingest-records", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--profile", type=Path, help="sample the server with py-spy during ingest, stacks to this file")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 50,000 ingested, 100,000 searched")
    args = parser.parse_args()
    if args.quick:
        args.ingest_records, args.records, args.repeat = 50_000, "100000", 5
    counts = [int(c.replace("_", "")) for c in args.records.split(",") if c.strip()]
    args.ingest_records = max(BATCH, args.ingest_records // BATCH * BATCH)
    names = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    print(f"machine: {os.cpu_count()} CPUs, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f}"
          f" GiB RAM, Python {sys.version.split()[0]}", flush=True)  # fmt: skip

    ingests: dict[str, IngestResult] = {}
    searches: dict[str, dict[int, tuple[float, list[SearchRow]]]] = {}
    with tempfile.TemporaryDirectory(prefix="observe-bench-logs-") as tmp_name:
        tmp = Path(tmp_name)
        for name in names:
            engine = engine_for(name)
            why_not = engine.unavailable()
            if why_not:
                print(f"\n{name}: skipped ({why_not})", flush=True)
                continue
            try:
                if not args.skip_ingest:
                    print(f"\n{name}: ingest of {args.ingest_records:,} records", flush=True)
                    ingests[name] = run_ingest(engine, tmp, args.ingest_records, args.clients, args.profile)
                    if args.profile:
                        spy_summary(args.profile)
                    engine.cleanup_files(tmp)
                for n in [] if args.skip_search else counts:
                    print(f"\n{name}: search at {n:,} records", flush=True)
                    searches.setdefault(name, {})[n] = run_search(engine, tmp, n, args.days, args.repeat)
                    engine.cleanup_files(tmp)
            finally:
                engine.drop()
    report(ingests, searches, args)


def report(ingests: dict[str, IngestResult], searches: dict[str, dict[int, tuple[float, list[SearchRow]]]],
           args: argparse.Namespace) -> None:  # fmt: skip
    failed = False
    for name, r in ingests.items():
        print(f"\n== {name}: OTLP/HTTP protobuf ingest, {r.records:,} records in batches of {BATCH:,},"
              f" {args.clients} clients")  # fmt: skip
        print(f"{'variant':44} {'records/s':>11} {'observe / it':>13}")
        print(f"{'observe serve (2xx = committed)':44} {r.per_sec:11,.0f}")
        for variant, per_sec in r.raw.items():
            print(f"{variant:44} {per_sec:11,.0f} {r.per_sec / per_sec:12.2f}x")
        if name == "sqlite":
            print(f"{'target (issue 13)':44} {TARGET_INGEST:11,.0f} {r.per_sec / TARGET_INGEST:12.2f}x")
        print(
            f"server CPU {r.server_cpu / r.seconds:.0%} of a core over {r.seconds:.1f} s"
            f" ({r.server_cpu / r.records * 1e6:.1f} us a record); client CPU {r.client_cpu / r.seconds:.0%}"
        )
        ok = r.stored == r.records and r.marker_found and not r.non2xx
        failed |= not ok
        print(
            f"durable and searchable: {r.records:,} acknowledged, {r.stored:,} rows stored, {r.non2xx} non-2xx,"
            f" last batch's marker {'found' if r.marker_found else 'NOT found'}: {'OK' if ok else 'FAILED'}"
        )
    for name, by_count in searches.items():
        for n, (load_sec, rows) in by_count.items():
            print(f"\n== {name}: search at {n:,} records over {args.days} days (loaded at {n / load_sec:,.0f}/s),"
                  f" limit 100, {args.repeat} times each, ms")  # fmt: skip
            print(f"{'kind':15} {'query':40} {'range':>6} {'hits':>5} {'p50':>9} {'p95':>9} {'p95/target':>11}"
                  f" {'runs':>5}")  # fmt: skip
            for s in rows:
                print(f"{s.kind:15} {s.q:40} {'full' if s.full else '1h':>6} {s.hits:5} {s.p50:9.1f} {s.p95:9.1f}"
                      f" {s.p95 / TARGET_P95_MS:10.2f}x {s.samples:5}")  # fmt: skip
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
