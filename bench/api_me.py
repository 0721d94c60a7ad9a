"""Benchmark: authenticated GET /api/v1/me four ways, in one run.

1. observe's generated REST gateway        (wrk, HTTP/1.1)
2. observe's gRPC MeService/GetMe          (h2load, h2c)
3. a bare FastAPI handler, same DB reads   (wrk)
4. a raw ASGI app returning a constant     (wrk) — the machine's HTTP ceiling
5. a bare grpc.aio servicer, a constant    (h2load) — the machine's gRPC ceiling

Each server is one process pinned to CPU 0 (uvicorn with uvloop + httptools);
the load generator runs on CPU 1. Prints req/s and p50/p99 latency, and the
ratios the foundation issue asks for. Needs wrk and h2load
(apt-get install wrk nghttp2-client).

    python -m bench.api_me [--seconds 10] [--connections 32] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cpu: int, cmd: list[str]) -> list[str]:
    """``cmd`` bound to one CPU, so server and load generator do not trade places."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(cpu), *cmd]
    return cmd


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, token: str, seconds: int, connections: int) -> dict[str, float]:
    cmd = pinned(
        1, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", f"Authorization: Bearer {token}", url]
    )
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"\s+(50|99)%\s+([\d.]+\w+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} non-2xx responses\n{out}")

    def parse(v: str) -> float:
        m = re.fullmatch(r"([\d.]+)(us|ms|s)", v)
        assert m, v
        return _ms(m.group(1), m.group(2))

    return {"rps": rps, "p50": parse(lat["50"]), "p99": parse(lat["99"])}


def run_h2load(url: str, token: str, seconds: int, connections: int, tmp: Path) -> dict[str, float]:
    body = tmp / "getme.bin"
    body.write_bytes(b"\x00\x00\x00\x00\x00")  # gRPC frame: uncompressed, length 0 (empty GetMeRequest)
    log = tmp / "h2load.log"
    cmd = pinned(
        1,
        [
            "h2load",
            f"-D{seconds}",
            f"-c{connections}",
            "-m1",
            "-t1",
            f"-d{body}",
            "-H", "content-type: application/grpc",
            "-H", "te: trailers",
            "-H", f"authorization: Bearer {token}",
            f"--log-file={log}",
            url,
        ],
    )  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    # HTTP/2 status only: grpc-status sits in trailers, so check_grpc() proves
    # beforehand that the same call succeeds.
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    failed = re.search(r"requests: .* (\d+) failed", out)
    if not m or not failed or failed.group(1) != "0":
        raise RuntimeError(out)
    status = re.search(r"status codes: (\d+) 2xx", out)
    times = [int(line.split()[2]) / 1000.0 for line in log.read_text().splitlines() if line.strip()]
    times.sort()
    q = statistics.quantiles(times, n=100)
    return {"rps": float(m.group(1)), "p50": q[49], "p99": q[98], "ok": float(status.group(1)) if status else 0}


