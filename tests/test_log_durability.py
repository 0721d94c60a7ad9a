"""A 2xx from log ingest means committed: a server SIGKILLed in the middle
of a sustained ingest has, after a restart on the same data, every record it
acknowledged. Each backend gets a server of its own (killed here)."""

from __future__ import annotations

import functools
import itertools
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.background import BackgroundRun
from tests.conftest import BACKENDS, PG_URL, Persona, database_beside, register, start_server, stop_server
from tests.polling import wait_for

SENDERS = 8
BATCH = 200


@pytest.fixture(scope="session")
def kills(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, BackgroundRun]]:
    """Each backend's run in a thread beside the suite (it checks data, not timing): started first, checked
    last. On PostgreSQL in a database of its own, so the session server's reset cannot meet it."""
    runs = {
        backend: BackgroundRun(f"log-kill-{backend}", functools.partial(kill_during_ingest, backend, tmp_path_factory))
        for backend in BACKENDS
    }
    for run in runs.values():
        run.start()
    yield runs
    for run in runs.values():
        run.join(timeout=120)


@pytest.mark.slow
@pytest.mark.background_start
def test_the_kill_runs_start(kills: dict[str, BackgroundRun]) -> None:
    assert set(kills) == set(BACKENDS)


def send(persona: Persona, sender: int, acked: list[str], stop: threading.Event) -> None:
    """Posts batches until the server goes away; keeps the tag of each batch answered 202."""
    with persona.client() as client:
        for n in itertools.count():
            if stop.is_set():
                return
            tag = f"s{sender}b{n}"
            body = [{"message": f"durable {tag} {k}", "attributes": {"batch": tag, "k": k}} for k in range(BATCH)]
            try:
                r = client.post(
                    "/api/v1/logs", content=orjson.dumps(body), headers={"content-type": "application/json"}
                )
            except httpx.HTTPError:
                return  # killed
            if r.status_code == 202:
                assert r.json()["accepted"] == BATCH, r.text
                acked.append(tag)


def stored_batches(persona: Persona) -> dict[str, list[int]]:
    """Each batch tag's records (their ``k``), as search returns them (every page of the last hour)."""
    batches: dict[str, list[int]] = {}
    cursor = ""
    with persona.client() as client:
        while True:
            params: dict[str, str | int] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            r = client.get("/api/v1/logs/search", params=params)
            assert r.status_code == 200, r.text
            for record in r.json()["records"]:
                batches.setdefault(record["attributes"]["batch"], []).append(record["attributes"]["k"])
            cursor = r.json()["nextCursor"]
            if not cursor:
                return batches


@pytest.mark.slow
@pytest.mark.background_finish
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_during_sustained_ingest_loses_no_acknowledged_record(
    backend: str, kills: dict[str, BackgroundRun]
) -> None:
    """8 clients post 200-record batches; the server is SIGKILLed once 100
    batches are acknowledged. After restart every acknowledged batch is
    found whole, and no batch is found in part."""
    kills[backend].result(timeout=180)


def kill_during_ingest(backend: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp: Path = tmp_path_factory.mktemp(f"log-kill-{backend}")
    database_url = database_beside(PG_URL, "_logkill") if backend == "postgresql" and PG_URL else None
    first = start_server(tmp, backend=backend, database_url=database_url)
    stop = threading.Event()
    acked: list[str] = []
    senders: list[threading.Thread] = []
    try:
        persona = register(first)
        senders = [threading.Thread(target=send, args=(persona, s, acked, stop)) for s in range(SENDERS)]
        for thread in senders:
            thread.start()
        wait_for(lambda: len(acked) >= 100, "a sustained ingest", timeout=30)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
    finally:
        stop.set()
        for thread in senders:
            thread.join()
        stop_server(first)
    answered = set(acked)
    # The same data directory (SQLite files, server key) under new ports.
    again = start_server(
        tmp / "after", backend=backend, database_url=database_url, extra_env={"OBSERVE_DATA_DIR": str(tmp / "data")}
    )
    try:
        persona.server = again
        stored = stored_batches(persona)
    finally:
        stop_server(again)
    missing = sorted(answered - stored.keys())
    assert not missing, f"{len(missing)} of {len(answered)} acknowledged batches are lost: {missing[:10]}"
    # Each batch whole, even when group commit joined it with others. (Not checked: the order of a
    # request's records, which share a millisecond; their ids' sequence part may wrap between them.)
    wrong = {tag: sorted(ks) for tag, ks in stored.items() if sorted(ks) != list(range(BATCH))}
    assert not wrong, f"batches stored in part: {wrong}"
    assert len(stored) >= len(answered)  # some unanswered ones may have been committed before the kill
    return f"{len(answered)} batches acknowledged, {len(stored)} stored"
