"""User docs at /docs/<name>: docs/<name>.md rendered to a complete page
(no script, no external asset, raw HTML escaped), the 404 envelope for
unknown names, Swagger UI untouched; and the heartbeats page's examples run
against the real server."""

from __future__ import annotations

import html
import re
import subprocess
from pathlib import Path

import pytest

from gateway.docs_pages import DocPages, page, render
from tests.conftest import ROOT, Persona, Server

PLACEHOLDER = re.compile(r"https://observe\.example\.com/api/v1/heartbeats/hb_YOUR_TOKEN")
CODE_BLOCK = re.compile(r"<pre><code[^>]*>(.*?)</code></pre>", re.S)


def test_heartbeats_page_is_a_complete_page_without_scripts_or_external_assets(server: Server) -> None:
    with server.client() as c:
        r = c.get("/docs/heartbeats")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    text = r.text
    assert text.startswith('<!doctype html>\n<html lang="en">')
    assert "<title>Heartbeats: monitoring cron jobs and workers · observe</title>" in text
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in text
    assert text.count("<main>") == 1
    assert "</main>" in text
    assert re.search(r"<h1[^>]*>Heartbeats: monitoring cron jobs and workers</h1>", text)
    assert "<style>" in text
    assert "<script" not in text.lower()
    assert re.findall(r"<(?:link|img|iframe|object|embed)\b", text) == []
    assert not re.search(r"\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", text)
    assert "script-src" not in r.headers["content-security-policy"]
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    # The page's words: the receive URL and the token's two steps.
    assert "/api/v1/heartbeats/&lt;token&gt;" in text
    assert "/api/v1/monitors/42/secrets" in text


def test_head_answers_the_headers_without_the_body(server: Server) -> None:
    with server.client() as c:
        get = c.get("/docs/heartbeats")
        head = c.head("/docs/heartbeats")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert int(head.headers["content-length"]) == len(get.content)


@pytest.mark.parametrize("path", ["/docs/no-such-page", "/docs/HEARTBEATS", "/docs/heartbeats.md", "/docs/..%2FREADME"])
def test_unknown_pages_are_the_404_envelope(server: Server, path: str) -> None:
    with server.client() as c:
        r = c.get(path)
        head = c.head(path)
    assert r.status_code == 404, r.text
    assert r.json() == {"error": "no such route", "code": "NOT_FOUND"}
    assert head.status_code == 404


def test_every_docs_file_is_a_page_and_swagger_ui_stays(server: Server) -> None:
    names = sorted(p.stem for p in (ROOT / "docs").glob("*.md"))
    assert "heartbeats" in names
    with server.client() as c:
        for name in names:
            r = c.get(f"/docs/{name}")
            assert r.status_code == 200, (name, r.text)
            assert "<main>" in r.text
        swagger = c.get("/docs")
        alias = c.get("/docs/openapi")
        css = c.get("/docs/assets/swagger-ui.css")
        post = c.post("/docs/heartbeats")
    assert swagger.status_code == alias.status_code == css.status_code == 200
    assert 'id="swagger-ui"' in swagger.text
    assert 'id="swagger-ui"' in alias.text
    assert post.status_code == 405


def test_raw_html_in_markdown_is_shown_as_text() -> None:
    body, title = render(
        "# Title <b>bold</b>\n\n<script>alert(1)</script>\n\n"
        'Text <img src="https://evil.example/x.png" onerror="alert(2)"> and '
        "[a link](javascript:alert(3)) and [another page](alerts.md#outbox).\n"
    )
    assert "<script" not in body
    assert "<img" not in body
    assert "<b>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert 'href="javascript' not in body  # shown as text, not a link
    assert '<a href="alerts#outbox">another page</a>' in body
    assert title == "Title <b>bold</b>"
    document = page("# Title <b>bold</b>\n", "fallback")
    assert "<title>Title &lt;b&gt;bold&lt;/b&gt; · observe</title>" in document
    assert "<title>untitled · observe</title>" in page("no heading\n", "untitled")


def test_pages_are_cached_until_their_file_changes(tmp_path: Path) -> None:
    (tmp_path / "guide.md").write_text("# One\n")
    pages = DocPages(tmp_path)
    first = pages.get("guide")
    assert first is not None
    assert b'<h1 id="one">One</h1>' in first
    assert pages.get("guide") is first  # from the cache
    (tmp_path / "guide.md").write_text("# Two, longer\n")
    changed = pages.get("guide")
    assert changed is not None
    assert b">Two, longer</h1>" in changed
    assert pages.get("missing") is None
    assert pages.get("../guide") is None


def _code_block_after(text: str, heading: str) -> str:
    """The first code block after the heading ``heading`` of a rendered page, as plain text."""
    start = text.index(heading)
    block = CODE_BLOCK.search(text, start)
    assert block, heading
    return html.unescape(block.group(1))


def test_the_pages_crontab_examples_ping_a_real_monitor(server: Server, owner: Persona, tmp_path: Path) -> None:
    with owner.client() as c:
        r = c.post("/api/v1/monitors", json={"name": "cron docs", "type": "heartbeat", "graceSec": 300})
        assert r.status_code == 201, r.text
        monitor_id = r.json()["id"]
        secrets = c.get(f"/api/v1/monitors/{monitor_id}/secrets")
        assert secrets.status_code == 200, secrets.text
        url = secrets.json()["heartbeatUrl"]
        text = c.get("/docs/heartbeats").text

    # The crontab line: its command, with the job replaced by `true` and the monitor's real URL.
    crontab = _code_block_after(text, '<h3 id="crontab">')
    line = next(x for x in crontab.splitlines() if "curl" in x and not x.startswith("#"))
    command = PLACEHOLDER.sub(url, line.split(None, 5)[5]).replace("/usr/local/bin/backup.sh", "true")
    assert command.startswith("true && curl -fsS -m 10 --retry 5 -o /dev/null http"), command
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""

    # The start/exit-status script, running a job that exits 3.
    script = _code_block_after(text, "with a run id from <code>uuidgen</code>")
    assert script.startswith("#!/bin/sh")
    (tmp_path / "with-heartbeat").write_text(script)
    done = subprocess.run(
        ["sh", str(tmp_path / "with-heartbeat"), url, "sh", "-c", "exit 3"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr == ""

    with owner.client() as c:
        r = c.get(f"/api/v1/monitors/{monitor_id}/pings")
        assert r.status_code == 200, r.text
        monitor = c.get(f"/api/v1/monitors/{monitor_id}").json()
    ended, started, success = r.json()["pings"]  # newest first
    assert success["kind"] == "success"
    assert success["userAgent"].startswith("curl/")
    assert started["kind"] == "start"
    assert started["rid"]
    assert ended["kind"] == "exit"
    assert ended["exitStatus"] == 3
    assert ended["rid"] == started["rid"]
    assert ended["runtimeMs"] is not None
    assert monitor["status"] == "down"
