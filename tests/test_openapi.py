"""/openapi.json is valid OpenAPI 3.1 with real schemas; /docs is served locally.

The request rules published here come from the protos' buf.validate
annotations (gateway/openapi_rules.py); a sample of bodies is checked against
both the published schema and the live server, which must agree.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from openapi_spec_validator import validate

from core.rpc.scopes import SCOPES
from gateway.cel_schema import CelScope, translate_rule
from tests.conftest import SQLITE_ONLY, Persona, Server

Spec = dict[str, Any]


@pytest.fixture(scope="module")
def spec(server: Server) -> Spec:
    with server.client() as c:
        return dict(c.get("/openapi.json").json())


def _component(spec: Spec, ref: dict[str, Any]) -> dict[str, Any]:
    return dict(spec["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]])


def _body(spec: Spec, path: str, verb: str) -> dict[str, Any]:
    return dict(spec["paths"][path][verb]["requestBody"]["content"]["application/json"]["schema"])


def _validator(spec: Spec, name: str) -> Any:
    return jsonschema_rs.validator_for({"$ref": f"#/components/schemas/{name}", "components": spec["components"]})


def _nullable(schema: dict[str, Any]) -> bool:
    kinds = schema.get("type")
    if kinds == "null" or (isinstance(kinds, list) and "null" in kinds):
        return True
    return any(_nullable(s) for key in ("anyOf", "oneOf") for s in schema.get(key, []))


def test_it_is_valid_openapi_3_1(spec: Spec) -> None:
    assert spec["openapi"] == "3.1.0"
    validate(spec)


def test_mint_schema_is_real(spec: Spec) -> None:
    op = spec["paths"]["/api/v1/me/tokens"]["post"]
    assert op["summary"].startswith("Mints a PAT")
    assert op["x-observe-rule"]["scope"] == "tokens:write"
    schema = _component(spec, op["responses"]["201"]["content"]["application/json"]["schema"])
    assert schema["required"] == ["id", "name", "prefix", "token", "expiresAt", "createdAt"]
    assert schema["properties"]["id"]["type"] == "integer"
    assert schema["additionalProperties"] is False
    assert "description" in schema["properties"]["token"]
    request = _component(spec, op["requestBody"]["content"]["application/json"]["schema"])
    assert request["required"] == ["name"]
    assert op["requestBody"]["required"] is True
    assert spec["paths"]["/api/v1/auth/login"]["post"]["security"] == []


def test_field_rules_become_schema_keywords(spec: Spec) -> None:
    monitor = spec["components"]["schemas"]["MonitorInput"]
    props = monitor["properties"]
    assert monitor["required"] == ["name", "type"]
    assert (props["name"]["minLength"], props["name"]["maxLength"]) == (1, 200)
    assert props["name"]["type"] == "string"  # required: not nullable
    assert props["intervalSec"]["enum"] == [30, 60, 300, 900, 1800, 3600, None]  # optional: null is "unset"
    assert (props["timeoutMs"]["minimum"], props["timeoutMs"]["maximum"]) == (1000, 30000)
    assert props["type"]["enum"] == ["http", "https", "keyword", "tcp", "dns", "tls", "ping", "heartbeat"]
    assert props["tags"]["maxItems"] == 20
    assert props["tags"]["items"]["pattern"] == "^[a-z0-9_:.-]{1,50}$"
    assert set(props["regions"]["items"]["enum"]) == {"local", "weur", "enam", "apac", "oc", "sam", "afr"}
    assert props["headers"]["maxProperties"] == 20
    assert "pattern" in props["headers"]["propertyNames"]
    assert props["headers"]["additionalProperties"]["maxLength"] == 8192
    assert props["url"]["format"] == "uri"
    assert props["url"]["type"] == ["string", "null"]  # its keywords let null (unset) through as they are
    assert "Put credentials in headers" in props["url"]["description"]
    invite = spec["components"]["schemas"]["CreateInviteRequest"]
    assert invite["properties"]["email"]["format"] == "email"
    assert invite["required"] == ["email"]
    register = spec["components"]["schemas"]["RegisterRequest"]
    assert (register["properties"]["password"]["minLength"], register["properties"]["password"]["maxLength"]) == (
        10,
        256,
    )
    login = spec["components"]["schemas"]["LoginRequest"]
    assert login["properties"]["password"]["minLength"] == 1  # required string: "" counts as missing
    token = spec["components"]["schemas"]["CreateTokenRequest"]["properties"]
    assert token["expiresAt"]["format"] == "date-time"
    assert "in the future" in token["expiresAt"]["description"]
    monitors = spec["paths"]["/api/v1/monitors"]["get"]["parameters"]
    limit = next(p for p in monitors if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"], limit["required"]) == (1, 1000, False)
    tag = next(p for p in monitors if p["name"] == "tag")
    assert tag["schema"]["maxItems"] == 20
    assert not _nullable(tag["schema"])  # query values are never null
    assert not _nullable(limit["schema"])


def test_scopes_are_a_closed_set(spec: Spec) -> None:
    scopes = spec["components"]["schemas"]["CreateTokenRequest"]["properties"]["scopes"]
    allowed = set(scopes["items"]["enum"])
    assert set(SCOPES) <= allowed
    assert len(SCOPES) == 24
    wildcards = {f"{s.split(':')[0]}:*" for s in SCOPES} | {"*"}
    assert allowed == set(SCOPES) | wildcards
    assert "monitors:delete" not in allowed


def test_create_requires_and_patch_takes_any_subset(spec: Spec) -> None:
    create = spec["paths"]["/api/v1/monitors"]["post"]
    assert create["requestBody"]["required"] is True
    assert _body(spec, "/api/v1/monitors", "post") == {"$ref": "#/components/schemas/MonitorInput"}
    patch = spec["paths"]["/api/v1/monitors/{id}"]["patch"]
    assert _body(spec, "/api/v1/monitors/{id}", "patch") == {"$ref": "#/components/schemas/MonitorInputPatch"}
    assert patch["requestBody"]["required"] is False  # an empty body changes nothing
    patch_schema = spec["components"]["schemas"]["MonitorInputPatch"]
    assert "required" not in patch_schema
    assert "allOf" not in patch_schema  # cross-field rules apply to the patched monitor, not to the patch
    assert "checked on the result of the patch" in patch_schema["description"]
    assert not _nullable(patch_schema["properties"]["name"])  # null would clear a required field
    assert _nullable(patch_schema["properties"]["alertSlackUrl"])  # null clears an optional one
    bulk = _component(spec, _body(spec, "/api/v1/monitors/bulk", "patch"))
    assert bulk["properties"]["patch"]["allOf"] == [{"$ref": "#/components/schemas/MonitorInputPatch"}]
    assert bulk["required"] == ["ids", "patch"]
    assert bulk["properties"]["ids"]["minItems"] == 1


def test_bodies_and_replies_are_never_null(spec: Spec) -> None:
    for path, item in spec["paths"].items():
        for verb, op in item.items():
            body = op.get("requestBody")
            if verb in ("get", "head"):
                assert body is None, (verb, path)
            for content in (body or {}).get("content", {}).values():
                assert not _nullable(content["schema"]), (verb, path)
            for status, reply in op["responses"].items():
                for content in reply.get("content", {}).values():
                    assert not _nullable(content["schema"]), (verb, path, status)
    # Every field is in the path: no body at all.
    assert "requestBody" not in spec["paths"]["/api/v1/monitors/{id}/rotate-heartbeat-token"]["post"]
    assert "requestBody" not in spec["paths"]["/api/v1/monitors/{id}"]["delete"]
    monitor = spec["components"]["schemas"]["Monitor"]["properties"]
    for always in ("id", "name", "type", "status", "intervalSec", "createdAt", "updatedAt", "tags", "hasAlertSlack"):
        assert not _nullable(monitor[always]), always
    for sometimes in ("lastCheckedAt", "url", "port", "alertEmail"):
        assert _nullable(monitor[sometimes]), sometimes
    token = spec["components"]["schemas"]["Token"]["properties"]
    assert _nullable(token["expiresAt"])
    assert _nullable(token["lastUsedAt"])
    assert not _nullable(token["createdAt"])


def test_creates_link_to_what_they_create(spec: Spec) -> None:
    links = spec["paths"]["/api/v1/monitors"]["post"]["responses"]["201"]["links"]
    assert links["MonitorService_GetMonitor"]["parameters"] == {"id": "$response.body#/id"}
    assert {"MonitorService_UpdateMonitor", "MonitorService_DeleteMonitor", "MonitorService_GetMonitorSecrets"} <= set(
        links
    )
    assert "links" not in spec["paths"]["/api/v1/monitors/bulk"]["post"]["responses"]["201"]  # answers a list
    invite = spec["paths"]["/api/v1/me/invites"]["post"]["responses"]["201"]["links"]
    assert invite["MemberService_DeleteInvite"]["parameters"] == {"id": "$response.body#/id"}


def test_cross_field_rules_are_published(spec: Spec) -> None:
    monitor = spec["components"]["schemas"]["MonitorInput"]
    assert "url: Required for http, https, keyword and tls monitors" in monitor["description"]
    assert all(rule["if"] is True for rule in monitor["allOf"])  # {if: true, then: R} is R, typed plainly
    schema = _validator(spec, "MonitorInput")
    valid: list[dict[str, Any]] = [
        {"name": "a", "type": "https", "url": "https://example.com"},
        {"name": "a", "type": "tcp", "host": "db.example.com", "port": 5432},
        {"name": "a", "type": "heartbeat"},
        {"name": "a", "type": "http", "url": "http://a.example", "intervalSec": 30, "timeoutMs": 29999},
        {"name": "a", "type": "http", "url": "http://a.example", "intervalSec": 60, "timeoutMs": 30000},
        {"name": "a", "type": "https", "url": "https://a.example", "regions": ["weur", "local"]},
    ]
    invalid: list[dict[str, Any]] = [
        {},
        {"name": "a", "type": "https"},
        {"name": "a", "type": "https", "url": "http://example.com"},
        {"name": "a", "type": "tcp", "host": "db.example.com"},
        {"name": "a", "type": "keyword", "url": "https://a.example"},
        {"name": "a", "type": "http", "url": "http://a.example", "intervalSec": 30, "timeoutMs": 30000},
        {"name": "a", "type": "http", "url": "http://a.example", "intervalSec": 45},
        {"name": "a", "type": "dns", "host": "a.example", "regions": ["weur"]},
        {"name": "a", "type": "heartbeat", "alertTelegramChatId": "12345"},
        {"name": "a", "type": "https", "url": "https://user:pw@example.com"},
        {"name": "a", "type": "https", "url": "https://example.com", "bogus": 1},
    ]
    assert [b for b in valid if not schema.is_valid(b)] == []
    assert [b for b in invalid if schema.is_valid(b)] == []


def test_schema_and_server_agree(spec: Spec, owner: Persona) -> None:
    """The published schema and the server's validator accept and refuse the same bodies."""
    schema = _validator(spec, "MonitorInput")
    bodies: list[dict[str, Any]] = [
        {"name": "a", "type": "https", "url": "https://example.com"},
        {"name": "a", "type": "https"},
        {"name": "a", "type": "tcp", "host": "127.0.0.1", "port": 9},
        {"name": "a", "type": "tcp", "host": "127.0.0.1"},
        {"name": "a", "type": "http", "url": "http://127.0.0.1:9/", "intervalSec": 30, "timeoutMs": 30000},
        {"name": "a", "type": "http", "url": "http://127.0.0.1:9/", "intervalSec": 30, "timeoutMs": 29000},
        {"name": "a", "type": "ping", "host": "127.0.0.1", "regions": ["apac"]},
        {"name": "", "type": "heartbeat"},
        {"name": "a", "type": "heartbeat", "tags": ["UPPER"]},
        {"name": "a", "type": "heartbeat", "tags": ["ok-tag"], "graceSec": 86400},
    ]
    with owner.client() as c:
        verdicts = [(c.post("/api/v1/monitors", json=b).status_code, schema.is_valid(b)) for b in bodies]
    assert [(status == 201) == ok for status, ok in verdicts] == [True] * len(bodies), verdicts


