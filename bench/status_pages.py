"""Benchmark: a public status page served to a crowd, against the raw ASGI ceiling.

A real ``observe serve`` (one process pinned to CPU 0) gets a page of
--components monitors (default 50, in groups of 10; http monitors checking the
server's own /health/live once an hour) with 90 days of history: a daily
rollup row per monitor and day (written straight into the database, as the
scheduler would have), a down interval on some monitors every few days
(monitor_events), an open incident with updates on one of them, a manual one,
and a maintenance window on a tenth of them. Then wrk (CPU 1, --connections,
default 64) reads for --seconds each of

- the public JSON   GET /api/v1/status-pages/public/{slug}
- the HTML page     GET /status/{slug}

each with Accept-Encoding: gzip (as browsers send it: the compressed copy,
made once per view) and without; all cache hits after the first request; and in the same run bench/raw_asgi.py
(uvicorn, uvloop + httptools, a constant 200 on CPU 0): the HTTP stack's
ceiling. Target: each at least 50 % of the ceiling.

Then, in this process, on the same database: the cost of a cache hit of
``PublicViews.view()`` next to a bare dict lookup, and of one miss (a build).

The server runs with OBSERVE_RATE_LIMIT_PUBLIC_IP=1000000000/minute (the
public routes' per-IP limit would refuse the crowd, which is one address here;
the limiter still counts every request).

--profile samples the server with py-spy during a second run of each URL and
prints where its time goes (py-spy: .venv/bin/pip install py-spy).

    python -m bench.status_pages [--seconds 10] [--connections 64] [--components 50]
                                 [--backend sqlite|postgresql] [--profile]

PostgreSQL: OBSERVE_TEST_DATABASE_URL (default
postgresql+asyncpg://postgres@127.0.0.1:5432/test); the run drops and
recreates a database observe_bench_status_pages next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import insert, update
from sqlalchemy.engine import make_url

from bench.api_me import free_port, pinned
from bench.heartbeats import UVICORN, call, stop, wait_http

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
DAYS = 90
BENCH_DB = "observe_bench_status_pages"
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
SERVER_ENV = {
    "OBSERVE_RATE_LIMIT_PUBLIC_IP": "1000000000/minute",
    "OBSERVE_RATE_LIMIT_TOKEN": "100000000/minute",
    "OBSERVE_ALLOW_PRIVATE_TARGETS": "true",
    "OBSERVE_LOG_LEVEL": "warning",
}


async def raw_body_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A raw ASGI app answering the bytes of the file $OBSERVE_BENCH_BODY: the
    HTTP stack's ceiling for a body of the page's size."""
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(_RAW_BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _RAW_BODY})


_RAW_BODY = Path(os.environ["OBSERVE_BENCH_BODY"]).read_bytes() if "OBSERVE_BENCH_BODY" in os.environ else b""


