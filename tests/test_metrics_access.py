"""/metrics: process and API series for anyone who can reach it; the series
that name an org's monitors only with `Authorization: Bearer
<OBSERVE_METRICS_TOKEN>`, and never when that setting is unset
(CONTRACT.md, input hygiene)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    CHECKING_ENV,
    METRICS_TOKEN,
    Persona,
    Server,
    register,
    start_server,
    stop_server,
)
from tests.targets import Target, http_target


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    with http_target() as tgt:
        yield tgt


def watch(persona: Persona, target: Target) -> str:
    """Creates a monitor with a name nobody else uses; returns the name."""
    name = f"secret-shop-{uuid.uuid4().hex[:8]}"
    body = {"name": name, "type": "http", "url": f"{target.url}/m", "intervalSec": 30, "tags": ["private-tag"]}
    with persona.client() as c:
        r = c.post("/api/v1/monitors", json=body)
    assert r.status_code == 201, r.text
    return name


def scrape(server: Server, authorization: str | None = None) -> str:
    headers = {"authorization": authorization} if authorization is not None else {}
    r = httpx.get(f"{server.base_url}/metrics", headers=headers)
    assert r.status_code == 200
    return r.text


def scrape_until(server: Server, name: str) -> str:
    """The full scrape once the scheduler has loaded the monitor ``name``."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = scrape(server, f"Bearer {METRICS_TOKEN}")
        if name in text:
            return text
        time.sleep(0.1)
    raise AssertionError(f"{name} never showed on /metrics with the token")


def assert_public_only(text: str, name: str) -> None:
    assert "observe_monitor_" not in text
    assert name not in text
    assert "private-tag" not in text
    assert "monitor_id=" not in text
    assert "observe_http_requests_total" in text  # API series for anyone
    assert "observe_scheduler_monitors" in text  # a count names no monitor
    assert "observe_checks_total" in text


def test_monitor_series_only_with_the_token(owner: Persona, server: Server, target: Target) -> None:
    name = watch(owner, target)
    full = scrape_until(server, name)
    assert f'monitor_name="{name}"' in full
    assert "observe_monitor_status{" in full
    assert 'monitor_tags="private-tag"' in full
    for authorization in (
        None,
        "",
        "Bearer",
        "Bearer wrong-token",
        f"Bearer {METRICS_TOKEN}x",
        f"Bearer {METRICS_TOKEN[:-1]}",
        f"Basic {METRICS_TOKEN}",
        f"Bearer {owner.pat}",  # an API token is not the metrics token
    ):
        assert_public_only(scrape(server, authorization), name)


@pytest.fixture(scope="module")
def tokenless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A checking server without OBSERVE_METRICS_TOKEN (SQLite: a second
    scheduler on the shared PostgreSQL database would take the session
    server's monitors)."""
    env = {k: v for k, v in CHECKING_ENV.items() if k != "OBSERVE_METRICS_TOKEN"}
    srv = start_server(Path(tmp_path_factory.mktemp("tokenless")), backend="sqlite", extra_env=env, role="all")
    yield srv
    stop_server(srv)


@pytest.mark.slow
def test_without_the_setting_no_one_gets_monitor_series(tokenless: Server, target: Target) -> None:
    name = watch(register(tokenless), target)
    deadline = time.monotonic() + 20
    while "observe_scheduler_monitors 1" not in scrape(tokenless):
        assert time.monotonic() < deadline, "the scheduler never loaded the monitor"
        time.sleep(0.1)
    for authorization in (None, "", "Bearer", "Bearer None", f"Bearer {METRICS_TOKEN}"):
        assert_public_only(scrape(tokenless, authorization), name)
