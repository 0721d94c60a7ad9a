"""forgot-password, reset-password and change-password, with a real SMTP sink."""

from __future__ import annotations

import re

from tests.conftest import PASSWORD, Server, SmtpSink, register

NEW_PASSWORD = "a brand new passphrase"


def _reset_token(sink: SmtpSink, email: str) -> str:
    mail = sink.wait_for(email)
    body = mail.get_payload(decode=True).decode()  # type: ignore[union-attr]
    match = re.search(r"obsr_[A-Za-z0-9_-]{43}", body)
    assert match, body
    return match.group(0)


def test_forgot_password_answers_the_same_for_unknown_email(server: Server) -> None:
    persona = register(server)
    with server.client() as c:
        known = c.post("/api/v1/auth/forgot-password", json={"email": persona.email})
        unknown = c.post("/api/v1/auth/forgot-password", json={"email": "ghost-" + persona.email})
    assert known.status_code == unknown.status_code == 202
    assert known.content == unknown.content


def test_reset_token_works_once_and_ends_sessions(server: Server, smtp_sink: SmtpSink) -> None:
    persona = register(server)
    with server.client() as c:
        assert c.post("/api/v1/auth/forgot-password", json={"email": persona.email}).status_code == 202
        token = _reset_token(smtp_sink, persona.email)
        r = c.post("/api/v1/auth/reset-password", json={"token": token, "password": NEW_PASSWORD})
        assert r.status_code == 204, r.text
        again = c.post("/api/v1/auth/reset-password", json={"token": token, "password": NEW_PASSWORD + "!"})
        assert again.status_code == 401
        assert again.json()["code"] == "TOKEN_INVALID"
        assert c.post("/api/v1/auth/login", json={"email": persona.email, "password": PASSWORD}).status_code == 401
        assert c.post("/api/v1/auth/login", json={"email": persona.email, "password": NEW_PASSWORD}).status_code == 200
    with server.client(persona.session) as c:
        assert c.get("/api/v1/me").json()["code"] == "TOKEN_INVALID"
    # PATs are not sessions: they keep working.
    with persona.client() as c:
        assert c.get("/api/v1/me").status_code == 200


def test_change_password_checks_the_current_one(server: Server) -> None:
    persona = register(server)
    with server.client(persona.session) as c:
        wrong = c.post(
            "/api/v1/me/change-password", json={"currentPassword": "not it at all", "newPassword": NEW_PASSWORD}
        )
        assert wrong.status_code == 401
        assert wrong.json()["code"] == "PASSWORD_INVALID"
        ok = c.post("/api/v1/me/change-password", json={"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD})
        assert ok.status_code == 204
        # The calling session survives; the password changed.
        assert c.get("/api/v1/me").status_code == 200
        assert c.post("/api/v1/auth/login", json={"email": persona.email, "password": NEW_PASSWORD}).status_code == 200


def test_change_password_signs_out_other_sessions(server: Server) -> None:
    persona = register(server)
    with server.client() as c:
        other = c.post("/api/v1/auth/login", json={"email": persona.email, "password": PASSWORD}).json()["sessionToken"]
    with server.client(persona.session) as c:
        r = c.post("/api/v1/me/change-password", json={"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD})
        assert r.status_code == 204
    with server.client(other) as c:
        assert c.get("/api/v1/me").status_code == 401


def test_reset_token_expires_after_an_hour(server: Server, smtp_sink: SmtpSink) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from core.storage import tables as t
    from core.tokens.secrets import token_hash

    persona = register(server)
    with server.client() as c:
        assert c.post("/api/v1/auth/forgot-password", json={"email": persona.email}).status_code == 202
        token = _reset_token(smtp_sink, persona.email)
        an_hour_ago = datetime.now(UTC) - timedelta(hours=1, seconds=1)
        server.sql(
            update(t.password_resets)
            .where(t.password_resets.c.token_hash == token_hash(token))
            .values(expires_at=an_hour_ago)
        )
        r = c.post("/api/v1/auth/reset-password", json={"token": token, "password": NEW_PASSWORD})
    assert r.status_code == 401
    assert r.json()["code"] == "TOKEN_EXPIRED"
