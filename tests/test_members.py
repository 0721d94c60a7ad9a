"""Members, roles, invites: GET/PATCH/DELETE /me/members, /me/invites."""

from __future__ import annotations

import uuid

import httpx

from tests.conftest import PASSWORD, Persona, Server, SmtpSink, Team, invite_token, register


def test_invited_users_join_with_their_role(team: Team) -> None:
    assert team.admin.org_id == team.member.org_id == team.viewer.org_id == team.owner.org_id
    assert [team.admin.extra["role"], team.member.extra["role"], team.viewer.extra["role"]] == [
        "admin",
        "member",
        "viewer",
    ]
    with team.owner.client() as c:
        members = c.get("/api/v1/me/members").json()["members"]
    assert [m["role"] for m in members] == ["owner", "admin", "member", "viewer"]
    assert {m["userId"] for m in members} == {p.user_id for p in team.by_role().values()}
    with team.member.client() as c:
        r = c.get("/api/v1/me/members")
    assert (r.status_code, r.json()["code"]) == (403, "ROLE_INSUFFICIENT")


def test_only_owners_change_roles(team: Team) -> None:
    with team.admin.client() as c:
        r = c.patch(f"/api/v1/me/members/{team.member.user_id}", json={"role": "admin"})
    assert (r.status_code, r.json()["code"]) == (403, "ROLE_INSUFFICIENT")
    with team.owner.client() as c:
        r = c.patch(f"/api/v1/me/members/{team.member.user_id}", json={"role": "admin"})
    assert r.status_code == 200
    assert r.json()["role"] == "admin"
    assert r.json()["userId"] == team.member.user_id
    with team.member.client() as c:
        assert c.get("/api/v1/me").json()["role"] == "admin"


def test_the_sole_owner_cannot_be_demoted_or_removed(team: Team) -> None:
    with team.owner.client() as c:
        demote = c.patch(f"/api/v1/me/members/{team.owner.user_id}", json={"role": "admin"})
        remove = c.delete(f"/api/v1/me/members/{team.owner.user_id}")
        assert (demote.status_code, demote.json()["code"]) == (409, "SOLE_OWNER")
        assert (remove.status_code, remove.json()["code"]) == (409, "SOLE_OWNER")
        assert c.patch(f"/api/v1/me/members/{team.admin.user_id}", json={"role": "owner"}).status_code == 200
        assert c.patch(f"/api/v1/me/members/{team.owner.user_id}", json={"role": "admin"}).status_code == 200


def test_a_removed_members_tokens_and_sessions_fail_at_once(team: Team) -> None:
    with team.member.client() as c:
        assert c.get("/api/v1/me").status_code == 200
    with team.admin.client() as c:
        owner_removal = c.delete(f"/api/v1/me/members/{team.owner.user_id}")
        assert (owner_removal.status_code, owner_removal.json()["code"]) == (403, "ROLE_INSUFFICIENT")
        assert c.delete(f"/api/v1/me/members/{team.member.user_id}").status_code == 204
    for token in (team.member.pat, team.member.session):
        with team.member.client(token) as c:
            r = c.get("/api/v1/me")
        assert (r.status_code, r.json()["code"]) == (401, "TOKEN_INVALID")


def test_other_orgs_members_are_not_found(team: Team, outsider: Persona) -> None:
    with outsider.client() as c:
        for r in (
            c.patch(f"/api/v1/me/members/{team.member.user_id}", json={"role": "viewer"}),
            c.delete(f"/api/v1/me/members/{team.member.user_id}"),
        ):
            assert (r.status_code, r.json()["code"]) == (404, "NOT_FOUND")


def test_invites_are_listed_deleted_and_single_use(server: Server, smtp_sink: SmtpSink, owner: Persona) -> None:
    ann, bob = f"ann-{uuid.uuid4().hex[:8]}@example.com", f"bob-{uuid.uuid4().hex[:8]}@example.com"
    with owner.client() as c:
        a = c.post("/api/v1/me/invites", json={"email": ann.capitalize().replace("example", "Example")}).json()
        b = c.post("/api/v1/me/invites", json={"email": bob, "role": "viewer"}).json()
        assert a["email"] == ann
        assert a["role"] == "member"
        again = c.post("/api/v1/me/invites", json={"email": ann})
        assert (again.status_code, again.json()["code"]) == (409, "CONFLICT")
        listed = c.get("/api/v1/me/invites").json()["invites"]
        assert [i["id"] for i in listed] == [b["id"], a["id"]]
        assert c.delete(f"/api/v1/me/invites/{b['id']}").status_code == 204
        assert c.delete(f"/api/v1/me/invites/{b['id']}").status_code == 404
    token = invite_token(smtp_sink, ann)
    wrong = register_raw(server, "someone-else@example.com", token)
    assert (wrong.status_code, wrong.json()["code"]) == (404, "NOT_FOUND")
    joined = register(server, email=ann, inviteToken=token)
    assert joined.org_id == owner.org_id
    reuse = register_raw(server, f"x{owner.user_id}@example.com", token)
    assert (reuse.status_code, reuse.json()["code"]) == (404, "NOT_FOUND")
    withdrawn = register_raw(server, bob, invite_token(smtp_sink, bob))
    assert withdrawn.status_code == 404


def register_raw(server: Server, email: str, token: str) -> httpx.Response:
    with server.client() as c:
        response: httpx.Response = c.post(
            "/api/v1/auth/register", json={"email": email, "password": PASSWORD, "inviteToken": token}
        )
    return response


def test_only_owners_invite_owners(team: Team) -> None:
    with team.admin.client() as c:
        r = c.post("/api/v1/me/invites", json={"email": "boss@example.com", "role": "owner"})
    assert (r.status_code, r.json()["code"]) == (403, "ROLE_INSUFFICIENT")


def test_webhook_secret_is_standard_stable_rotatable_and_audited(team: Team) -> None:
    import base64

    with team.owner.client() as c:
        first = c.get("/api/v1/me/webhook-secret").json()
        assert first["secret"].startswith("whsec_")
        assert len(base64.b64decode(first["secret"][6:])) == 32
        assert c.get("/api/v1/me/webhook-secret").json()["secret"] == first["secret"]
        rotated = c.post("/api/v1/me/webhook-secret/rotate").json()
        assert rotated["secret"] != first["secret"]
        assert c.get("/api/v1/me/webhook-secret").json()["secret"] == rotated["secret"]
        log = c.get("/api/v1/audit-logs").text
        reads = c.get("/api/v1/audit-logs", params={"action": "READ_WEBHOOK_SECRET"}).json()["entries"]
    assert len(reads) == 3
    assert first["secret"] not in log
    assert rotated["secret"] not in log
    with team.member.client() as c:
        assert c.get("/api/v1/me/webhook-secret").status_code == 403
