"""Maintenance windows over REST: CRUD with roles and audit entries, strict
validation (the schedule's fields named in errors), PATCH as a merge
re-checked whole, a weekly window keeping its local hour across a DST
change, covered monitors showing ``maintenance`` (by id, by tag, for all
monitors) and leaving it when the window goes, and maintenance time kept
out of the uptime rollups while its checks are still stored."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.conftest import Persona, Team
from tests.polling import wait_for
from tests.targets import Target, http_target

API = "/api/v1/maintenance-windows"


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def active_now(**body: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"name": "now", "startsAt": iso(now - timedelta(hours=1)), "endsAt": iso(now + timedelta(hours=1)), **body}


def monitor(c: httpx.Client, **body: Any) -> dict[str, Any]:
    r = c.post("/api/v1/monitors", json={"name": "hb", "type": "heartbeat", **body})
    assert r.status_code == 201, r.text
    return dict(r.json())


def status(c: httpx.Client, monitor_id: int) -> str:
    return str(c.get(f"/api/v1/monitors/{monitor_id}").json()["status"])


def fields(r: httpx.Response) -> list[tuple[str, str]]:
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "VALIDATION_FAILED"
    return [(f["path"], f["code"]) for f in r.json()["fields"]]


@pytest.fixture
def target() -> Iterator[Target]:
    with http_target() as tgt:
        yield tgt


def test_crud_paging_and_other_orgs(owner: Persona, outsider: Persona) -> None:
    start = datetime(2030, 1, 5, 22, 0, tzinfo=UTC)
    body = {"name": "  db upgrade ", "startsAt": iso(start), "endsAt": iso(start + timedelta(hours=2)), "tags": ["db"]}
    with owner.client() as c:
        r = c.post(API, json=body)
        assert r.status_code == 201, r.text
        w = r.json()
        assert {k: w[k] for k in ("name", "description", "rrule", "timezone", "monitorIds", "tags", "allMonitors")} == {
            "name": "db upgrade", "description": None, "rrule": None, "timezone": "UTC", "monitorIds": [],
            "tags": ["db"], "allMonitors": False,
        }  # fmt: skip
        assert (w["status"], w["nextStartsAt"], w["nextEndsAt"]) == (
            "scheduled",
            iso(start),
            iso(start + timedelta(hours=2)),
        )
        assert c.get(f"{API}/{w['id']}").json() == w
        more = [c.post(API, json={**body, "name": f"w{i}"}).json()["id"] for i in range(2)]
        page = c.get(API, params={"limit": 2}).json()
        rest = c.get(API, params={"limit": 2, "cursor": page["nextCursor"]}).json()
        assert [x["id"] for x in page["windows"] + rest["windows"]] == [w["id"], *more]
        assert rest["nextCursor"] == ""
        assert fields(c.get(API, params={"cursor": "bm9wZQ"})) == [("cursor", "invalid_string")]

        patched = c.patch(f"{API}/{w['id']}", json={"description": "read-only meanwhile", "allMonitors": True})
        assert patched.status_code == 200, patched.text
        assert (patched.json()["description"], patched.json()["allMonitors"], patched.json()["tags"]) == (
            "read-only meanwhile", True, ["db"],
        )  # fmt: skip

    with outsider.client() as c:
        assert c.get(f"{API}/{w['id']}").status_code == 404
        assert c.patch(f"{API}/{w['id']}", json={"name": "mine"}).status_code == 404
        assert c.delete(f"{API}/{w['id']}").status_code == 404
        assert c.get(API).json()["windows"] == []

    with owner.client() as c:
        assert c.delete(f"{API}/{w['id']}").status_code == 204
        assert c.get(f"{API}/{w['id']}").json()["code"] == "NOT_FOUND"
        entries = c.get("/api/v1/audit-logs").json()["entries"]
    actions = [(e["action"], e["resource"]) for e in entries if "MAINTENANCE" in e["action"]]
    assert actions[0] == ("DELETE_MAINTENANCE_WINDOW", f"maintenance-window:{w['id']}")
    assert ("UPDATE_MAINTENANCE_WINDOW", f"maintenance-window:{w['id']}") in actions
    assert ("CREATE_MAINTENANCE_WINDOW", f"maintenance-window:{w['id']}") in actions


def test_roles_are_those_of_monitors(team: Team) -> None:
    body = active_now(allMonitors=True)
    with team.viewer.client() as c:
        assert c.post(API, json=body).json()["code"] == "ROLE_INSUFFICIENT"
    with team.member.client() as c:
        w = c.post(API, json=body).json()
        assert c.get(API).status_code == 200
        assert c.delete(f"{API}/{w['id']}").json()["code"] == "ROLE_INSUFFICIENT"
    with team.admin.client() as c:
        assert c.delete(f"{API}/{w['id']}").status_code == 204


def test_validation_names_the_field(owner: Persona, outsider: Persona) -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    base = {"name": "w", "startsAt": iso(start), "endsAt": iso(start + timedelta(hours=1)), "allMonitors": True}
    with outsider.client() as c:
        foreign = monitor(c)
    with owner.client() as c:
        mine = monitor(c)
        cases: list[tuple[dict[str, Any], list[tuple[str, str]]]] = [
            ({"endsAt": iso(start - timedelta(minutes=1))}, [("endsAt", "too_small")]),
            ({"endsAt": iso(start + timedelta(days=32))}, [("endsAt", "too_big")]),
            ({"allMonitors": False}, [("monitorIds", "required")]),
            ({"rrule": "FREQ=FORTNIGHTLY"}, [("rrule", "invalid_string")]),
            ({"rrule": "FREQ=MINUTELY"}, [("rrule", "invalid_string")]),
            ({"timezone": "Mars/Olympus_Mons"}, [("timezone", "invalid_string")]),
            ({"monitorIds": [mine["id"], foreign["id"], 10**15]}, [("monitorIds[1]", "custom"),
                                                                    ("monitorIds[2]", "custom")]),
            ({"colour": "red"}, [("colour", "unrecognized_keys")]),
        ]  # fmt: skip
        for change, expected in cases:
            assert fields(c.post(API, json={**base, **change})) == expected, change
        missing = fields(c.post(API, json={"allMonitors": True}))
        assert {"name", "startsAt", "endsAt"} <= {path for path, _ in missing}
        assert c.get(API).json()["windows"] == []


def test_patch_takes_a_subset_and_checks_the_merged_window(owner: Persona) -> None:
    start = datetime(2030, 3, 1, 10, tzinfo=UTC)
    body = {"name": "w", "startsAt": iso(start), "endsAt": iso(start + timedelta(hours=1)), "tags": ["edge"],
            "rrule": "FREQ=DAILY;COUNT=3"}  # fmt: skip
    with owner.client() as c:
        w = c.post(API, json=body).json()
        url = f"{API}/{w['id']}"
        assert fields(c.patch(url, json={"endsAt": iso(start - timedelta(hours=1))})) == [("endsAt", "too_small")]
        assert fields(c.patch(url, json={"tags": []})) == [("monitorIds", "required")]
        assert fields(c.patch(url, json={"rrule": "FREQ=DAILY;UNTIL=20300401"})) == [("rrule", "invalid_string")]
        assert fields(c.patch(url, json={"timezone": "Nowhere/City"})) == [("timezone", "invalid_string")]
        assert fields(c.patch(url, json={"name": None})) == [("name", "required")]
        assert c.get(url).json() == w  # nothing changed

        later = c.patch(url, json={"endsAt": iso(start + timedelta(hours=3)), "rrule": None})
        assert later.status_code == 200, later.text
        assert (later.json()["rrule"], later.json()["nextEndsAt"], later.json()["tags"]) == (
            None, iso(start + timedelta(hours=3)), ["edge"],
        )  # fmt: skip


def test_a_weekly_window_keeps_its_local_hour_across_dst(owner: Persona) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    first = datetime(2026, 10, 18, 8, 0, tzinfo=berlin)  # summer time: 06:00Z
    body = {"name": "sunday", "startsAt": "2026-10-18T06:00:00Z", "endsAt": "2026-10-18T08:00:00Z",
            "rrule": "FREQ=WEEKLY;BYDAY=SU", "timezone": "Europe/Berlin", "allMonitors": True}  # fmt: skip
    # Aware arithmetic in Python keeps the wall clock: 08:00 local every week.
    occurrences = [(first + timedelta(weeks=k)).astimezone(UTC) for k in range(300)]
    assert iso(occurrences[1]) == "2026-10-25T07:00:00Z"  # winter time from 25 October
    with owner.client() as c:
        w = c.post(API, json=body).json()
    now = datetime.now(UTC)
    current = next(s for s in occurrences if s + timedelta(hours=2) > now)
    assert (w["nextStartsAt"], w["nextEndsAt"]) == (iso(current), iso(current + timedelta(hours=2)))
    assert w["status"] == ("active" if current <= now else "scheduled")


def test_covered_monitors_show_maintenance_until_the_window_goes(owner: Persona) -> None:
    with owner.client() as c:
        by_id, by_tag, other, paused = (
            monitor(c), monitor(c, tags=["edge"]), monitor(c, tags=["core"]), monitor(c, paused=True)
        )  # fmt: skip
        windows = [
            c.post(API, json=active_now(monitorIds=[by_id["id"], paused["id"]])).json(),
            c.post(API, json=active_now(tags=["edge"])).json(),
        ]
        assert [w["status"] for w in windows] == ["active", "active"]
        wait_for(lambda: status(c, by_id["id"]) == status(c, by_tag["id"]) == "maintenance", what="maintenance")
        assert (status(c, other["id"]), status(c, paused["id"])) == ("pending", "paused")
        listed = {m["id"]: m["status"] for m in c.get("/api/v1/monitors").json()["monitors"]}
        assert listed[by_id["id"]] == listed[by_tag["id"]] == "maintenance"

        everything = c.post(API, json=active_now(allMonitors=True)).json()
        wait_for(lambda: status(c, other["id"]) == "maintenance", what="allMonitors")
        for w in [*windows, everything]:
            assert c.delete(f"{API}/{w['id']}").status_code == 204
        wait_for(lambda: {status(c, m["id"]) for m in (by_id, by_tag, other)} == {"pending"}, what="pending again")


def test_maintenance_is_left_out_of_uptime_but_checks_are_stored(owner: Persona, target: Target) -> None:
    with owner.client() as c:
        m = c.post("/api/v1/monitors", json={"name": "t", "type": "http", "url": f"{target.url}/m", "intervalSec": 30,
                                             "timeoutMs": 1000, "paused": True}).json()  # fmt: skip
        w = c.post(API, json=active_now(monitorIds=[m["id"]])).json()
        assert c.patch(f"/api/v1/monitors/{m['id']}", json={"paused": False}).status_code == 200

        def checks() -> int:
            return len(c.get(f"/api/v1/monitors/{m['id']}/checks").json()["checks"])

        def counted() -> int:
            return int(c.get(f"/api/v1/monitors/{m['id']}/stats").json()["last24h"]["checks"])

        wait_for(lambda: checks() >= 2, timeout=6, what="two checks")
        assert status(c, m["id"]) == "maintenance"
        assert counted() == 0
        assert c.delete(f"{API}/{w['id']}").status_code == 204
        wait_for(lambda: counted() > 0, timeout=6, what="checks counted again")
