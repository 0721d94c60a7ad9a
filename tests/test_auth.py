"""POST /auth/register, /auth/login, /auth/logout."""

from __future__ import annotations

import re
import uuid

from tests.conftest import PASSWORD, Server, register


def test_it_registers_an_owner_with_a_session(server: Server) -> None:
    email = f"Reg-{uuid.uuid4().hex[:8]}@Example.com"
    with server.client() as c:
        r = c.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD, "orgName": "Acme"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"user", "org", "role", "sessionToken", "expiresAt"}
    assert body["user"]["email"] == email.lower()
    assert isinstance(body["user"]["id"], int)
    assert body["org"]["name"] == "Acme"
    assert body["role"] == "owner"
    assert re.fullmatch(r"obss_[A-Za-z0-9_-]{43}", body["sessionToken"])
    cookie = r.headers["set-cookie"]
    assert f"observe_session={body['sessionToken']}" in cookie
    assert "HttpOnly" in cookie


def test_it_refuses_a_taken_email(server: Server) -> None:
    persona = register(server)
    with server.client() as c:
        r = c.post("/api/v1/auth/register", json={"email": persona.email.upper(), "password": PASSWORD})
    assert r.status_code == 409
    assert r.json()["code"] == "CONFLICT"


def test_it_validates_register_fields(server: Server) -> None:
    with server.client() as c:
        r = c.post("/api/v1/auth/register", json={"email": "not-an-email", "password": "short"})
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == "VALIDATION_FAILED"
    assert {(f["path"], f["code"]) for f in body["fields"]} == {
        ("email", "invalid_string"),
        ("password", "too_small"),
    }


def test_login_returns_a_working_session_and_cookie(server: Server) -> None:
    persona = register(server)
    with server.client() as c:
        r = c.post("/api/v1/auth/login", json={"email": persona.email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        session = r.json()["sessionToken"]
        assert r.json()["user"]["id"] == persona.user_id
        # The cookie alone authenticates (the client keeps it).
        me = c.get("/api/v1/me")
        assert me.status_code == 200
        assert me.json()["user"]["id"] == persona.user_id
    with server.client(session) as c:
        assert c.get("/api/v1/me").json()["user"]["email"] == persona.email


def test_login_answers_alike_for_unknown_email_and_wrong_password(server: Server) -> None:
    persona = register(server)
    with server.client() as c:
        wrong = c.post("/api/v1/auth/login", json={"email": persona.email, "password": "wrong password!"})
        unknown = c.post("/api/v1/auth/login", json={"email": "nobody-" + persona.email, "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"error": "email or password is wrong", "code": "INVALID_CREDENTIALS"}


def test_logout_ends_the_session(server: Server) -> None:
    persona = register(server)
    with server.client(persona.session) as c:
        r = c.post("/api/v1/auth/logout")
        assert r.status_code == 204
        assert "Max-Age=0" in r.headers["set-cookie"]
        again = c.get("/api/v1/me")
    assert again.status_code == 401
    assert again.json()["code"] == "TOKEN_INVALID"


def test_login_rehashes_a_password_hashed_with_old_parameters(server: Server) -> None:
    from argon2 import PasswordHasher
    from sqlalchemy import select, update

    from core.storage import tables as t

    persona = register(server)
    weak = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1).hash(PASSWORD)
    server.sql(update(t.users).where(t.users.c.id == persona.user_id).values(password_hash=weak))
    with server.client() as c:
        assert c.post("/api/v1/auth/login", json={"email": persona.email, "password": PASSWORD}).status_code == 200
    stored = server.sql(select(t.users.c.password_hash).where(t.users.c.id == persona.user_id))[0][0]
    assert stored != weak
    # The server hashes at the suite's cost (conftest: OBSERVE_INSECURE_TEST_PASSWORD_HASHING).
    from core.accounts.passwords import cheap_hasher

    assert not cheap_hasher().check_needs_rehash(stored)
    with server.client() as c:
        assert c.post("/api/v1/auth/login", json={"email": persona.email, "password": PASSWORD}).status_code == 200
