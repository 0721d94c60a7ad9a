"""Schemathesis hooks for tests/test_contract_tools.py (loaded by the CLI
through ``SCHEMATHESIS_HOOKS=tests.contract_hooks``; not a test module).

Authentication: every request carries a PAT with scope ``*``. The run may
revoke it (``DELETE /me/tokens/{id}`` with an id it listed) like any client
could, so the PAT is minted from a session that schemathesis never sees, and
minted again when a reply is 401 (schemathesis then replays the request).

Time: a rule relative to now ("in the future") is prose in the document, so
a generated past time for such a field is moved into the future.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import schemathesis


@schemathesis.auth(refresh_interval=3600, retry_on=[401])
class MintedPat:
    """A fresh ``*`` PAT of the contract test's user, minted with its session."""

    def get(self, case: Any, context: Any) -> str:
        r = httpx.post(
            os.environ["OBSERVE_CONTRACT_BASE_URL"] + "/api/v1/me/tokens",
            json={"name": f"schemathesis-{uuid.uuid4().hex[:8]}"},
            headers={"authorization": f"Bearer {os.environ['OBSERVE_CONTRACT_SESSION']}"},
            timeout=30,
        )
        r.raise_for_status()
        return str(r.json()["token"])

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def _in_the_future(operation: Any) -> set[str]:
    """Body fields whose rule is "in the future" (published as prose: JSON Schema cannot say it)."""
    raw = operation.definition.raw
    ref = raw.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
    if not isinstance(ref, str):
        return set()
    component = operation.schema.raw_schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return {
        name
        for name, prop in component.get("properties", {}).items()
        if "in the future" in str(prop.get("description", ""))
    }


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    """A generated time that the rule "in the future" refuses only because of when the run happens
    moves a year past now; anything else (wrong type, bad format) is left to be tested."""
    if not isinstance(case.body, dict):
        return case
    for name in _in_the_future(case.operation):
        value = case.body.get(name)
        if not isinstance(value, str):
            continue
        try:
            when = datetime.fromisoformat(value.replace("z", "Z"))
        except ValueError:
            continue
        if when.tzinfo is not None and when <= datetime.now(UTC) + timedelta(minutes=5):
            case.body[name] = (datetime.now(UTC) + timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return case
