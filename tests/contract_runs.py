"""The schemathesis runs of tests/test_contract_tools.py, started with their session server.

They take minutes of one core while most other tests wait on the server: each backend's server starts them
(side by side, in threads) as soon as it is ready, the other tests go on, and the contract tests, ordered
last in their backend's group (tests/conftest.py), collect the results. They start only when a contract test
is selected. What each run pins, and why: tests/test_contract_tools.py.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, Persona, Server, register

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# Enough for every operation's rules to be met and broken; the suite's 10-minute budget sets the ceiling.
MAX_EXAMPLES = 10
SCHEMATHESIS_CONFIG = """
seed = 20261129
color = false
continue-on-failure = true
[generation]
mode = "all"
max-examples = {max_examples}
allow-x00 = false
database = "none"
[cache]
enabled = false
[phases.stateful]
max-steps = 40
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
[parameters]
"query.cursor" = ""
[[operations]]
include-path = "/api/v1/monitors/{{id}}/timeline"
parameters = {{ "query.from" = "2026-01-01T00:00:00Z", "query.to" = "2026-01-02T00:00:00Z" }}
[[operations]]
include-method = "PATCH"
include-path-regex = "^/api/v1/monitors/[^/]+$"
[operations.checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
[[operations]]
include-method = "GET"
include-path = "/api/v1/incidents"
parameters = {{ "query.from" = "2026-01-01T00:00:00Z", "query.to" = "2026-01-02T00:00:00Z" }}
[[operations]]
include-method = "POST"
include-path = "/api/v1/incidents"
[operations.checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
[[operations]]
include-path = "/api/v1/monitors/{{id}}/test-alert"
request-timeout = 25
[operations.checks]
max_response_time = 25
[[operations]]
include-path-regex = "^/api/v1/maintenance-windows"
include-method-regex = "^(POST|PATCH)$"
[operations.checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

# The live tail is a stream that never ends (Server-Sent Events): a client
# that waits for the whole body waits forever. tests/test_log_tail.py drives it.
[[operations]]
include-path = "/api/v1/logs/tail"
enabled = false

# What JSON Schema cannot say: a log query has a grammar (q, query), and a
# record's time must fall in the kept window (older than retention or a day
# ahead is refused, record by record: all refused is a 400).
[[operations]]
include-path-regex = "^/api/v1/(logs|logs/search|otlp/v1/logs|log-alerts|log-alerts/[^/]+)$"
[operations.checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
"""

FUZZ_CONFIG = """
seed = 20261130
color = false
continue-on-failure = true
[generation]
mode = "negative"
max-examples = 8
allow-x00 = true
database = "none"
[cache]
enabled = false
[[operations]]
include-path = "/api/v1/monitors/{id}/test-alert"
request-timeout = 25

# The live tail is a stream that never ends (Server-Sent Events): a client
# that waits for the whole body waits forever. tests/test_log_tail.py drives it.
[[operations]]
include-path = "/api/v1/logs/tail"
enabled = false
"""


@dataclass
class Outcome:
    """One finished run: the user it ran as, its report, its exit code, and the monitors it created and left
    (which the thread deletes right away: the session server checks them)."""

    user: Persona
    output: str
    returncode: int
    monitors_created: int = 0
    monitors_left: int = 0


def section(output: str, start: str, *ends: str) -> str:
    """The part of schemathesis' report under heading ``start``, up to the next of ``ends``."""
    heading = r"={3,} %s ={3,}"
    stop = "|".join(heading % e for e in ends) if ends else r"(?!)"
    match = re.search(rf"{heading % start}(.*?)(?:{stop}|\Z)", output, re.S)
    return match.group(1).strip() if match else output[-6000:]


def _pages(client: Any, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = ""
    while True:
        r = client.get(path, params={"limit": 1000, **params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        items += r.json()[key]
        cursor = r.json().get("nextCursor", "")
        if not cursor:
            return items


def _ids_in(value: Any) -> list[Any]:
    """The ``ids`` list somewhere in an audit entry's meta (bulk calls name the monitors there)."""
    if isinstance(value, dict):
        ids = value.get("ids")
        if isinstance(ids, dict):  # a diff: {"from": null, "to": [...]}
            ids = ids.get("to")
        if isinstance(ids, list):
            return list(ids)
        return next((found for v in value.values() if (found := _ids_in(v))), [])
    if isinstance(value, list):
        return next((found for v in value if (found := _ids_in(v))), [])
    return []


class ContractRuns:
    """``runs``: (name, config, checks), each run against ``server`` in a thread of its own."""

    def __init__(self, server: Server, workdir: Path, runs: list[tuple[str, str, str]]) -> None:
        self.server = server
        self.workdir = workdir
        self.runs = runs
        self.results: dict[str, Outcome | BaseException] = {}
        self.done = {name: threading.Event() for name, _, _ in runs}
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self.stopping = False
        # Side by side: the suite's other tests mostly wait on the server, so two cores have room.
        self.threads = [
            threading.Thread(target=self._run_one, args=run, name=f"schemathesis-{run[0]}", daemon=True) for run in runs
        ]
        for thread in self.threads:
            thread.start()

    def result(self, name: str, timeout: float = 600) -> Outcome:
        if name not in self.done:
            raise LookupError(f"no {name} run was started for the {self.server.backend} server")
        if not self.done[name].wait(timeout):
            raise TimeoutError(f"schemathesis {name} run still going after {timeout} s")
        result = self.results[name]
        if isinstance(result, BaseException):
            raise result
        return result

    def stop(self) -> None:
        self.stopping = True
        for process in list(self.processes.values()):
            if process.poll() is None:
                process.kill()
        for thread in self.threads:
            thread.join(timeout=30)

    def _run_one(self, name: str, config: str, checks: str) -> None:
        try:
            outcome = self._run(name, config, checks)
            # Its monitors go at once: the session server would check them for the rest of its group (the
            # fuzz's "malformed" bulk creates can leave a couple of hundred, checked every few seconds). The
            # full run's counts are asserted; for the fuzz, tidying is a courtesy that must not fail it.
            if name == "all":
                self._tidy(outcome)
            else:
                with contextlib.suppress(Exception):
                    self._tidy(outcome)
            self.results[name] = outcome
        except BaseException as exc:  # handed to the test that collects it
            self.results[name] = exc
        self.done[name].set()

    def _run(self, name: str, config_text: str, checks: str) -> Outcome:
        workdir = self.workdir / name
        workdir.mkdir(parents=True, exist_ok=True)
        user = register(self.server)
        config = workdir / "schemathesis.toml"
        config.write_text(config_text)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "SCHEMATHESIS_HOOKS": "tests.contract_hooks",
            "OBSERVE_CONTRACT_BASE_URL": self.server.base_url,
            "OBSERVE_CONTRACT_SESSION": user.session,
        }
        args = [str(SCHEMATHESIS), "--config-file", str(config), "run", f"{self.server.base_url}/openapi.json",
                "--url", self.server.base_url, "--checks", checks, "--workers", "1"]  # fmt: skip
        if self.stopping:
            raise RuntimeError("the session ended first")
        process = self.processes[name] = subprocess.Popen(
            args, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            output, _ = process.communicate(timeout=420)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        (workdir / "schemathesis.out").write_text(output)
        return Outcome(user, output, process.returncode)

    def _tidy(self, outcome: Outcome) -> None:
        """Counts the monitors the run created and left, and deletes those left."""
        with outcome.user.client(outcome.user.session) as c:  # the run may have revoked the persona's PAT
            counter = c.post("/api/v1/me/tokens", json={"name": "count"})
            assert counter.status_code == 201, counter.text
        with outcome.user.client(counter.json()["token"]) as c:
            ids = [m["id"] for m in _pages(c, "/api/v1/monitors", "monitors")]
            outcome.monitors_left = len(ids)
            for start in range(0, len(ids), 100):
                c.request("DELETE", "/api/v1/monitors/bulk", json={"ids": ids[start : start + 100]})
            created = len(_pages(c, "/api/v1/audit-logs", "entries", action="CREATE_MONITOR"))
            created += sum(
                len(_ids_in(e["meta"]))
                for e in _pages(c, "/api/v1/audit-logs", "entries", action="BULK_CREATE_MONITORS")
            )
            outcome.monitors_created = created


def start(server: Server, workdir: Path, *, full: bool) -> ContractRuns | None:
    """The fuzz, and with ``full`` the full run, against ``server``; None without schemathesis."""
    if not SCHEMATHESIS.exists():
        return None
    runs = [("fuzz", FUZZ_CONFIG, "not_a_server_error")]
    if full:
        runs.append(("all", SCHEMATHESIS_CONFIG.format(max_examples=MAX_EXAMPLES), "all"))
    return ContractRuns(server, workdir, runs)