@pytest.mark.parametrize(
    ("expression", "good", "bad"),
    [
        ("this.type in [1, 2] || this.regions.all(r, r == 1)", {"type": "tcp"}, {"type": "tcp", "regions": ["oc"]}),
        ("!has(this.port) || this.type == 4", {"type": "http"}, {"type": "http", "port": 80}),
        ("size(this.tags) <= 2", {"tags": ["a", "b"]}, {"tags": ["a", "b", "c"]}),
        ("this.name.startsWith('x-') ? '' : 'name starts with x-'", {"name": "x-1"}, {"name": "y"}),
        ("this.timeout_ms < this.interval_sec * 1000", {"intervalSec": 30, "timeoutMs": 1000}, {"timeoutMs": 1000}),
        ("'prod' in this.tags", {"tags": ["prod"]}, {"tags": []}),
        ("this.tags.exists(t, t == 'a')", {"tags": ["b", "a"]}, {"tags": ["b"]}),
        ("this.failure_threshold >= 3", {"failureThreshold": 3}, {"failureThreshold": 2}),
    ],
)
def test_cel_translation(expression: str, good: dict[str, Any], bad: dict[str, Any]) -> None:
    from observe.v1 import monitors_pb2

    schema = translate_rule(expression, CelScope.message(monitors_pb2.MonitorInput.DESCRIPTOR))
    assert schema is not None, expression
    check = jsonschema_rs.validator_for(schema)
    assert check.is_valid(good), schema
    assert not check.is_valid(bad), schema


