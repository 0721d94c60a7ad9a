"""Benchmark: what the core pipeline costs per mutating call.

The same CreateToken call, in one process on one SQLite database:
  - handler only: the domain handler with the caller already known
  - pipeline: authentication, rate limit, scope, role, daily cap, audit
  - pipeline + Idempotency-Key: the above plus claim and stored reply

Prints microseconds per call and the ratios to the handler alone.

    python -m bench.pipeline_overhead [--calls 500]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import uvloop
from observe.v1 import tokens_pb2

from core.accounts.admin import create_owner
from core.app import build_core
from core.config import Settings
from core.rpc.context import CallContext

LIMITS = {"TOKEN": "1000000/minute", "AUTH_IP": "1000000/minute", "PUBLIC_IP": "1000000/minute"}


async def run(calls: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="observe-pipeline-") as tmp:
        core = build_core(Settings(data_dir=Path(tmp), rate_limits=LIMITS))
        from core.storage.migrate import migrate

        await migrate(core.db)
        owner = await create_owner(
            core.db, email="bench@example.com", name="", org_name="", password=None, mint_token=True
        )
        token = owner["token"]
        method = core.methods["/observe.v1.TokenService/CreateToken"]
        assert method.handler is not None
        probe = CallContext(transport="rest", authorization=f"Bearer {token}")
        await core.pipeline.admit(method, tokens_pb2.CreateTokenRequest(name="x"), probe)
        principal = probe.principal

        async def handler_only(i: int) -> None:
            ctx = CallContext(transport="rest", principal=principal)
            assert method.handler is not None
            await method.handler(tokens_pb2.CreateTokenRequest(name=f"h{i}"), ctx)

        async def pipeline(i: int) -> None:
            ctx = CallContext(transport="rest", authorization=f"Bearer {token}", ip="127.0.0.1", user_agent="bench")
            await core.pipeline.unary(method, tokens_pb2.CreateTokenRequest(name=f"p{i}"), ctx)

        async def pipeline_idempotent(i: int) -> None:
            ctx = CallContext(
                transport="rest",
                authorization=f"Bearer {token}",
                ip="127.0.0.1",
                user_agent="bench",
                idempotency_key=str(uuid.uuid4()),
            )
            await core.pipeline.unary(method, tokens_pb2.CreateTokenRequest(name=f"i{i}"), ctx)

        results: dict[str, float] = {}
        for label, fn in (
            ("handler only", handler_only),
            ("pipeline", pipeline),
            ("pipeline + Idempotency-Key", pipeline_idempotent),
        ):
            for i in range(20):  # warm-up
                await fn(-i - 1)
            started = time.perf_counter()
            for i in range(calls):
                await fn(i)
            results[label] = (time.perf_counter() - started) / calls * 1e6
        await core.close()
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    results = uvloop.run(run(args.calls))
    base = results["handler only"]
    print(f"\nCreateToken, {args.calls} sequential calls each, SQLite, one process\n")
    print(f"{'variant':30} {'us/call':>9} {'ratio':>7}")
    for label, us in results.items():
        print(f"{label:30} {us:9.0f} {us / base:6.2f}x")


if __name__ == "__main__":
    main()
