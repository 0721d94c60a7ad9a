"""A test-only proto's annotated RPCs get REST routes (path templates, body
field, repeated query, HttpBody, SSE streaming) and OpenAPI entries, with no
gateway edit; the pipeline enforces their rule option like any other."""

from __future__ import annotations

import httpx

from tests.conftest import register
from tests.harness import ThreadServer


def test_body_field_path_and_repeated_query(echo_server: ThreadServer) -> None:
    r = httpx.post(
        f"{echo_server.base_url}/api/v1/test/things/42/echo?tags=a&tags=b&loud=true&kind=fancy",
        json={"text": "hi", "stars": 5},
    )
    assert r.status_code == 201, r.text
    assert r.json() == {
        "thingId": 42,
        "note": {"text": "hi", "stars": 5},
        "tags": ["a", "b"],
        "loud": True,
        "kind": "fancy",
        "missing": None,
    }


def test_body_field_is_strict(echo_server: ThreadServer) -> None:
    # With body: "note" the JSON body is the note, so paths are the body's own.
    r = httpx.post(f"{echo_server.base_url}/api/v1/test/things/42/echo?kind=weird", json={"text": "hi", "extra": 1})
    assert r.status_code == 400
    assert {(f["path"], f["code"]) for f in r.json()["fields"]} == {
        ("extra", "unrecognized_keys"),
        ("kind", "invalid_enum_value"),
    }


def test_multi_segment_template_and_rule_enforcement(echo_server: ThreadServer) -> None:
    url = f"{echo_server.base_url}/api/v1/test/shelves/s1/books/b2"
    anonymous = httpx.get(url)
    assert (anonymous.status_code, anonymous.json()["code"]) == (401, "AUTH_REQUIRED")
    persona = register(echo_server)
    narrow = persona.mint(name="no-monitors", scopes=["tokens:read"])
    denied = httpx.get(url, headers={"authorization": f"Bearer {narrow['token']}"})
    assert (denied.status_code, denied.json()["code"]) == (403, "PAT_SCOPE_INSUFFICIENT")
    ok = httpx.get(url, headers={"authorization": f"Bearer {persona.pat}"})
    assert ok.status_code == 200
    assert ok.json() == {"name": "shelves/s1/books/b2", "caller": persona.user_id}
    assert httpx.get(f"{echo_server.base_url}/api/v1/test/shelves/s1").status_code == 404


def test_http_body_response(echo_server: ThreadServer) -> None:
    r = httpx.get(f"{echo_server.base_url}/api/v1/test/things/7/badge.svg")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/svg+xml"
    assert r.text.startswith("<svg")
    assert ">7<" in r.text


def test_server_streaming_is_server_sent_events(echo_server: ThreadServer) -> None:
    with httpx.stream("GET", f"{echo_server.base_url}/api/v1/test/count?upto=3") as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events == ['data: {"n":1}', 'data: {"n":2}', 'data: {"n":3}']


def test_streaming_errors_before_the_first_event_are_plain_errors(echo_server: ThreadServer) -> None:
    r = httpx.get(f"{echo_server.base_url}/api/v1/test/count?upto=1000")
    assert r.status_code == 400
    assert r.json()["fields"][0]["path"] == "upto"


def test_openapi_has_the_new_routes_with_comments(echo_server: ThreadServer) -> None:
    spec = httpx.get(f"{echo_server.base_url}/openapi.json").json()
    echo = spec["paths"]["/api/v1/test/things/{thingId}/echo"]["post"]
    assert echo["operationId"] == "EchoService_Echo"
    assert echo["summary"] == "Echoes a note about a thing"
    assert "201" in echo["responses"]
    assert {p["name"] for p in echo["parameters"]} == {"thingId", "tags", "loud", "kind"}
    assert spec["paths"]["/api/v1/test/{name}"]["get"]["security"] == [{"bearerAuth": []}, {"sessionCookie": []}]
    assert "text/event-stream" in spec["paths"]["/api/v1/test/count"]["get"]["responses"]["200"]["content"]
    note = spec["components"]["schemas"]["observetest_v1_Note"]
    assert note["properties"]["text"]["description"] == "The text."


def test_roles_from_the_rule_are_enforced(echo_server: ThreadServer) -> None:
    persona = register(echo_server)
    with echo_server.client(persona.pat) as c:
        assert c.post("/api/v1/test/purge", json={}).status_code == 204
    echo_server.set_role(persona.user_id, "viewer")
    with echo_server.client(persona.pat) as c:
        r = c.post("/api/v1/test/purge", json={})
        assert (r.status_code, r.json()["code"]) == (403, "ROLE_INSUFFICIENT")
        assert c.get("/api/v1/me").json()["role"] == "viewer"