def prepare(data_dir: Path, database_url: str | None) -> tuple[str, dict[str, str]]:
    env = {**os.environ, "OBSERVE_DATA_DIR": str(data_dir)}
    if database_url:
        env["OBSERVE_DATABASE_URL"] = database_url
    token = subprocess.run(
        [PY, "-m", "core.cli", "admin", "create-user", "--email", f"bench-{os.getpid()}@example.com", "--print-token"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return token, env


def check_grpc(target: str, token: str) -> None:
    import grpc
    from observe.v1 import accounts_pb2, accounts_pb2_grpc

    async def call() -> None:
        async with grpc.aio.insecure_channel(target) as ch:
            stub = accounts_pb2_grpc.MeServiceStub(ch)
            md = [("authorization", f"Bearer {token}")]
            await stub.GetMe(accounts_pb2.GetMeRequest(), metadata=md, wait_for_ready=True, timeout=30)

    asyncio.run(call())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--database-url", help="default: SQLite in a temporary data dir")
    args = parser.parse_args()
    for tool in ("wrk", "h2load"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install wrk nghttp2-client")

    with tempfile.TemporaryDirectory(prefix="observe-bench-") as tmp_name:
        tmp = Path(tmp_name)
        token, env = prepare(tmp / "data", args.database_url)
        db_url = args.database_url or f"sqlite+aiosqlite:///{tmp / 'data' / 'observe.db'}"
        results: dict[str, dict[str, float]] = {}
        procs: list[subprocess.Popen[bytes]] = []

        def start(cmd: list[str], extra_env: dict[str, str]) -> subprocess.Popen[bytes]:
            p = subprocess.Popen(
                pinned(0, cmd), cwd=ROOT, env={**env, **extra_env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            procs.append(p)
            return p

        def stop(p: subprocess.Popen[bytes]) -> None:
            p.terminate()
            p.wait(timeout=15)

        try:
            http_port, grpc_port = free_port(), free_port()
            observe = start(
                [PY, "-m", "gateway.cli", "serve"],
                {
                    "OBSERVE_HTTP_PORT": str(http_port),
                    "OBSERVE_GRPC_PORT": str(grpc_port),
                    "OBSERVE_LOG_LEVEL": "warning",
                    # The limiter still counts every call; it just never refuses here.
                    "OBSERVE_RATE_LIMIT_TOKEN": "100000000/minute",
                },
            )
            base = f"http://127.0.0.1:{http_port}"
            wait_http(base + "/health/live")
            assert httpx.get(base + "/api/v1/me", headers={"authorization": f"Bearer {token}"}).status_code == 200
            check_grpc(f"127.0.0.1:{grpc_port}", token)
            run_wrk(base + "/api/v1/me", token, 2, args.connections)  # warm-up
            results["observe REST gateway"] = run_wrk(base + "/api/v1/me", token, args.seconds, args.connections)
            run_h2load(f"http://127.0.0.1:{grpc_port}/observe.v1.MeService/GetMe", token, 2, args.connections, tmp)
            results["observe gRPC"] = run_h2load(
                f"http://127.0.0.1:{grpc_port}/observe.v1.MeService/GetMe", token, args.seconds, args.connections, tmp
            )
            stop(observe)

            uvicorn = [
                PY,
                "-m",
                "uvicorn",
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
            ]
            for label, target in (
                ("bare FastAPI + same DB reads", "bench.fastapi_me:app"),
                ("raw ASGI constant", "bench.raw_asgi:app"),
            ):
                port = free_port()
                proc = start([*uvicorn, "--port", str(port), target], {"BENCH_DATABASE_URL": db_url})
                wait_http(f"http://127.0.0.1:{port}/api/v1/me")
                run_wrk(f"http://127.0.0.1:{port}/api/v1/me", token, 2, args.connections)
                results[label] = run_wrk(f"http://127.0.0.1:{port}/api/v1/me", token, args.seconds, args.connections)
                stop(proc)

            port = free_port()
            proc = start([PY, "-m", "bench.raw_grpc", str(port)], {})
            check_grpc(f"127.0.0.1:{port}", token)
            url = f"http://127.0.0.1:{port}/observe.v1.MeService/GetMe"
            run_h2load(url, token, 2, args.connections, tmp)
            results["raw grpc.aio constant"] = run_h2load(url, token, args.seconds, args.connections, tmp)
            stop(proc)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()

    backend = "PostgreSQL" if args.database_url else "SQLite"
    print(f"\nGET /api/v1/me, authenticated, {backend}, {args.connections} connections, {args.seconds}s each")
    print("one server process on CPU 0, load generator on CPU 1\n")
    print(f"{'variant':32} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9}")
    for label, r in results.items():
        print(f"{label:32} {r['rps']:10.0f} {r['p50']:9.2f} {r['p99']:9.2f}")
    rest, grpc_, fast, raw, raw_grpc = (results[k]["rps"] for k in results)
    print()
    print(f"gateway / bare FastAPI   = {rest / fast:.2f}x   (target > 1)")
    print(f"gRPC / REST gateway      = {grpc_ / rest:.2f}x   (target within 0.5x-2x)")
    print(f"gateway / raw ASGI       = {rest / raw:.2f}x   (share of the HTTP stack's ceiling)")
    print(f"bare FastAPI / raw ASGI  = {fast / raw:.2f}x")
    print(f"gRPC / raw grpc.aio      = {grpc_ / raw_grpc:.2f}x   (share of the gRPC stack's ceiling)")


if __name__ == "__main__":
    main()
