"""/openapi.json is valid OpenAPI 3.1 with real schemas; /docs is served locally."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from tests.conftest import Server


def test_it_is_valid_openapi_3_1(server: Server) -> None:
    with server.client() as c:
        spec = c.get("/openapi.json").json()
    assert spec["openapi"] == "3.1.0"
    validate(spec)


def test_mint_schema_is_real(server: Server) -> None:
    with server.client() as c:
        spec = c.get("/openapi.json").json()
    op = spec["paths"]["/api/v1/me/tokens"]["post"]
    assert op["summary"].startswith("Mints a PAT")
    assert op["x-observe-rule"]["scope"] == "tokens:write"
    ref = op["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert schema["required"] == ["id", "name", "prefix", "token", "expiresAt", "createdAt"]
    assert schema["properties"]["id"]["type"] == "integer"
    assert schema["additionalProperties"] is False
    assert "description" in schema["properties"]["token"]
    request = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "required" not in spec["components"]["schemas"][request]
    assert spec["paths"]["/api/v1/auth/login"]["post"]["security"] == []


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("npx") is None, reason="needs Node.js (npx) for openapi-typescript")
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
