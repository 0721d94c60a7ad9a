"""Invites say nothing about addresses outside the organisation, and
without SMTP every mail (invite, reset) is in the server log with its link,
so a self-hoster can finish the flow (ARCHITECTURE.md, CONTRACT.md)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, Persona, Server, SmtpSink, invite_token, register, start_server, stop_server
from tests.test_members import register_raw


def test_inviting_an_address_with_an_account_elsewhere_answers_as_for_any_other(
    server: Server, smtp_sink: SmtpSink, owner: Persona, outsider: Persona
) -> None:
    fresh = f"fresh-{uuid.uuid4().hex[:8]}@example.com"
    with owner.client() as c:
        taken = c.post("/api/v1/me/invites", json={"email": outsider.email})
        new = c.post("/api/v1/me/invites", json={"email": fresh})
    assert (taken.status_code, new.status_code) == (201, 201), taken.text
    assert set(taken.json()) == set(new.json())
    assert (taken.json()["email"], taken.json()["role"]) == (outsider.email, "member")


def test_an_address_with_an_account_cannot_accept_an_invite_yet(
    server: Server, smtp_sink: SmtpSink, owner: Persona, outsider: Persona
) -> None:
    with owner.client() as c:
        assert c.post("/api/v1/me/invites", json={"email": outsider.email}).status_code == 201
    token = invite_token(smtp_sink, outsider.email)
    r = register_raw(server, outsider.email, token)
    assert (r.status_code, r.json()["code"]) == (409, "CONFLICT")
    assert "already has an account" in r.json()["error"]
    assert "one organisation" in r.json()["error"]
    with outsider.client() as c:  # still where they were, with their role
        me = c.get("/api/v1/me").json()
    assert me["org"]["id"] == outsider.org_id
    with owner.client() as c:  # and the invite is still open, to be withdrawn
        assert [i["email"] for i in c.get("/api/v1/me/invites").json()["invites"]] == [outsider.email]


def test_members_and_open_invites_of_the_same_organisation_still_conflict(
    server: Server, smtp_sink: SmtpSink, owner: Persona
) -> None:
    with owner.client() as c:
        member = c.post("/api/v1/me/invites", json={"email": owner.email})
        assert c.post("/api/v1/me/invites", json={"email": "twice-" + owner.email}).status_code == 201
        twice = c.post("/api/v1/me/invites", json={"email": "twice-" + owner.email})
    assert (member.status_code, twice.status_code) == (409, 409)


@pytest.fixture(scope="module")
def mailless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server without OBSERVE_SMTP_HOST (mail goes to its log)."""
    srv = start_server(Path(tmp_path_factory.mktemp("mailless")), backend="sqlite")
    assert "OBSERVE_SMTP_HOST" not in srv.env
    yield srv
    stop_server(srv)


def _logged(server: Server, pattern: str, timeout: float = 10) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, server.log())
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not in the log:\n{server.log()[-3000:]}")


def test_without_smtp_the_invite_is_in_the_log_and_can_be_accepted(mailless: Server) -> None:
    owner = register(mailless)
    email = f"logged-{uuid.uuid4().hex[:8]}@example.com"
    with owner.client() as c:
        assert c.post("/api/v1/me/invites", json={"email": email, "role": "viewer"}).status_code == 201
    link = _logged(mailless, rf"To: {re.escape(email)}\n(?:.*\n)*?Join: (\S+/join\?token=(obsi_[A-Za-z0-9_-]{{43}}))")
    assert link.group(1).startswith(mailless.base_url)
    joined = register(mailless, email=email, inviteToken=link.group(2))
    assert (joined.org_id, joined.extra["role"]) == (owner.org_id, "viewer")


def test_without_smtp_the_reset_link_is_in_the_log_and_works(mailless: Server) -> None:
    persona = register(mailless)
    with mailless.client() as c:
        assert c.post("/api/v1/auth/forgot-password", json={"email": persona.email}).status_code == 202
        found = _logged(mailless, rf"To: {re.escape(persona.email)}\n(?:.*\n)*?Link: \S+reset-password\?token=(\S+)")
        r = c.post("/api/v1/auth/reset-password", json={"token": found.group(1), "password": PASSWORD + "!"})
        assert r.status_code in (200, 204), r.text
        login = c.post("/api/v1/auth/login", json={"email": persona.email, "password": PASSWORD + "!"})
    assert login.status_code == 200, login.text
