"""POST/GET/DELETE /api/v1/me/tokens, as the API page shows them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from tests.conftest import Persona, Server, register

TOKEN_RE = re.compile(r"obs_[A-Za-z0-9_-]{43}")


def test_minimal_mint_returns_the_documented_shape(owner: Persona) -> None:
    with owner.client() as c:
        r = c.post("/api/v1/me/tokens", json={"name": "aeoniti-bot", "expiresAt": "2027-01-01T00:00:00Z"})
    assert r.status_code == 201
    body = r.json()
    assert list(body) == ["id", "name", "prefix", "token", "expiresAt", "createdAt"]
    assert isinstance(body["id"], int)
    assert body["name"] == "aeoniti-bot"
    assert TOKEN_RE.fullmatch(body["token"])
    assert len(body["token"]) == 47
    assert body["prefix"] == body["token"][:12]
    assert body["expiresAt"] == "2027-01-01T00:00:00Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["createdAt"])


def test_scoped_capped_mint_is_listed_with_scopes_and_caps_but_no_plaintext(owner: Persona) -> None:
    minted = owner.mint(
        name="aeoniti-bot",
        scopes=["monitors:write", "logs:write"],
        dailyMutationLimit=500,
        dailyLogBytesLimit=104857600,
    )
    with owner.client() as c:
        r = c.get("/api/v1/me/tokens")
    assert r.status_code == 200
    assert minted["token"] not in r.text
    listed = next(t for t in r.json()["tokens"] if t["id"] == minted["id"])
    assert listed == {
        "id": minted["id"],
        "name": "aeoniti-bot",
        "prefix": minted["prefix"],
        "scopes": ["monitors:write", "logs:write"],
        "expiresAt": None,
        "createdAt": minted["createdAt"],
        "lastUsedAt": None,
        "dailyMutationLimit": 500,
        "dailyMutationUsedToday": 0,
        "dailyLogBytesLimit": 104857600,
        "dailyLogBytesUsedToday": 0,
    }


def test_default_scope_is_wildcard(owner: Persona) -> None:
    minted = owner.mint(name="plain")
    with owner.client() as c:
        listed = next(t for t in c.get("/api/v1/me/tokens").json()["tokens"] if t["id"] == minted["id"])
    assert listed["scopes"] == ["*"]


def test_revoked_token_fails_at_once(owner: Persona) -> None:
    minted = owner.mint(name="short-lived")
    with owner.client(minted["token"]) as c:
        assert c.get("/api/v1/me").status_code == 200
    with owner.client() as c:
        assert c.delete(f"/api/v1/me/tokens/{minted['id']}").status_code == 204
        assert c.delete(f"/api/v1/me/tokens/{minted['id']}").status_code == 404
        assert minted["id"] not in [t["id"] for t in c.get("/api/v1/me/tokens").json()["tokens"]]
    with owner.client(minted["token"]) as c:
        r = c.get("/api/v1/me")
    assert r.status_code == 401
    assert r.json()["code"] == "TOKEN_INVALID"


def test_expired_token_fails(owner: Persona) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    minted = owner.mint(name="expiring", expiresAt=soon)
    import time

    time.sleep(max(0.0, (datetime.fromisoformat(soon) - datetime.now(UTC)).total_seconds()) + 0.5)
    with owner.client(minted["token"]) as c:
        r = c.get("/api/v1/me")
    assert r.status_code == 401
    assert r.json()["code"] == "TOKEN_EXPIRED"


def test_another_orgs_token_cannot_be_revoked(owner: Persona, outsider: Persona) -> None:
    with outsider.client() as c:
        r = c.delete(f"/api/v1/me/tokens/{owner.pat_id}")
    assert r.status_code == 404
    assert r.json()["code"] == "NOT_FOUND"
    with owner.client() as c:
        assert c.get("/api/v1/me").status_code == 200


def test_scopes_are_validated(owner: Persona) -> None:
    with owner.client() as c:
        r = c.post("/api/v1/me/tokens", json={"name": "x", "scopes": ["monitors:read", "monitors:delete", "nope:*"]})
    assert r.status_code == 400
    assert [(f["path"], f["code"]) for f in r.json()["fields"]] == [
        ("scopes[1]", "invalid_enum_value"),
        ("scopes[2]", "invalid_enum_value"),
    ]


def test_caps_and_name_are_validated(owner: Persona) -> None:
    past = "2020-01-01T00:00:00Z"
    with owner.client() as c:
        r = c.post(
            "/api/v1/me/tokens",
            json={"name": "", "expiresAt": past, "dailyMutationLimit": 0, "dailyLogBytesLimit": 2**41},
        )
    assert r.status_code == 400
    assert {(f["path"], f["code"]) for f in r.json()["fields"]} == {
        ("name", "required"),
        ("expiresAt", "too_small"),
        ("dailyMutationLimit", "too_small"),
        ("dailyLogBytesLimit", "too_big"),
    }


def test_a_token_cannot_mint_scopes_it_lacks(owner: Persona) -> None:
    narrow = owner.mint(name="narrow", scopes=["tokens:write", "monitors:read"])
    with owner.client(narrow["token"]) as c:
        escalate = c.post("/api/v1/me/tokens", json={"name": "wider", "scopes": ["monitors:write"]})
        wildcard = c.post("/api/v1/me/tokens", json={"name": "wider"})
        same = c.post("/api/v1/me/tokens", json={"name": "same", "scopes": ["monitors:read"]})
    assert escalate.status_code == 403
    assert escalate.json()["code"] == "PAT_SCOPE_INSUFFICIENT"
    assert wildcard.status_code == 403
    assert same.status_code == 201


def test_resource_wildcard_grants_read_and_write(owner: Persona) -> None:
    tokens_all = owner.mint(name="tokens-star", scopes=["tokens:*"])
    with owner.client(tokens_all["token"]) as c:
        assert c.get("/api/v1/me/tokens").status_code == 200
        assert c.post("/api/v1/me/tokens", json={"name": "child", "scopes": ["tokens:read"]}).status_code == 201


def test_missing_scope_is_refused(owner: Persona) -> None:
    monitors_only = owner.mint(name="monitors", scopes=["monitors:read"])
    with owner.client(monitors_only["token"]) as c:
        r = c.get("/api/v1/me/tokens")
    assert r.status_code == 403
    assert r.json() == {"error": "this token lacks the 'tokens:read' scope", "code": "PAT_SCOPE_INSUFFICIENT"}


def test_tokens_are_per_user(server: Server) -> None:
    a, b = register(server), register(server)
    with a.client() as c:
        ids = [t["id"] for t in c.get("/api/v1/me/tokens").json()["tokens"]]
    assert b.pat_id not in ids
    assert a.pat_id in ids


def test_last_used_is_never_before_created_and_times_are_whole_seconds(owner: Persona, server: Server) -> None:
    import grpc
    from observe.v1 import tokens_pb2, tokens_pb2_grpc

    minted = owner.mint(name="used at once", expiresAt="2030-01-01T00:00:00.123456Z")
    assert minted["expiresAt"] == "2030-01-01T00:00:00Z"
    with server.client(minted["token"]) as c:
        assert c.get("/api/v1/me").status_code == 200
    with owner.client() as c:
        listed = next(t for t in c.get("/api/v1/me/tokens").json()["tokens"] if t["id"] == minted["id"])
    seconds = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
    for key in ("createdAt", "lastUsedAt", "expiresAt"):
        assert seconds.fullmatch(listed[key]), (key, listed[key])
    assert datetime.fromisoformat(listed["lastUsedAt"]) >= datetime.fromisoformat(listed["createdAt"])
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = tokens_pb2_grpc.TokenServiceStub(channel)
        reply = stub.ListTokens(tokens_pb2.ListTokensRequest(), metadata=[("authorization", f"Bearer {owner.pat}")])
    token = next(t for t in reply.tokens if t.id == minted["id"])
    assert token.expires_at.nanos == token.created_at.nanos == token.last_used_at.nanos == 0
    assert token.last_used_at.seconds >= token.created_at.seconds
