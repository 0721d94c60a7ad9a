"""The API page's PAT curl examples, run verbatim with curl (host and the
placeholder tokens swapped), give the documented statuses and shapes."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess

import pytest

from tests.conftest import Persona

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")

# Copied from ../shared/spec/24observe-api.txt ("Mint a PAT", list, revoke).
MINIMAL = """curl -X POST https://api.24observe.com/api/v1/me/tokens \\
  -H 'Authorization: Bearer obs_existing...' \\
  -H 'Content-Type: application/json' \\
  -d '{"name":"aeoniti-bot","expiresAt":"2027-01-01T00:00:00Z"}'"""

SCOPED = """curl -X POST https://api.24observe.com/api/v1/me/tokens \\
  -H 'Authorization: Bearer obs_existing...' \\
  -H 'Content-Type: application/json' \\
  -d '{
    "name": "aeoniti-bot",
    "scopes": ["monitors:write", "logs:write"],
    "dailyMutationLimit": 500,
    "dailyLogBytesLimit": 104857600
  }'"""

LIST = """curl https://api.24observe.com/api/v1/me/tokens -H 'Authorization: Bearer obs_...'"""

REVOKE = """curl -X DELETE https://api.24observe.com/api/v1/me/tokens/42 \\
  -H 'Authorization: Bearer obs_...'"""


def run(example: str, persona: Persona, **swap: str) -> tuple[int, str]:
    command = example.replace("https://api.24observe.com", persona.server.base_url)  # type: ignore[attr-defined]
    command = command.replace("obs_existing...", persona.pat).replace("obs_...", persona.pat)
    for old, new in swap.items():
        command = command.replace(old, new)
    out = subprocess.run(
        ["bash", "-c", command + " -s -w '\\n%{http_code}'"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    body, _, status = out.rpartition("\n")
    return int(status), body


def test_the_page_examples_run_verbatim(owner: Persona) -> None:
    status, body = run(MINIMAL, owner)
    assert status == 201
    minimal = json.loads(body)
    assert list(minimal) == ["id", "name", "prefix", "token", "expiresAt", "createdAt"]
    assert minimal["expiresAt"] == "2027-01-01T00:00:00Z"
    assert re.fullmatch(r"obs_[A-Za-z0-9_-]{43}", minimal["token"])

    status, body = run(SCOPED, owner)
    assert status == 201
    scoped = json.loads(body)

    status, body = run(LIST, owner)
    assert status == 200
    listed = {t["id"]: t for t in json.loads(body)["tokens"]}
    assert minimal["token"] not in body
    assert listed[scoped["id"]]["scopes"] == ["monitors:write", "logs:write"]
    assert listed[scoped["id"]]["dailyMutationLimit"] == 500
    assert listed[scoped["id"]]["dailyLogBytesLimit"] == 104857600

    status, body = run(REVOKE, owner, **{"/tokens/42": f"/tokens/{scoped['id']}"})
    assert (status, body) == (204, "")
    status, body = run(LIST, dataclasses.replace(owner, pat=scoped["token"]))
    assert status == 401
    assert json.loads(body)["code"] == "TOKEN_INVALID"
