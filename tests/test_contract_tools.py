"""Outside tools against the live server, as a new user would run them.

- schemathesis (``--checks all``, positive and negative data, every phase)
  against every operation of /openapi.json: any finding fails the test. Its
  positive data creates monitors, tokens and invites; the test reports how
  many monitors exist afterwards and how many were created.
- openapi-typescript on the served /openapi.json, then ``tsc --strict`` on the
  API page's walkthrough (must compile without null checks) and on bodies
  that must not compile (``{}`` as a monitor, ``intervalSec: 45``, an
  unknown scope).

What the run pins, and why (everything else is generated from the document):
- ``cursor`` is empty: cursors are opaque, and one the server did not issue
  is a 400 by contract.
- A generated past ``expiresAt`` for a new token moves into the future
  (tests/contract_hooks.py): "in the future" is a rule JSON Schema cannot state.
- The timeline's ``from``/``to`` are one fixed day: an open range reaches
  "now", and a range too long to bucket is a 400 by contract.
- No U+0000 in strings: the contract refuses it on every route (input
  hygiene), which the document says once rather than on every string.
- A monitor patch that fits its schema may still be refused (400): whether
  it holds depends on the stored monitor (a field for another type, a
  timeout above the stored interval), which no schema of the patch can know.
  Negative patches are still checked; so is every other operation.
- The incidents list gets a fixed ``from`` before its ``to``; a new incident's
  ``monitorId`` and a maintenance window's ``monitorIds`` must name the org's
  monitors, a window must end after it starts (a rule between two fields,
  which JSON Schema cannot state) and its ``rrule``/``timezone`` must parse:
  those creates and patches may be refused (400) while fitting their schema.
- A test alert may take its channels' 10 s timeout and then answer (a
  Telegram channel cannot reach api.telegram.org from here): its requests
  may take 25 s rather than schemathesis' default 10.
- Refusing bad data with 413 PAYLOAD_TOO_LARGE (a body over the route's
  limit, x-observe-rule.bodyLimitBytes) counts as refusing it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PG_URL, Server
from tests.contract_runs import ContractRuns, section

pytestmark = pytest.mark.slow


@pytest.mark.background_start
@pytest.mark.skipif(not PG_URL, reason="needs OBSERVE_TEST_DATABASE_URL (CI sets it)")
def test_the_postgresql_contract_runs_start(postgresql_contract_runs: Any) -> None:
    """Only starts them (tests/conftest.py postgresql_contract_runs); the tests below read the outcomes."""


def _runs(server: Server, request: pytest.FixtureRequest) -> ContractRuns:
    if server.backend == "postgresql":
        runs = request.getfixturevalue("postgresql_contract_runs")
    else:
        runs = server.contract_runs
    if runs is None:
        pytest.skip(f"schemathesis is not installed next to {sys.executable} (make setup installs it)")
    assert isinstance(runs, ContractRuns)
    return runs


def test_schemathesis_finds_nothing(server: Server, record_property: Any, request: pytest.FixtureRequest) -> None:
    if server.backend == "sqlite" and PG_URL:
        # The rules it checks are the pipeline's, the same on every backend;
        # one run on the production database keeps the suite in its budget.
        # The fuzz below still runs on both.
        pytest.skip("runs on PostgreSQL when the suite has it (CI); SQLite is fuzzed below")
    outcome = _runs(server, request).result("all")
    summary = section(outcome.output, "SUMMARY")
    record_property("monitors_created", outcome.monitors_created)
    record_property("monitors_left", outcome.monitors_left)
    print(f"\nschemathesis: {outcome.monitors_created} monitors created, {outcome.monitors_left} left\n{summary}")
    assert outcome.returncode == 0, section(outcome.output, "FAILURES", "WARNINGS", "SUMMARY") + "\n\n" + summary
    assert outcome.monitors_created > 0, summary


def test_no_malformed_input_gets_a_server_error(server: Server, request: pytest.FixtureRequest) -> None:
    """Every route fed malformed values (NUL characters, huge numbers, wrong
    types, overlong strings, bad times and cursors): never a 5xx."""
    outcome = _runs(server, request).result("fuzz")
    summary = section(outcome.output, "SUMMARY")
    print(f"\nschemathesis, malformed input only:\n{summary}")
    assert outcome.returncode == 0, section(outcome.output, "FAILURES", "WARNINGS", "SUMMARY") + "\n\n" + summary


WALKTHROUGH_TS = """\
// The API page's walkthrough, typed with the generated client types: it
// compiles under --strict without a null check on any reply field.
import type { components, paths } from "./api";

