"""The public status page in a real browser: Debian's headless Chromium,
driven by Playwright, opens a page with components, an active incident
with an update and a maintenance window, all made through the REST API.

It must show their text, look like something (the screenshot is not one
colour), log no console error, load nothing from another origin, pass
axe-core with no serious or critical violation, and show the same text with
JavaScript off. The password form gets the same accessibility check."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, SQLITE_ONLY, Persona, Server
from tests.polling import wait_for

CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / "tests" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
AXE_RUN = """async () => {
  const result = await axe.run();
  return {violations: result.violations, passes: result.passes.length};
}"""
# How many colours a sample of the screenshot's pixels has; a blank page has one.
COUNT_COLOURS = """async (png) => {
  const img = new Image();
  img.src = "data:image/png;base64," + png;
  await img.decode();
  const canvas = document.createElement("canvas");
  canvas.width = img.width;
  canvas.height = img.height;
  const g = canvas.getContext("2d");
  g.drawImage(img, 0, 0);
  const data = g.getImageData(0, 0, img.width, img.height).data;
  const seen = new Set();
  for (let i = 0; i < data.length; i += 4 * 13) seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
  return seen.size;
}"""


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    if not AXE.exists():
        pytest.skip("needs axe-core: npm ci --prefix tests/browser")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def created(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 201, r.text
    return dict(r.json())


def a_page_with_trouble(c: httpx.Client) -> tuple[str, dict[str, str]]:
    """A published page with two groups of components, an open incident with an update and an active
    maintenance window; its path and the texts it must show."""
    api, db, web = (
        created(c.post("/api/v1/monitors", json={"name": f"mon-{name}", "type": "heartbeat"}))["id"]
        for name in ("api", "db", "web")
    )
    slug = f"acme-{uuid.uuid4().hex[:10]}"
    groups = [
        {"name": "Core services", "components": [{"monitorId": api, "displayName": "Public API"}, {"monitorId": db}]},
        {"name": "Websites", "components": [{"monitorId": web, "displayName": "Dashboard"}]},
    ]
    created(c.post("/api/v1/status-pages", json={"name": "Acme Cloud", "slug": slug, "groups": groups}))
    incident = created(
        c.post(
            "/api/v1/incidents",
            json={"title": "Elevated API error rates", "monitorId": api, "message": "We are looking into 5xx errors"},
        )
    )
    created(
        c.post(
            f"/api/v1/incidents/{incident['id']}/updates",
            json={"status": "identified", "message": "A failing database node was taken out"},
        )
    )
    now = datetime.now(UTC)
    window = {"name": "Database upgrade", "monitorIds": [db], "description": "Read-only for an hour"}
    window |= {"startsAt": iso(now - timedelta(minutes=30)), "endsAt": iso(now + timedelta(minutes=30))}
    created(c.post("/api/v1/maintenance-windows", json=window))
    texts = {
        "page name": "Acme Cloud",
        "component": "Public API",
        "component without a display name": "mon-db",
        "another group's component": "Dashboard",
        "incident": "Elevated API error rates",
        "incident update": "A failing database node was taken out",
        "first update": "We are looking into 5xx errors",
        "maintenance": "Database upgrade",
    }
    return f"/status/{slug}", texts


def missing(text: str, texts: dict[str, str]) -> list[str]:
    return [what for what, t in texts.items() if t not in text]


@SQLITE_ONLY
def test_the_page_in_chromium(server: Server, owner: Persona, browser: Any, tmp_path: Path) -> None:
    with owner.client() as c:
        path, texts = a_page_with_trouble(c)
    with server.client() as anyone:  # the view is cached; changes reach it when they are committed
        wait_for(lambda: not missing(anyone.get(path).text, texts), "the page to show what was made", timeout=10)

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    response = page.goto(server.base_url + path)
    assert response is not None
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    visible = page.inner_text("body")
    assert missing(visible, texts) == []
    assert page.title() == "Acme Cloud status"
    assert page.locator("h1").all_inner_texts() == ["Acme Cloud"]
    assert page.locator("link[rel=alternate][type='application/atom+xml']").get_attribute("href") == f"{path}/feed.xml"
    assert page.locator("form[method=post] input[name=email]").count() == 1
    assert page.locator("ol.bars").count() == 3  # one row of daily bars a component

    shot = tmp_path / "status-page.png"
    page.screenshot(path=str(shot), full_page=True)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    scratch = context.new_page()  # about:blank, to look at the picture without touching the status page
    assert scratch.evaluate(COUNT_COLOURS, base64.b64encode(png).decode()) > 20
    assert errors == []
    assert [u for u in requests if not u.startswith(server.base_url + "/")] == []
    context.close()

    # axe needs its script in the page, which the page's CSP forbids: a context that bypasses it.
    checked = browser.new_context(bypass_csp=True)
    page = checked.new_page()
    page.goto(server.base_url + path)
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(AXE_RUN)
    assert result["passes"] > 10  # axe looked at the page
    serious = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in result["violations"]]
    assert [v for v in serious if v[1] in ("serious", "critical")] == []
    checked.close()

    no_script = browser.new_context(java_script_enabled=False, viewport={"width": 375, "height": 800})
    page = no_script.new_page()
    page.goto(server.base_url + path)
    assert missing(page.inner_text("body"), texts) == []
    no_script.close()


@SQLITE_ONLY
def test_the_password_form_is_accessible(server: Server, owner: Persona, browser: Any) -> None:
    slug = f"locked-{uuid.uuid4().hex[:10]}"
    with owner.client() as c:
        page_id = created(c.post("/api/v1/status-pages", json={"name": "Locked", "slug": slug, "groups": []}))["id"]
        assert c.put(f"/api/v1/status-pages/{page_id}/password", json={"password": "open sesame"}).is_success
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    response = page.goto(f"{server.base_url}/status/{slug}")
    assert response is not None
    assert (response.status, response.headers["x-error-code"]) == (401, "PASSWORD_REQUIRED")
    assert page.locator("h1").all_inner_texts() == ["Password required"]
    page.fill("input[name=password]", "not it")
    page.click("button[type=submit]")
    assert "That password is not right." in page.inner_text("main")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(AXE_RUN)
    assert result["passes"] > 10
    assert [v["id"] for v in result["violations"] if v["impact"] in ("serious", "critical")] == []
    page.fill("input[name=password]", "open sesame")
    page.click("button[type=submit]")
    assert page.locator("h1").all_inner_texts() == ["Locked"]
    context.close()
