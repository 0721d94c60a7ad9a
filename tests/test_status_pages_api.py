"""Status pages over REST and gRPC, the authed side: CRUD with groups of the
caller's monitors only, slug and custom-domain conflicts, PATCH as a merge,
roles and audit entries, the password (Argon2id, never shown), subscribers
listed and deleted; and the password flow of the public side end to end —
JSON, feed and HTML all answer PASSWORD_REQUIRED until an unlock, whose
token works as header and as cookie, and a new password locks it out."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import httpx
import pytest
from observe.v1 import status_pages_pb2, status_pages_pb2_grpc

from tests.conftest import Persona, Server, Team

API = "/api/v1/status-pages"
PUBLIC = "/api/v1/status-pages/public"


def slug() -> str:
    return f"page-{uuid.uuid4().hex[:10]}"


def monitor(c: httpx.Client, name: str = "api") -> int:
    r = c.post("/api/v1/monitors", json={"name": name, "type": "heartbeat"})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def page_body(monitor_ids: list[int], **extra: Any) -> dict[str, Any]:
    return {
        "name": "Acme status",
        "slug": slug(),
        "groups": [{"name": "Core", "components": [{"monitorId": m} for m in monitor_ids]}],
        **extra,
    }


def create(c: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    r = c.post(API, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_crud_groups_conflicts_and_audit(owner: Persona, outsider: Persona) -> None:
    with outsider.client() as c:
        foreign = monitor(c, "theirs")
    with owner.client() as c:
        a, b = monitor(c, "api"), monitor(c, "web")
        domain = f"status-{uuid.uuid4().hex[:8]}.example.com"
        body = page_body([a], customDomain=domain.upper(), description="All of Acme")
        body["groups"].append({"name": "Edge", "components": [{"monitorId": b, "displayName": "Website"}]})
        page = create(c, body)
        shown = ("name", "slug", "customDomain", "published", "historyDays", "showMaintenance")
        assert {k: page[k] for k in shown} == {
            "name": "Acme status", "slug": body["slug"], "customDomain": domain, "published": True,
            "historyDays": 90, "showMaintenance": True,
        }  # fmt: skip
        assert page["groups"] == [
            {"name": "Core", "components": [{"monitorId": a, "displayName": None}]},
            {"name": "Edge", "components": [{"monitorId": b, "displayName": "Website"}]},
        ]
        assert (page["passwordProtected"], page["subscriberCount"], page["accentColor"]) == (False, 0, None)
        assert page["url"] == f"http://{domain}/"
        assert c.get(f"{API}/{page['id']}").json() == page

        # Unique slug and domain, across organisations too.
        taken = c.post(API, json=page_body([a], slug=body["slug"]))
        assert (taken.status_code, taken.json()["code"]) == (409, "CONFLICT")
        taken = c.post(API, json=page_body([a], customDomain=domain))
        assert (taken.status_code, taken.json()["code"]) == (409, "CONFLICT")
        # Another organisation's monitor is not found, as any of its ids.
        theirs = c.post(API, json=page_body([a, foreign]))
        assert (theirs.status_code, theirs.json()["code"]) == (404, "NOT_FOUND")
        bad = c.post(API, json={**page_body([a]), "slug": "No Caps!", "historyDays": 3, "accentColor": "red"})
        assert bad.status_code == 400, bad.text
        assert {f["path"] for f in bad.json()["fields"]} == {"slug", "historyDays", "accentColor"}
        reserved = c.post(API, json=page_body([a], slug="unsubscribe"))
        assert [f["path"] for f in reserved.json()["fields"]] == ["slug"]

        # PATCH merges; groups are replaced whole; null clears.
        second = create(c, page_body([b]))
        patched = c.patch(
            f"{API}/{page['id']}", json={"description": None, "historyDays": 30, "accentColor": "#1f6feb"}
        )
        assert patched.status_code == 200, patched.text
        p = patched.json()
        assert (p["description"], p["historyDays"], p["accentColor"], p["groups"]) == (
            None,
            30,
            "#1f6feb",
            page["groups"],
        )
        regrouped = c.patch(f"{API}/{page['id']}", json={"groups": [{"name": "All", "components": [{"monitorId": b}]}]})
        assert regrouped.json()["groups"] == [{"name": "All", "components": [{"monitorId": b, "displayName": None}]}]
        clash = c.patch(f"{API}/{second['id']}", json={"slug": body["slug"]})
        assert clash.json()["code"] == "CONFLICT"
        bad_patch = c.patch(f"{API}/{second['id']}", json={"name": "   "})
        assert [f["path"] for f in bad_patch.json()["fields"]] == ["name"]
        foreign_patch = c.patch(
            f"{API}/{second['id']}", json={"groups": [{"name": "x", "components": [{"monitorId": foreign}]}]}
        )
        assert foreign_patch.json()["code"] == "NOT_FOUND"

        # A deleted monitor leaves the page.
        assert c.delete(f"/api/v1/monitors/{b}").status_code == 204
        assert c.get(f"{API}/{page['id']}").json()["groups"] == [{"name": "All", "components": []}]

        listed = c.get(API, params={"limit": 1}).json()
        rest = c.get(API, params={"limit": 1, "cursor": listed["nextCursor"]}).json()
        assert [x["id"] for x in listed["pages"] + rest["pages"]] == [page["id"], second["id"]]

    with outsider.client() as c:
        assert c.get(f"{API}/{page['id']}").json()["code"] == "NOT_FOUND"
        assert c.get(API).json()["pages"] == []
        assert c.delete(f"{API}/{page['id']}").json()["code"] == "NOT_FOUND"

    with owner.client() as c:
        assert c.delete(f"{API}/{second['id']}").status_code == 204
        assert c.get(f"{API}/{second['id']}").json()["code"] == "NOT_FOUND"
        assert c.get(f"{PUBLIC}/{second['slug']}").json()["code"] == "NOT_FOUND"
        entries = c.get("/api/v1/audit-logs").json()["entries"]
    actions = [(e["action"], e["resource"]) for e in entries if "STATUS_PAGE" in e["action"]]
    assert ("CREATE_STATUS_PAGE", f"status-page:{page['id']}") in actions
    assert ("UPDATE_STATUS_PAGE", f"status-page:{page['id']}") in actions
    assert actions[0] == ("DELETE_STATUS_PAGE", f"status-page:{second['id']}")


def test_roles(team: Team) -> None:
    with team.owner.client() as c:
        m = monitor(c)
    body = page_body([m])
    for persona in (team.member, team.viewer):
        with persona.client() as c:
            assert c.post(API, json=body).json()["code"] == "ROLE_INSUFFICIENT"
    with team.admin.client() as c:
        page = create(c, body)
    for persona in (team.member, team.viewer):
        with persona.client() as c:
            assert c.get(f"{API}/{page['id']}").status_code == 200
            assert c.patch(f"{API}/{page['id']}", json={"name": "x"}).json()["code"] == "ROLE_INSUFFICIENT"
            assert c.get(f"{API}/{page['id']}/subscribers").json()["code"] == "ROLE_INSUFFICIENT"
    narrow = team.owner.mint(scopes=["status-pages:read"])["token"]
    with team.owner.client(narrow) as c:
        assert c.get(API).status_code == 200
        assert c.post(API, json=page_body([m])).json()["code"] == "PAT_SCOPE_INSUFFICIENT"
        assert c.get(f"{API}/{page['id']}/subscribers").json()["code"] == "PAT_SCOPE_INSUFFICIENT"


def _locked_everywhere(server: Server, page: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    with server.client() as anon:
        for path in (f"{PUBLIC}/{page['slug']}", f"{PUBLIC}/{page['slug']}/feed.xml", f"/status/{page['slug']}"):
            r = anon.get(path, headers=headers or {})
            assert r.status_code == 401, (path, r.text)
            assert "PASSWORD_REQUIRED" in (r.headers.get("x-error-code", "") + r.text), path
        r = anon.post(f"{PUBLIC}/{page['slug']}/subscribe", json={"email": "x@example.com"}, headers=headers or {})
        assert r.json()["code"] == "PASSWORD_REQUIRED"


def test_password_flow_over_json_feed_and_html(server: Server, owner: Persona) -> None:
    with owner.client() as c:
        page = create(c, page_body([monitor(c)]))
        short = c.put(f"{API}/{page['id']}/password", json={"password": "short"})
        assert [f["path"] for f in short.json()["fields"]] == ["password"]
        r = c.put(f"{API}/{page['id']}/password", json={"password": "open sesame"})
        assert r.status_code == 200, r.text
        assert r.json()["passwordProtected"] is True
        assert "sesame" not in r.text
        audit = c.get("/api/v1/audit-logs").json()["entries"][0]
        assert audit["action"] == "SET_STATUS_PAGE_PASSWORD"
        assert "open sesame" not in str(audit)

    _locked_everywhere(server, page)
    html = server.client().get(f"/status/{page['slug']}")
    assert '<form method="post"' in html.text
    assert 'name="password"' in html.text
    assert html.headers["content-type"].startswith("text/html")

    with server.client() as anon:
        wrong = anon.post(f"{PUBLIC}/{page['slug']}/unlock", json={"password": "open says me"})
        assert (wrong.status_code, wrong.json()["code"]) == (401, "PASSWORD_INVALID")
        ok = anon.post(f"{PUBLIC}/{page['slug']}/unlock", json={"password": "open sesame"})
        assert ok.status_code == 200, ok.text
        token = ok.json()["accessToken"]
        assert ok.json()["expiresAt"]
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "observe_status_page=" in cookie
    # The token as a header: JSON and feed. The cookie: all three, HTML included.
    with server.client() as anon:
        hdr = {"x-status-page-token": token}
        assert anon.get(f"{PUBLIC}/{page['slug']}", headers=hdr).json()["page"]["name"] == "Acme status"
        assert anon.get(f"{PUBLIC}/{page['slug']}/feed.xml", headers=hdr).status_code == 200
        forged = {"x-status-page-token": token[:-2] + ("AA" if not token.endswith("AA") else "BB")}
        assert anon.get(f"{PUBLIC}/{page['slug']}", headers=forged).status_code == 401
        jar = {"cookie": f"observe_status_page={token}"}
        for path in (f"{PUBLIC}/{page['slug']}", f"{PUBLIC}/{page['slug']}/feed.xml", f"/status/{page['slug']}"):
            r = anon.get(path, headers=jar)
            assert r.status_code == 200, (path, r.text)
            assert r.headers["cache-control"] == "private, no-store"
        assert "Acme status" in anon.get(f"/status/{page['slug']}", headers=jar).text
        # The HTML form: a wrong password is the form again (401), the right one a redirect with the cookie.
        form = anon.post(f"/status/{page['slug']}/unlock", data={"password": "nope"})
        assert form.status_code == 401
        assert 'name="password"' in form.text
        form = anon.post(f"/status/{page['slug']}/unlock", data={"password": "open sesame"})
        assert form.status_code == 303, form.text
        assert form.headers["location"] == f"/status/{page['slug']}"
        assert "observe_status_page=" in form.headers["set-cookie"]

    # A new password locks out every earlier unlock; clearing it opens the page.
    with owner.client() as c:
        assert c.put(f"{API}/{page['id']}/password", json={"password": "another secret"}).status_code == 200
    _locked_everywhere(server, page, {"x-status-page-token": token})
    with owner.client() as c:
        cleared = c.put(f"{API}/{page['id']}/password", json={"password": None})
        assert cleared.json()["passwordProtected"] is False
    with server.client() as anon:
        assert anon.get(f"{PUBLIC}/{page['slug']}").status_code == 200
        assert anon.get(f"/status/{page['slug']}").status_code == 200


def test_grpc_takes_the_token_from_metadata(server: Server, owner: Persona) -> None:
    with owner.client() as c:
        page = create(c, page_body([monitor(c)]))
        c.put(f"{API}/{page['id']}/password", json={"password": "grpc secret"})
    with server.client() as anon:
        token = anon.post(f"{PUBLIC}/{page['slug']}/unlock", json={"password": "grpc secret"}).json()["accessToken"]
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = status_pages_pb2_grpc.PublicStatusPageServiceStub(channel)
        request = status_pages_pb2.GetPublicStatusPageRequest(slug=page["slug"], access_token=token)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetPublicStatusPage(request)  # in the message, not the metadata: not taken
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = stub.GetPublicStatusPage(
            status_pages_pb2.GetPublicStatusPageRequest(slug=page["slug"]),
            metadata=[("x-status-page-token", token)],
        )
        assert reply.page.name == "Acme status"
        assert not reply.HasField("prepared")  # gRPC gets the message itself


def test_subscribers_listed_and_deleted(server: Server, owner: Persona, outsider: Persona) -> None:
    with owner.client() as c:
        page = create(c, page_body([monitor(c)]))
    address = f"sub-{uuid.uuid4().hex[:8]}@example.com"
    with server.client() as anon:
        r = anon.post(f"{PUBLIC}/{page['slug']}/subscribe", json={"email": address})
        assert (r.status_code, r.json()) == (202, {"pending": True})
    with owner.client() as c:
        subs = c.get(f"{API}/{page['id']}/subscribers").json()["subscribers"]
        assert [(s["email"], s["confirmed"]) for s in subs] == [(address, False)]
        assert c.get(f"{API}/{page['id']}").json()["subscriberCount"] == 0  # confirmed ones only
    with outsider.client() as c:
        assert c.delete(f"{API}/{page['id']}/subscribers/{subs[0]['id']}").json()["code"] == "NOT_FOUND"
    with owner.client() as c:
        assert c.delete(f"{API}/{page['id']}/subscribers/{subs[0]['id']}").status_code == 204
        assert c.delete(f"{API}/{page['id']}/subscribers/{subs[0]['id']}").json()["code"] == "NOT_FOUND"
        assert c.get(f"{API}/{page['id']}/subscribers").json()["subscribers"] == []
        entry = c.get("/api/v1/audit-logs").json()["entries"][0]
        assert entry["action"] == "DELETE_STATUS_PAGE_SUBSCRIBER"
        assert address not in str(entry)
