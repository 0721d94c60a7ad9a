"""Generated authorization test: every RPC in the descriptor pool, called
over REST by each role, a PAT without the route's scope, an expired token
and another organisation's owner; the outcome must match the method's
(observe.v1.rule). New RPCs are covered without editing this file.

Team members call with ids that do not exist (an allowed call then fails
validation or lookup, never authorization, and changes nothing); the
outsider calls with real ids of the team's resources and must get what a
missing id gets: 404 (or the same validation error), never data.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.app import build_core
from core.config import Settings
from core.rpc.context import ROLES_BY_NAME
from core.rpc.methods import HttpBinding, Method
from tests.conftest import SQLITE_ONLY, Persona, Server, SmtpSink, Team, make_team, register

MISSING_ID = "999999999"
DENIED = {401, 403}


def all_methods(tmp: Path) -> list[Method]:
    return sorted(build_core(Settings(data_dir=tmp)).methods.values(), key=lambda m: m.grpc_path)


def fill(path: str, ids: dict[str, str]) -> str:
    path = re.sub(r"\{([^}=]+)=[^}]*\}", lambda m: ids.get(m.group(1), "x/y"), path)
    return re.sub(r"\{([^}]+)\}", lambda m: ids.get(m.group(1), MISSING_ID), path)


def call(client: httpx.Client, binding: HttpBinding, ids: dict[str, str]) -> httpx.Response:
    kwargs: dict[str, Any] = {"json": {}} if binding.body else {}
    with client.stream(binding.verb, fill(binding.path, ids), **kwargs) as r:
        # A live stream (the log tail) never ends: its admission is its status; its body is not read.
        if not r.headers.get("content-type", "").startswith("text/event-stream"):
            r.read()
        return r


# Who may call what is decided in the pipeline from the method's rule and the caller's role and
# scopes, the same code over either database: one backend proves it (the suite's time is tight).
pytestmark = SQLITE_ONLY


@pytest.fixture(scope="module")
def cast(server: Server, smtp_sink: SmtpSink) -> dict[str, Any]:
    team = make_team(server, smtp_sink)
    soon = (datetime.now(UTC) + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    expiring = team.owner.mint(name="expiring", expiresAt=soon)
    with team.owner.client() as c:
        invite = c.post("/api/v1/me/invites", json={"email": f"authz-{team.owner.user_id}@example.com"}).json()
    with team.owner.client() as c:
        monitor = c.post(
            "/api/v1/monitors", json={"name": "authz", "type": "https", "url": "https://example.com", "paused": True}
        ).json()
    outsider = register(server)  # while the token runs out
    time.sleep(max(0.0, (datetime.fromisoformat(soon) - datetime.now(UTC)).total_seconds()) + 0.5)
    return {
        "team": team,
        "expired": expiring["token"],
        "outsider": outsider,
        # Real ids in the team's org, by (service, path variable).
        "owned": {
            ("observe.v1.TokenService", "id"): str(team.owner.pat_id),
            ("observe.v1.MemberService", "id"): str(invite["id"]),
            ("observe.v1.MemberService", "user_id"): str(team.member.user_id),
            ("observe.v1.MonitorService", "id"): str(monitor["id"]),
        },
    }


def narrow_scope(method: Method) -> str:
    """A scope that does not grant the method's."""
    return "audit:read" if not method.rule.scope.startswith("audit") else "monitors:read"


def test_every_rpc_against_every_persona(cast: dict[str, Any], tmp_path: Path) -> None:
    team: Team = cast["team"]
    outsider: Persona = cast["outsider"]
    methods = all_methods(tmp_path)
    # Minted up front: the bindings are checked side by side (no call changes what another sees).
    narrow = {
        scope: team.owner.mint(name=f"narrow-{scope}", scopes=[scope])["token"]
        for scope in {narrow_scope(m) for m in methods if not m.rule.public}
    }

    def check(method: Method, binding: HttpBinding) -> None:
        rule = method.rule
        where = f"{binding.verb} {binding.path}"
        if rule.public:
            with team.owner.server.client() as c:
                r = call(c, binding, {})
            assert r.status_code not in DENIED or r.json()["code"] not in {"AUTH_REQUIRED", "ROLE_INSUFFICIENT"}
            assert r.status_code < 500, (where, r.text)
            return
        for role, persona in team.by_role().items():
            with persona.client() as c:
                r = call(c, binding, {})
            allowed = not method.allowed_roles or ROLES_BY_NAME[role] in method.allowed_roles
            if allowed:
                assert r.status_code not in DENIED, (where, role, r.text)
                assert r.status_code < 500, (where, role, r.text)
            else:
                assert (r.status_code, r.json()["code"]) == (403, "ROLE_INSUFFICIENT"), (where, role)
        with team.owner.client(narrow[narrow_scope(method)]) as c:
            r = call(c, binding, {})
        if rule.scope:
            assert (r.status_code, r.json()["code"]) == (403, "PAT_SCOPE_INSUFFICIENT"), where
        else:
            assert r.status_code not in DENIED, (where, r.text)
        with team.owner.client(cast["expired"]) as c:
            r = call(c, binding, {})
        assert (r.status_code, r.json()["code"]) == (401, "TOKEN_EXPIRED"), where
        ids = {var: value for (svc, var), value in cast["owned"].items() if svc == method.service}
        if ids and any("{" + var in binding.path for var in ids):
            with outsider.client() as c:
                r = call(c, binding, ids)
                missing = call(c, binding, {})
            # Another org's resource answers exactly like one that does
            # not exist: 404 (or the same validation error), never data.
            assert r.status_code in (400, 404), (where, r.text)
            assert (r.status_code, r.json()) == (missing.status_code, missing.json()), where

    work = [(method, binding) for method in methods for binding in method.bindings]
    checked = 0
    with ThreadPoolExecutor(6) as pool:
        for done in [pool.submit(check, method, binding) for method, binding in work]:
            done.result()  # raises the binding's failure
            checked += 1
    assert checked == sum(len(m.bindings) for m in methods) >= 19
    with team.owner.client() as c:  # nothing above changed the team
        assert len(c.get("/api/v1/me/members").json()["members"]) == 4
        monitor_id = int(cast["owned"][("observe.v1.MonitorService", "id")])
        assert [m["id"] for m in c.get("/api/v1/monitors").json()["monitors"]] == [monitor_id]
