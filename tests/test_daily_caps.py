"""Per-PAT dailyMutationLimit: atomic under concurrency, 429 with Retry-After."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx

from tests.conftest import Persona, Server


def test_fifty_concurrent_mutations_against_a_cap_of_ten(owner: Persona) -> None:
    capped = owner.mint(name="agent", scopes=["tokens:*"], dailyMutationLimit=10)

    def mint(i: int) -> httpx.Response:
        with owner.client(capped["token"]) as c:
            return c.post("/api/v1/me/tokens", json={"name": f"child-{i}", "scopes": ["tokens:read"]})

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(mint, range(50)))
    statuses = [r.status_code for r in results]
    assert statuses.count(201) == 10, statuses
    assert statuses.count(429) == 40, statuses
    refused = next(r for r in results if r.status_code == 429)
    assert refused.json()["code"] == "PAT_DAILY_LIMIT_EXCEEDED"
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert abs(int(refused.headers["retry-after"]) - (midnight - now).total_seconds()) < 30
    with owner.client() as c:
        listed = next(t for t in c.get("/api/v1/me/tokens").json()["tokens"] if t["id"] == capped["id"])
    assert listed["dailyMutationLimit"] == 10
    assert listed["dailyMutationUsedToday"] == 10


def test_reads_do_not_count_and_uncapped_tokens_are_counted(owner: Persona) -> None:
    capped = owner.mint(name="reader", scopes=["tokens:*"], dailyMutationLimit=1)
    with owner.client(capped["token"]) as c:
        for _ in range(3):
            assert c.get("/api/v1/me/tokens").status_code == 200
        assert c.post("/api/v1/me/tokens", json={"name": "one", "scopes": ["tokens:read"]}).status_code == 201
        assert c.post("/api/v1/me/tokens", json={"name": "two", "scopes": ["tokens:read"]}).status_code == 429
    with owner.client() as c:
        c.post("/api/v1/me/tokens", json={"name": "uncapped"})
        mine = next(t for t in c.get("/api/v1/me/tokens").json()["tokens"] if t["id"] == owner.pat_id)
    assert mine["dailyMutationLimit"] is None
    assert mine["dailyMutationUsedToday"] == 2  # minting "reader" and "uncapped"


def test_log_bytes_are_counted_all_or_nothing(server: Server, owner: Persona) -> None:
    import asyncio

    from core.errors import CODES, ObserveError
    from core.rpc.auth import Authenticator
    from core.rpc.caps import consume_log_bytes
    from core.rpc.context import CallContext
    from core.storage.db import Database

    capped = owner.mint(name="shipper", scopes=["logs:write"], dailyLogBytesLimit=1000)

    async def run() -> list[str]:
        db = Database(server.database_url)
        refused: list[str] = []
        try:
            ctx = CallContext(transport="rest", authorization=f"Bearer {capped['token']}")
            principal = await Authenticator(db=db).authenticate(ctx)
            await consume_log_bytes(db, principal, 600)
            for size in (500, 401, 400, 1):  # 400 fits exactly; the others would pass the cap
                try:
                    await consume_log_bytes(db, principal, size)
                except ObserveError as err:
                    refused.append(f"{size}:{CODES[err.code].name}")
        finally:
            await db.close()
        return refused

    assert asyncio.run(run()) == [
        "500:PAT_DAILY_LIMIT_EXCEEDED",
        "401:PAT_DAILY_LIMIT_EXCEEDED",
        "1:PAT_DAILY_LIMIT_EXCEEDED",
    ]
    with owner.client() as c:
        listed = next(t for t in c.get("/api/v1/me/tokens").json()["tokens"] if t["id"] == capped["id"])
    assert (listed["dailyLogBytesLimit"], listed["dailyLogBytesUsedToday"]) == (1000, 1000)