def run_wrk(url: str, seconds: int, connections: int, *, gzip_ok: bool = False) -> dict[str, float]:
    """wrk's figures for ``url``; ``gzip_ok``: sends Accept-Encoding: gzip, as browsers do."""
    headers = ["-H", "Accept-Encoding: gzip"] if gzip_ok else []
    cmd = pinned(1, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency", *headers, url])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    lat = dict(re.findall(r"\s+(50|99)%\s+([\d.]+\w+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    if not rps or "50" not in lat:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")

    def ms(v: str) -> float:
        m = re.fullmatch(r"([\d.]+)(us|ms|s)", v)
        assert m, v
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    mb = (
        float(transfer.group(1)) * {"B": 1e-6, "KB": 1e-3, "MB": 1.0, "GB": 1e3}.get(transfer.group(2), 1.0)
        if transfer
        else 0.0
    )
    return {"rps": float(rps.group(1)), "p50": ms(lat["50"]), "p99": ms(lat["99"]),
            "non2xx": float(non2xx.group(1)) if non2xx else 0.0, "mb_s": mb}  # fmt: skip


# ---- the database --------------------------------------------------------------


def database(kind: str, data_dir: Path) -> tuple[str, str | None]:
    """(OBSERVE_DATABASE_URL, admin DSN to drop it afterwards) for a fresh database."""
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{data_dir / 'observe.db'}", None
    url = make_url(os.environ.get("OBSERVE_TEST_DATABASE_URL") or DEFAULT_PG)
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def recreate() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
            await conn.execute(f"CREATE DATABASE {BENCH_DB}")
        finally:
            await conn.close()

    asyncio.run(recreate())
    return url.set(drivername="postgresql+asyncpg", database=BENCH_DB).render_as_string(hide_password=False), admin


def drop(admin: str | None) -> None:
    if admin is None:
        return

    async def run() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        finally:
            await conn.close()

    with contextlib.suppress(Exception):
        asyncio.run(run())


async def write_history(database_url: str, monitor_ids: list[int], org_id: int) -> int:
    """90 days of daily rollups per monitor, a down interval every 7th day on
    every 5th monitor; returns the rows written."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from core.storage import tables as t

    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    rollups: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for n, monitor_id in enumerate(monitor_ids):
        for day in range(DAYS):
            start = midnight - timedelta(days=DAYS - 1 - day)
            checks = 1440
            up = checks - (30 if n % 5 == 0 and day % 7 == 3 else 0)
            rollups.append({"monitor_id": monitor_id, "level": 2, "bucket_start": start, "checks": checks,
                            "up_checks": up, "timed": checks, "sum_ms": 80.0 * checks, "min_ms": 20.0,
                            "max_ms": 900.0, "hist": "{}"})  # fmt: skip
            if up < checks:
                down_at = start + timedelta(hours=10)
                events.append({"monitor_id": monitor_id, "org_id": org_id, "at": down_at, "from_status": "up",
                               "to_status": "down", "reason": "status", "error": None})  # fmt: skip
                events.append({"monitor_id": monitor_id, "org_id": org_id, "at": down_at + timedelta(minutes=30),
                               "from_status": "down", "to_status": "up", "reason": None, "error": None})  # fmt: skip
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            for i in range(0, len(rollups), 1000):
                await conn.execute(insert(t.check_rollups), rollups[i : i + 1000])
            events.sort(key=lambda e: e["at"])
            if events:
                await conn.execute(insert(t.monitor_events), events)
            await conn.execute(
                update(t.monitor_state).where(t.monitor_state.c.monitor_id.in_(monitor_ids)).values(status="up")
            )
    finally:
        await engine.dispose()
    return len(rollups) + len(events)


# ---- the page ------------------------------------------------------------------


async def make_page(base: str, token: str, components: int) -> tuple[str, list[int], int]:
    """Monitors, incidents, a maintenance window and the page; (slug, monitor ids, org id)."""
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as c:
        me = (await call(c, "GET", "/api/v1/me")).json()
        ids: list[int] = []
        for first in range(0, components, 100):
            body = {"monitors": [{"name": f"service-{i}", "type": "http", "url": f"{base}/health/live",
                                  "intervalSec": 3600, "timeoutMs": 5000}
                                 for i in range(first, min(first + 100, components))]}  # fmt: skip
            r = await call(c, "POST", "/api/v1/monitors/bulk", json=body)
            if r.status_code != 201:
                raise SystemExit(f"bulk create: {r.status_code} {r.text[:500]}")
            ids += [int(m["id"]) for m in r.json()["monitors"]]
        now = datetime.now(UTC)
        window = {"name": "Database upgrade", "description": "Read-only for an hour", "monitorIds": ids[::10],
                  "startsAt": (now + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "endsAt": (now + timedelta(days=3, hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "rrule": "FREQ=WEEKLY"}  # fmt: skip
        r = await call(c, "POST", "/api/v1/maintenance-windows", json=window)
        if r.status_code != 201:
            raise SystemExit(f"maintenance window: {r.status_code} {r.text[:500]}")
        for title, monitor in (("Slow checkouts", None), ("Search is degraded", ids[3])):
            incident: dict[str, Any] = {"title": title, "status": "investigating", "message": "We are looking into it."}
            if monitor is not None:
                incident["monitorId"] = monitor
            r = await call(c, "POST", "/api/v1/incidents", json=incident)
            if r.status_code != 201:
                raise SystemExit(f"incident: {r.status_code} {r.text[:500]}")
            for status in ("identified", "monitoring"):
                await call(c, "POST", f"/api/v1/incidents/{r.json()['id']}/updates",
                           json={"status": status, "message": f"Now {status}."})  # fmt: skip
        groups = [{"name": f"Group {g + 1}", "components": [{"monitorId": m, "displayName": f"Component {m}"}
                                                              for m in ids[g * 10 : g * 10 + 10]]}
                  for g in range((len(ids) + 9) // 10)]  # fmt: skip
        slug = f"bench-{os.getpid()}"
        page = {"name": "Bench status", "slug": slug, "historyDays": DAYS, "groups": groups}
        r = await call(c, "POST", "/api/v1/status-pages", json=page)
        if r.status_code != 201:
            raise SystemExit(f"page: {r.status_code} {r.text[:500]}")
        return slug, ids, int(me["org"]["id"]) if "org" in me else int(me["orgId"])


# ---- in-process: a hit next to a dict lookup -----------------------------------


async def hit_cost(database_url: str, slug: str, rounds: int = 200_000) -> dict[str, float]:
    """µs per PublicViews.view() hit, per bare dict lookup, and ms of one build (a miss)."""
    from core.config import Settings
    from core.maintenance.calendar import MaintenanceCalendar
    from core.status_pages.view import PublicViews
    from core.storage.db import Database

    db = Database(database_url)
    calendar = MaintenanceCalendar(db)
    await calendar.refresh()
    views = PublicViews(db, calendar=calendar, settings=Settings.from_env())
    try:
        page = await views.page_by_slug(slug)
        assert page is not None
        started = time.perf_counter()
        await views.view(page)
        miss_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        for _ in range(rounds):
            await views.view(page)
        hit_us = (time.perf_counter() - started) / rounds * 1e6
        started = time.perf_counter()
        for _ in range(rounds):
            await views.page_by_slug(slug)
        lookup_us = (time.perf_counter() - started) / rounds * 1e6
        # Single flight: 200 concurrent misses of one page build it once.
        from core.status_pages import projection

        builds = 0
        build = projection.build

        async def counted(*a: Any, **k: Any) -> Any:
            nonlocal builds
            builds += 1
            return await build(*a, **k)

        projection.build = counted
        views.invalidate_page(page.id)
        got = await asyncio.gather(*(views.view(page) for _ in range(200)))
        projection.build = build
        assert len({id(v) for v in got}) == 1
        plain: dict[int, object] = {page.id: object()}
        started = time.perf_counter()
        for _ in range(rounds):
            plain.get(page.id)
        dict_us = (time.perf_counter() - started) / rounds * 1e6
        return {"miss_ms": miss_ms, "hit_us": hit_us, "slug_us": lookup_us, "dict_us": dict_us, "builds": builds}
    finally:
        await db.close()


def profile(pid: int, url: str, seconds: int, connections: int, out: Path) -> list[tuple[str, float]]:
    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    cmd = pinned(1, [spy, "record", "--pid", str(pid), "--rate", "200", "--nonblocking", "--format", "raw",
                     "--output", str(out), "--duration", str(seconds)])  # fmt: skip
    sampler = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    run_wrk(url, seconds, connections, gzip_ok=True)
    sampler.communicate(timeout=60)
    files: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in out.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        frames = stack.split(";")
        leaves["leaf: " + re.sub(r"\(.*/", "(", frames[-1]) if frames else "?"] += int(count)
        seen = set()
        for frame in stack.split(";"):
            m = re.search(r"\((?:.*/)?((?:site-packages/)?[^/]+/[^/]+\.py)", frame)
            key = m.group(1).replace("site-packages/", "") if m else frame[:60]
            if key not in seen:
                seen.add(key)
                files[key] += int(count)
    top = [*files.most_common(25), *leaves.most_common(15)]
    return [(k, n / max(total, 1)) for k, n in top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--components", type=int, default=50)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--profile", action="store_true", help="sample the server with py-spy in a second run of each")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk")

    with tempfile.TemporaryDirectory(prefix="observe-bench-sp-") as tmp_name:
        tmp = Path(tmp_name)
        data_dir = tmp / "data"
        data_dir.mkdir()
        database_url, admin = database(args.backend, data_dir)
        env = {**os.environ, "OBSERVE_DATA_DIR": str(data_dir), "OBSERVE_DATABASE_URL": database_url, **SERVER_ENV}
        os.environ.update({"OBSERVE_DATA_DIR": str(data_dir), "OBSERVE_DATABASE_URL": database_url})
        token = subprocess.run(
            [PY, "-m", "core.cli", "admin", "create-user", "--email", f"bench-sp-{os.getpid()}@example.com",
             "--print-token"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]  # fmt: skip
        procs: list[subprocess.Popen[bytes]] = []
        log = tmp / "server.log"
        results: dict[str, dict[str, float]] = {}
        hotspots: dict[str, list[tuple[str, float]]] = {}
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
            slug, ids, org_id = asyncio.run(make_page(base, token, args.components))
            rows = asyncio.run(write_history(database_url, ids, org_id))
            json_url, html_url = f"{base}/api/v1/status-pages/public/{slug}", f"{base}/status/{slug}"
            time.sleep(1.5)  # the watcher sees the rows written behind its back and drops the views
            first = httpx.get(json_url, timeout=60)
            if first.status_code != 200:
                raise SystemExit(f"public JSON: {first.status_code} {first.text[:500]}")
            view = first.json()
            comps = [comp for g in view["groups"] for comp in g["components"]]
            assert len(comps) == args.components
            assert all(len(comp["days"]) == DAYS for comp in comps)
            html = httpx.get(html_url, timeout=60)
            sizes = (
                f"JSON {len(first.content):,} bytes ({len(gzip.compress(first.content, 6)):,} gzipped),"
                f" HTML {len(html.content):,} bytes ({len(gzip.compress(html.content, 6)):,} gzipped,"
                f" HTTP {html.status_code})"
            )
            print(f"page: {len(comps)} components x {DAYS} days ({rows} history rows), {sizes}, {args.backend}")
            runs = (
                ("public JSON, gzip", json_url, True),
                ("HTML page, gzip", html_url, True),
                ("public JSON", json_url, False),
                ("HTML page", html_url, False),
            )
            for label, url, gzip_ok in runs:
                run_wrk(url, 2, args.connections, gzip_ok=gzip_ok)  # warm-up
                results[label] = run_wrk(url, args.seconds, args.connections, gzip_ok=gzip_ok)
            if args.profile:
                for label, url in (("public JSON, gzip", json_url), ("HTML page, gzip", html_url)):
                    hotspots[label] = profile(server.pid, url, args.seconds, args.connections, tmp / "profile.txt")
            stop(server)

            port = free_port()
            raw = subprocess.Popen(pinned(0, [*UVICORN, "--port", str(port), "bench.raw_asgi:app"]), cwd=ROOT,
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            procs.append(raw)
            wait_http(f"http://127.0.0.1:{port}/", raw, log)
            run_wrk(f"http://127.0.0.1:{port}/", 2, args.connections)
            results["raw ASGI constant"] = run_wrk(f"http://127.0.0.1:{port}/", args.seconds, args.connections)
            stop(raw)

            body_file = tmp / "body.json"
            body_file.write_bytes(first.content)
            port = free_port()
            raw = subprocess.Popen(pinned(0, [*UVICORN, "--port", str(port), "bench.status_pages:raw_body_app"]),
                                   cwd=ROOT, env={**env, "OBSERVE_BENCH_BODY": str(body_file)},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            procs.append(raw)
            wait_http(f"http://127.0.0.1:{port}/", raw, log)
            run_wrk(f"http://127.0.0.1:{port}/", 2, args.connections)
            results["raw ASGI, same JSON"] = run_wrk(f"http://127.0.0.1:{port}/", args.seconds, args.connections)
            stop(raw)
            costs = asyncio.run(hit_cost(database_url, slug))
        except BaseException:
            with contextlib.suppress(OSError):
                print("--- server log (tail) ---\n" + log.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            drop(admin)

    ceiling = results["raw ASGI constant"]["rps"]
    print(f"\none server process on CPU 0, wrk on CPU 1, {args.connections} connections, {args.seconds} s each")
    print("server env: " + " ".join(f"{k}={v}" for k, v in SERVER_ENV.items()) + "\n")
    print(f"{'variant':22} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'MB/s':>8} {'of ceiling':>11}")
    for label, r in results.items():
        print(f"{label:22} {r['rps']:9.0f} {r['p50']:8.2f} {r['p99']:8.2f} {r['non2xx']:8.0f} {r['mb_s']:8.1f}"
              f" {r['rps'] / ceiling:10.0%}")  # fmt: skip
    print()
    for label in [x for x in results if "ASGI" not in x]:
        ratio = results[label]["rps"] / ceiling
        print(f"{label} / raw ASGI = {ratio:.2f}x   (target >= 0.50: {'met' if ratio >= 0.5 else 'NOT met'})")
    same = results["raw ASGI, same JSON"]["rps"]
    print(
        f"public JSON / raw ASGI answering the same {len(first.content):,} bytes ="
        f" {results['public JSON']['rps'] / same:.2f}x"
        "   (what the body's size alone allows)"
    )
    print(f"\nin process: PublicViews.view() hit {costs['hit_us']:.2f} us,"
          f" page_by_slug() hit {costs['slug_us']:.2f} us, a bare dict.get {costs['dict_us']:.3f} us;"
          f" one build (miss) {costs['miss_ms']:.1f} ms;"
          f" 200 concurrent misses built it {costs['builds']:.0f} time(s)")  # fmt: skip
    for label, spots in hotspots.items():
        print(f"\n{label}: where the server's time goes (py-spy; share of samples passing through a file, then"
              " the innermost frames):")  # fmt: skip
        for name, share in spots:
            print(f"  {share:6.1%}  {name}")
    print(json.dumps({k: round(v["rps"]) for k, v in results.items()}))


if __name__ == "__main__":
    main()
