"""Plans: configured limits shown by GET /me; the one check the monitors and
logs code calls raises PLAN_LIMIT_* at the cap."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.accounts.plans import PlanBook, parse_plans
from core.errors import CODES, ObserveError
from core.storage.db import Database
from tests.conftest import Server, register, set_plan, start_server, stop_server

PLANS = {"starter": {"monitors": 3, "monthlyChecks": 1000, "monthlyLogBytes": 5000}, "pro": {"monitors": 100}}


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("plans"),
        backend="sqlite",
        extra_env={"OBSERVE_PLANS": json.dumps(PLANS), "OBSERVE_DEFAULT_PLAN": "starter"},
    )
    yield srv
    stop_server(srv)


def test_me_shows_the_plan_its_limits_and_usage(planned: Server) -> None:
    persona = register(planned)
    with persona.client() as c:
        me = c.get("/api/v1/me").json()
    assert me["plan"] == {"name": "starter", "limits": {"monitors": 3, "monthlyChecks": 1000, "monthlyLogBytes": 5000}}
    assert me["usage"] == {"monitors": 0, "monthlyChecks": 0, "monthlyLogBytes": 0}


def test_admin_moves_an_org_to_another_plan(planned: Server) -> None:
    persona = register(planned)
    assert set_plan(planned, persona.org_id, "pro").returncode == 0
    assert set_plan(planned, persona.org_id, "gold").returncode == 1
    with persona.client() as c:
        assert c.get("/api/v1/me").json()["plan"]["limits"] == {
            "monitors": 100,
            "monthlyChecks": None,
            "monthlyLogBytes": None,
        }


def test_require_raises_each_plan_limit(planned: Server) -> None:
    persona = register(planned)
    book = PlanBook(parse_plans(json.dumps(PLANS)), "starter")

    async def run() -> list[str]:
        db = Database(f"sqlite+aiosqlite:///{planned.data_dir / 'observe.db'}")
        raised: list[str] = []
        try:
            await book.require(db, persona.org_id, monitors=3, checks=1000, log_bytes=5000)  # exactly at the caps
            await book.add_usage(db, persona.org_id, checks=1000, log_bytes=4000)
            for kwargs in ({"monitors": 4}, {"checks": 1}, {"log_bytes": 1001}):
                try:
                    await book.require(db, persona.org_id, **kwargs)
                except ObserveError as err:
                    raised.append(CODES[err.code].name)
            await book.require(db, persona.org_id, log_bytes=1000)
        finally:
            await db.close()
        return raised

    assert asyncio.run(run()) == ["PLAN_LIMIT_MONITORS", "PLAN_LIMIT_CHECKS", "PLAN_LIMIT_LOG_BYTES"]
    with persona.client() as c:
        assert c.get("/api/v1/me").json()["usage"] == {"monitors": 0, "monthlyChecks": 1000, "monthlyLogBytes": 4000}
    assert CODES[next(n for n, i in CODES.items() if i.name == "PLAN_LIMIT_CHECKS")].http_status == 402


def test_an_unknown_default_plan_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="default plan"):
        PlanBook(parse_plans(None), "gold")
