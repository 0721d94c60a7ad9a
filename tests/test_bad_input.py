"""Bad input never gets a 500: each kind gets its CONTRACT.md status and code."""

from __future__ import annotations

import pytest

from tests.conftest import Persona, Server, Team, register


@pytest.fixture(scope="module")
def owner(server: Server) -> Persona:
    """One user for the module (per backend): every request here is one the server must refuse, so no test
    changes what another sees, and a fresh sign-up per case (a password hash each) would only add time."""
    return register(server)


@pytest.mark.parametrize(
    ("body", "path", "code"),
    [
        ({"name": "x", "unknown": 1}, "unknown", "unrecognized_keys"),
        ({"name": 5}, "name", "invalid_type"),
        ({"name": "x", "scopes": "monitors:read"}, "scopes", "invalid_type"),
        ({"name": "x", "scopes": [1]}, "scopes[0]", "invalid_type"),
        ({"name": "x", "dailyMutationLimit": True}, "dailyMutationLimit", "invalid_type"),
        ({"name": "x", "dailyMutationLimit": 1.5}, "dailyMutationLimit", "invalid_type"),
        ({"name": "x", "expiresAt": "tomorrow"}, "expiresAt", "invalid_string"),
        ({"name": "x", "expiresAt": "2027-01-01T00:00:00"}, "expiresAt", "invalid_string"),
        ({"name": "x", "dailyMutationLimit": 2**70}, "dailyMutationLimit", "too_big"),
    ],
)
def test_wrong_fields_name_their_path(owner: Persona, body: dict[str, object], path: str, code: str) -> None:
    with owner.client() as c:
        r = c.post("/api/v1/me/tokens", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "VALIDATION_FAILED"
    assert {"path": path, "code": code} in [{k: f[k] for k in ("path", "code")} for f in r.json()["fields"]]


@pytest.mark.parametrize("raw", [b"{", b"[1,2]", b'"text"', b"null", b"\xff\xfe"])
def test_malformed_or_non_object_json(owner: Persona, raw: bytes) -> None:
    with owner.client() as c:
        r = c.post("/api/v1/me/tokens", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "VALIDATION_FAILED"
    assert r.json()["fields"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_wrong_content_type(owner: Persona, content_type: str) -> None:
    with owner.client() as c:
        r = c.post("/api/v1/me/tokens", content=b'{"name":"x"}', headers={"content-type": content_type})
    assert r.status_code == 415
    assert r.json()["code"] == "UNSUPPORTED_MEDIA_TYPE"


def test_oversized_body(owner: Persona) -> None:
    with owner.client() as c:
        r = c.post("/api/v1/me/tokens", json={"name": "x" * 20000})
    assert r.status_code == 413
    assert r.json()["code"] == "PAYLOAD_TOO_LARGE"


def test_oversized_chunked_body_without_content_length(owner: Persona) -> None:
    def chunks():
        yield b'{"name":"'
        for _ in range(40):
            yield b"x" * 1000
        yield b'"}'

    with owner.client() as c:
        r = c.post("/api/v1/me/tokens", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["code"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.parametrize("token_id", ["abc", "1.5", "99999999999999999999999", "-1", "+1", "01", "%D9%A1", "1e3"])
def test_a_path_id_that_is_not_plain_digits_is_not_found(owner: Persona, token_id: str) -> None:
    with owner.client() as c:
        r = c.delete(f"/api/v1/me/tokens/{token_id}")
    assert r.status_code == 404
    assert r.json()["code"] == "NOT_FOUND"


def test_unknown_path_id_is_404(owner: Persona) -> None:
    with owner.client() as c:
        r = c.delete("/api/v1/me/tokens/987654321")
    assert r.status_code == 404
    assert r.json()["code"] == "NOT_FOUND"


def test_unknown_query_parameter(owner: Persona) -> None:
    with owner.client() as c:
        r = c.get("/api/v1/me/tokens", params={"limit": "5"})
    assert r.status_code == 400
    assert r.json()["fields"] == [
        {"path": "limit", "code": "unrecognized_keys", "message": "Unrecognized query parameter: 'limit'"}
    ]


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "AUTH_REQUIRED"),
        ("Bearer", "TOKEN_INVALID"),
        ("Basic dXNlcjpwYXNz", "TOKEN_INVALID"),
        ("Bearer obs_short", "TOKEN_INVALID"),
        ("Bearer obs_" + "A" * 43, "TOKEN_INVALID"),
        ("Bearer obss_" + "A" * 43, "TOKEN_INVALID"),
    ],
)
def test_bad_credentials(server: Server, header: str | None, code: str) -> None:
    headers = {"authorization": header} if header is not None else {}
    with server.client() as c:
        r = c.get("/api/v1/me", headers=headers)
    assert r.status_code == 401
    assert r.json()["code"] == code


def test_unknown_route_and_method(owner: Persona) -> None:
    with owner.client() as c:
        missing = c.get("/api/v1/nothing-here")
        outside = c.get("/not-api")
        wrong_method = c.put("/api/v1/me/tokens", json={})
    assert (missing.status_code, missing.json()["code"]) == (404, "NOT_FOUND")
    assert (outside.status_code, outside.json()["code"]) == (404, "NOT_FOUND")
    assert (wrong_method.status_code, wrong_method.json()["code"]) == (405, "METHOD_NOT_ALLOWED")
    assert wrong_method.headers["allow"] == "GET, POST"


def test_a_literal_segment_wins_over_a_variable_one_whatever_the_method(owner: Persona) -> None:
    with owner.client() as c:
        for method in ("GET", "HEAD", "PUT"):
            r = c.request(method, "/api/v1/monitors/bulk")
            assert r.status_code == 405, (method, r.text)
            assert r.headers["allow"] == "DELETE, PATCH, POST"
            if method != "HEAD":
                assert r.json()["code"] == "METHOD_NOT_ALLOWED"
        assert c.get("/api/v1/monitors/123456789").json()["code"] == "NOT_FOUND"  # {id} still routes


def test_the_router_prefers_literal_segments_from_the_left() -> None:
    from gateway.routes import Router

    router: Router[str] = Router()
    router.add("GET", "/a/{x}", "get-x")
    router.add("POST", "/a/b", "post-b")
    router.add("GET", "/a/{x}/c", "get-x-c")
    router.add("DELETE", "/a/b/{y}", "delete-b-y")
    router.add("POST", "/a/{x}:run", "run-x")
    router.add("GET", "/a/{x}/{rest=**}", "get-rest")
    assert router.match("GET", "/a/b") == ["POST"]
    assert router.match("GET", "/a/z")[0] == "get-x"
    assert router.match("GET", "/a/b/c") == ["DELETE"]  # /a/b/{y} is more literal than /a/{x}/c
    assert router.match("GET", "/a/z/c")[0] == "get-x-c"
    assert router.match("GET", "/a/5:run") == ["POST"]  # the :verb is one more literal part
    assert router.match("POST", "/a/5:run")[:1] == ("run-x",)
    assert router.match("GET", "/a/z/c/d")[0] == "get-rest"
    assert router.match("GET", "/b") == []


def test_non_api_wrong_method_gets_the_envelope(server: Server) -> None:
    with server.client() as c:
        r = c.post("/health/live")
    assert r.status_code == 405
    assert r.json()["code"] == "METHOD_NOT_ALLOWED"


def test_a_path_id_repeated_in_the_body_must_agree_on_every_route(team: Team) -> None:
    """body "*" (rotate, members) and a body bound to a field (PATCH
    /monitors/{id}) alike: an equal value is accepted, another one is a 400
    naming the body's key; the path's value is the one used."""
    member = team.member.user_id
    with team.owner.client() as c:
        hb = c.post("/api/v1/monitors", json={"name": "hb", "type": "heartbeat"}).json()
        other = hb["id"] + 1000
        cases = [
            ("POST", f"/api/v1/monitors/{hb['id']}/rotate-heartbeat-token", {}, "id", hb["id"], other),
            ("PATCH", f"/api/v1/monitors/{hb['id']}", {"name": "renamed"}, "id", hb["id"], other),
            ("PATCH", f"/api/v1/me/members/{member}", {"role": "admin"}, "userId", member, member + 1000),
            ("PATCH", f"/api/v1/me/members/{member}", {"role": "admin"}, "user_id", member, member + 1000),
        ]
        for verb, url, body, key, same, different in cases:
            for value in (same, str(same)):
                ok = c.request(verb, url, json={**body, key: value})
                assert ok.status_code == 200, (url, key, ok.text)
            bad = c.request(verb, url, json={**body, key: different})
            assert (bad.status_code, bad.json()["code"]) == (400, "VALIDATION_FAILED"), (url, key, bad.text)
            assert bad.json()["fields"] == [
                {"path": key, "code": "invalid_literal", "message": f"Expected {same}, the value in the path"}
            ]
        assert c.get(f"/api/v1/monitors/{hb['id']}").json()["name"] == "renamed"
        assert c.get(f"/api/v1/monitors/{other}").status_code == 404