def test_cel_outside_the_subset_is_prose_only() -> None:
    from observe.v1 import monitors_pb2

    scope = CelScope.message(monitors_pb2.MonitorInput.DESCRIPTOR)
    assert translate_rule("this.url.split(':').size() == 2", scope) is None
    assert translate_rule("this.host.isHostAndPort(true)", scope) is None
    assert translate_rule("this.timeout_ms < this.grace_sec", scope) is None  # no field with few values


def test_object_schemas_stay_plain_for_type_generators(spec: Spec) -> None:
    """Combinators at an object's top would become TypeScript intersections and unions
    (test_contract_tools.py compiles the generated types with tsc)."""
    for name in ("MonitorInput", "MonitorInputPatch", "CreateTokenRequest", "Monitor", "Token"):
        schema = spec["components"]["schemas"][name]
        assert schema["type"] == "object"
        assert not {"anyOf", "oneOf"} & set(schema), name  # would become TS unions
        assert all(set(rule) == {"if", "then"} for rule in schema.get("allOf", [])), name


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("npx") is None, reason="needs Node.js (npx) for openapi-typescript")
@SQLITE_ONLY  # the document is built from the protos alone: the same on every backend
def test_openapi_typescript_yields_real_types(server: Server, tmp_path: Path) -> None:
    with server.client() as c:
        (tmp_path / "openapi.json").write_text(json.dumps(c.get("/openapi.json").json()))
    subprocess.run(
        ["npx", "--yes", "openapi-typescript@7", "openapi.json", "-o", "api.ts"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=240,
    )
    ts = (tmp_path / "api.ts").read_text()
    block = re.search(r"CreateTokenResponse: \{(.*?)\n        \};", ts, re.S)
    assert block, ts[:2000]
    body = block.group(1)
    for line in ("id: number;", "name: string;", "prefix: string;", "token: string;", "expiresAt: string | null;"):
        assert line in body, body
    assert "unknown" not in body
    assert "any" not in re.sub(r"@description.*", "", body)
    # The monitor projection (the page's "monitor CRUD" shapes) is fully typed too.
    monitor = re.search(r"\n        Monitor: \{(.*?)\n        \};", ts, re.S)
    assert monitor, ts[:2000]
    shown = re.sub(r"/\*\*.*?\*/", "", monitor.group(1), flags=re.S)
    for line in ("id: number;", "hasAlertSlack: boolean;", "tags: string[];", 'status: "up" | "down"'):
        assert line in shown, shown
    assert 'expectedStatus: number[] | ("1xx" | "2xx"' in shown, shown
    assert "unknown" not in shown
    monitor_input = re.search(r"\n        MonitorInput: \{(.*?)\n        \};", ts, re.S)
    assert monitor_input, ts[:2000]
    shown = re.sub(r"/\*\*.*?\*/", "", monitor_input.group(1), flags=re.S)
    for line in ("name: string;", "intervalSec?: 30 | 60 | 300 | 900 | 1800 | 3600 | null;"):
        assert line in shown, shown


def test_docs_are_served_without_a_cdn(server: Server) -> None:
    with server.client() as c:
        page = c.get("/docs")
        alias = c.get("/docs/openapi")
        bundle = c.get("/docs/assets/swagger-ui-bundle.js")
        css = c.get("/docs/assets/swagger-ui.css")
    assert page.status_code == alias.status_code == 200
    assert "/openapi.json" in page.text
    assert not re.search(r"https?://", page.text)
    assert bundle.status_code == 200
    assert len(bundle.content) > 100_000
    assert css.status_code == 200


def test_every_documented_scope_mints(owner: Persona, spec: Spec) -> None:
    """The scope enum is not wider than what the server accepts."""
    allowed = spec["components"]["schemas"]["CreateTokenRequest"]["properties"]["scopes"]["items"]["enum"]
    with owner.client() as c:
        for part in (allowed[::2], allowed[1::2]):
            r = c.post("/api/v1/me/tokens", json={"name": f"all-{uuid.uuid4().hex[:6]}", "scopes": part})
            assert r.status_code == 201, r.text
        r = c.post("/api/v1/me/tokens", json={"name": "bad", "scopes": ["monitors:delete"]})
        assert r.status_code == 400, r.text


def _rules(text: str) -> Any:
    from buf.validate import validate_pb2
    from google.protobuf import text_format

    return text_format.Parse(text, validate_pb2.FieldRules())


@pytest.mark.parametrize(
    ("field", "rules", "good", "bad"),
    [
        (
            "name",
            "string: {min_len: 2, max_len: 5, prefix: 'a', suffix: 'z'}",
            ["abz", "a--z"],
            ["bz", "abzzzz", "az1"],
        ),
        ("name", "string: {len: 3, contains: '.', not_contains: ' '}", ["a.b"], ["ab", "a b", "a.bc"]),
        ("name", "string: {in: ['a', 'b'], not_in: ['b']}", ["a"], ["b", "c"]),
        ("name", "string: {const: 'k'}", ["k"], ["j"]),
        ("name", "string: {uuid: true}", ["5f0c9a4e-2b7d-4c1a-9e3f-0a1b2c3d4e5f"], ["", "nope"]),
        ("name", "string: {tuuid: true}", ["5f0c9a4e2b7d4c1a9e3f0a1b2c3d4e5f"], ["5f0c"]),
        ("name", "string: {email: true}", ["a@b.example"], ["", "a"]),
        ("name", "string: {well_known_regex: KNOWN_REGEX_HTTP_HEADER_NAME}", ["X-Env"], ["", "a b"]),
        ("name", "ignore: IGNORE_IF_ZERO_VALUE, string: {min_len: 3}", ["", "abc"], ["ab"]),
        ("name", "cel: {id: 'x', expression: \"this.endsWith('.com')\"}", ["a.com"], ["a.org"]),
        ("port", "int32: {gt: 0, lt: 10}", [1, 9], [0, 10]),
        ("port", "int32: {gt: 10, lt: 0}", [11, -1], [5, 0, 10]),
        ("port", "int32: {in: [1, 2], not_in: [2]}", [1], [2, 3]),
        ("port", "int32: {const: 7}", [7], [8]),
        ("type", "enum: {in: [1, 2]}", ["http", "https"], ["tcp"]),
        ("type", "enum: {defined_only: true, not_in: [1]}", ["https"], ["http", "nope"]),
        ("paused", "bool: {const: true}", [True], [False]),
    ],
)
def test_field_rule_keywords(field: str, rules: str, good: list[Any], bad: list[Any]) -> None:
    from observe.v1 import monitors_pb2

    from gateway.openapi import _Schemas
    from gateway.openapi_rules import value_rules

    fd = monitors_pb2.MonitorInput.DESCRIPTOR.fields_by_name[field]
    base = _Schemas({})._single(fd, "in")
    published = value_rules(fd, _rules(rules))
    check = jsonschema_rs.validator_for({"allOf": [base, published.schema]}, validate_formats=True)
    assert [v for v in good if not check.is_valid(v)] == [], published.schema
    assert [v for v in bad if check.is_valid(v)] == [], published.schema


def test_collection_time_and_required_rules() -> None:
    from observe.v1 import accounts_pb2, monitors_pb2, tokens_pb2

    from gateway.openapi_rules import collection_rules, is_required, value_rules

    tags = monitors_pb2.MonitorInput.DESCRIPTOR.fields_by_name["tags"]
    assert collection_rules(tags, _rules("repeated: {min_items: 1, max_items: 2, unique: true}"))[0] == {
        "minItems": 1,
        "maxItems": 2,
        "uniqueItems": True,
    }
    headers = monitors_pb2.MonitorInput.DESCRIPTOR.fields_by_name["headers"]
    assert collection_rules(headers, _rules("map: {min_pairs: 1, max_pairs: 2}"))[0] == {
        "minProperties": 1,
        "maxProperties": 2,
    }
    expires = tokens_pb2.CreateTokenRequest.DESCRIPTOR.fields_by_name["expires_at"]
    notes = value_rules(expires, _rules("timestamp: {gt_now: true, within: {seconds: 3600}}")).notes
    assert notes == ["in the future", "within 3600s of now"]
    email = accounts_pb2.LoginRequest.DESCRIPTOR.fields_by_name["email"]  # a string without presence
    assert is_required(email, _rules("string: {min_len: 1}"))  # an absent key reads as "", which fails
    assert not is_required(email, _rules("ignore: IGNORE_IF_ZERO_VALUE, string: {min_len: 1}"))
    assert not is_required(email, _rules("string: {max_len: 10}"))
    assert is_required(tags, _rules("repeated: {min_items: 1}"))
    assert not is_required(monitors_pb2.MonitorInput.DESCRIPTOR.fields_by_name["name"], _rules("string: {min_len: 1}"))
