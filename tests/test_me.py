"""GET /api/v1/me."""

from __future__ import annotations

from tests.conftest import Persona


def test_it_shows_user_org_role_plan_and_usage(owner: Persona) -> None:
    with owner.client() as c:
        r = c.get("/api/v1/me")
    assert r.status_code == 200
    assert r.json() == {
        "user": {"id": owner.user_id, "email": owner.email, "name": "Test User"},
        "org": {"id": owner.org_id, "name": "Test User's organisation"},
        "role": "owner",
        "plan": {"name": "unlimited", "limits": {"monitors": None, "monthlyChecks": None, "monthlyLogBytes": None}},
        "usage": {"monitors": 0, "monthlyChecks": 0, "monthlyLogBytes": 0},
    }


def test_it_requires_authentication(owner: Persona) -> None:
    with owner.server.client() as c:
        r = c.get("/api/v1/me")
    assert r.status_code == 401
    assert r.json()["code"] == "AUTH_REQUIRED"