type Schemas = components["schemas"];
type Op<P extends keyof paths, M extends keyof paths[P]> = paths[P][M];
type CreateOp = Op<"/api/v1/monitors", "post">;
type CreateBody = CreateOp["requestBody"]["content"]["application/json"];
type CreateReply = CreateOp["responses"][201]["content"]["application/json"];
type ListReply = Op<"/api/v1/monitors", "get">["responses"][200]["content"]["application/json"];
type GetReply = Op<"/api/v1/monitors/{id}", "get">["responses"][200]["content"]["application/json"];
type PatchBody = NonNullable<Op<"/api/v1/monitors/{id}", "patch">["requestBody"]>["content"]["application/json"];
type SecretsReply = Op<"/api/v1/monitors/{id}/secrets", "get">["responses"][200]["content"]["application/json"];
type MintOp = Op<"/api/v1/me/tokens", "post">;
type MintBody = MintOp["requestBody"]["content"]["application/json"];
type MintReply = MintOp["responses"][201]["content"]["application/json"];
type TokensReply = Op<"/api/v1/me/tokens", "get">["responses"][200]["content"]["application/json"];

const BASE = "https://api.24observe.com";
const PAT = "obs_...";

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(BASE + path, {
    method,
    headers: {
      authorization: `Bearer ${PAT}`,
      "idempotency-key": crypto.randomUUID(),
      "content-type": "application/json",
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) {
    const err: Schemas["Error"] = await res.json();
    const fields = (err.fields ?? []).map((f) => `${f.path}: ${f.code} ${f.message}`);
    throw new Error(`${res.status} ${err.code}: ${err.error} ${fields.join("; ")}`);
  }
  return (res.status === 204 ? undefined : await res.json()) as T;
}

export async function walkthrough(): Promise<number> {
  // Walkthrough: create a monitor (the page's body, as is).
  const body: CreateBody = {
    name: "example.com homepage",
    url: "https://example.com",
    type: "https",
    intervalSec: 60,
    timeoutMs: 10000,
    alertEmail: "ops@example.com",
  };
  const monitor = await call<CreateReply>("POST", "/api/v1/monitors", body);
  console.log("created monitor", monitor.id);
  const id: number = monitor.id;
  const status: "up" | "down" | "pending" | "paused" | "maintenance" = monitor.status;
  const tags: string[] = monitor.tags;
  const created: string = monitor.createdAt;
  const slack: boolean = monitor.hasAlertSlack;

  // List, read, patch, read the secrets.
  const list = await call<ListReply>("GET", "/api/v1/monitors?tag=prod");
  const first: number | undefined = list.monitors[0]?.id;
  const again = await call<GetReply>("GET", `/api/v1/monitors/${id}`);
  const interval: number = again.intervalSec;
  const patch: PatchBody = { intervalSec: 300, paused: true, alertSlackUrl: null };
  const patched = await call<GetReply>("PATCH", `/api/v1/monitors/${id}`, patch);
  const secrets = await call<SecretsReply>("GET", `/api/v1/monitors/${id}/secrets`);
  const hook: string | null = secrets.alertSlackUrl;

  // Mint a PAT, minimal and narrowly scoped + capped; list tokens.
  const minimal: MintBody = { name: "aeoniti-bot", expiresAt: "2027-01-01T00:00:00Z" };
  const scoped: MintBody = {
    name: "aeoniti-bot",
    scopes: ["monitors:write", "logs:write"],
    dailyMutationLimit: 500,
    dailyLogBytesLimit: 104857600,
  };
  const token = await call<MintReply>("POST", "/api/v1/me/tokens", scoped);
  const plaintext: string = token.token;
  const expires: string | null = token.expiresAt;
  const tokens = await call<TokensReply>("GET", "/api/v1/me/tokens");
  const names: string[] = tokens.tokens.map((t) => `${t.id} ${t.prefix} ${t.scopes.join(",")}`);
  console.log(status, tags, created, slack, first, list.nextCursor, interval, patched.paused, hook);
  console.log(minimal.name, plaintext.length, expires, names);
  return token.id;
}
"""

MUST_FAIL_TS = """\
// Every line after an @ts-expect-error must be a type error: one that
// compiles leaves its directive unused, which tsc reports.
import type { components } from "./api";

type MonitorInput = components["schemas"]["MonitorInput"];
type CreateTokenRequest = components["schemas"]["CreateTokenRequest"];

// @ts-expect-error name and type are required
export const empty: MonitorInput = {};

export const odd: MonitorInput = {
  name: "x",
  type: "https",
  url: "https://example.com",
  // @ts-expect-error 45 is not one of 30, 60, 300, 900, 1800, 3600
  intervalSec: 45,
};

export const unknownScope: CreateTokenRequest = {
  name: "x",
  // @ts-expect-error not a scope
  scopes: ["monitors:delete"],
};

// The same shapes with allowed values compile: the errors above are about the values.
export const fine: MonitorInput = { name: "x", type: "https", url: "https://example.com", intervalSec: 30 };
export const scoped: CreateTokenRequest = { name: "x", scopes: ["monitors:read", "audit:*", "*"] };
"""


@pytest.fixture(scope="session")
def npm_cache(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """npx with the user's npm cache (the registry is the only network; a warm cache spares the suite
    half a minute of downloads), quiet."""
    if shutil.which("npx") is None:
        pytest.skip("needs Node.js and npm (npx) for openapi-typescript and tsc")
    return {
        **os.environ,
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
    }


def _npx(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["npx", "--yes", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _tsc(env: dict[str, str], cwd: Path, *files: str) -> subprocess.CompletedProcess[str]:
    flags = ["--strict", "--noEmit", "--skipLibCheck", "--target", "es2022", "--module", "es2022"]
    flags += ["--moduleResolution", "bundler", "--lib", "es2022,dom"]
    return _npx(env, cwd, "-p", "typescript@5", "tsc", *flags, *files)


def test_typescript_types_from_the_served_document(server: Server, npm_cache: dict[str, str], tmp_path: Path) -> None:
    if server.backend != "sqlite":
        pytest.skip("the document is built from the protos alone: the same on every backend (checked on SQLite)")
    with server.client() as c:
        (tmp_path / "openapi.json").write_text(c.get("/openapi.json").text)
    generated = _npx(npm_cache, tmp_path, "openapi-typescript@7", "openapi.json", "-o", "api.ts")
    assert generated.returncode == 0, generated.stdout + generated.stderr
    (tmp_path / "walkthrough.ts").write_text(WALKTHROUGH_TS)
    (tmp_path / "must_fail.ts").write_text(MUST_FAIL_TS)
    checked = _tsc(npm_cache, tmp_path, "api.ts", "walkthrough.ts", "must_fail.ts")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Without the directives, exactly the three marked lines fail, each as a type mismatch.
    lines = MUST_FAIL_TS.splitlines()
    marked = [i + 2 for i, line in enumerate(lines) if line.strip().startswith("// @ts-expect-error")]
    (tmp_path / "must_fail.ts").write_text("\n".join(re.sub(r"^(\s*)// @ts-expect-error.*", r"\1//", x) for x in lines))
    failed = _tsc(npm_cache, tmp_path, "api.ts", "must_fail.ts")
    errors = re.findall(r"must_fail\.ts\((\d+),\d+\): error (TS\d+)", failed.stdout)
    assert sorted({int(line) for line, _ in errors}) == marked, failed.stdout
    assert {code for _, code in errors} <= {"TS2322", "TS2739", "TS2741"}, failed.stdout
