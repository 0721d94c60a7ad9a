"""User docs: each Markdown file ``docs/<name>.md`` of the repository is a
page at ``GET /docs/<name>`` (and HEAD), rendered to a complete HTML page
with markdown-it-py.

Raw HTML in the Markdown is not passed through (it is shown as text) and
markdown-it refuses ``javascript:`` and similar links, so a page carries no
markup its author did not mean; a Content-Security-Policy allowing only the
page's own inline stylesheet backs that up. No script, no external asset.
Links between the docs (``alerts.md#outbox``) become links between the
pages (``alerts#outbox``); headings get ids to link to.

Pages are rendered once and kept in memory, rendered again when their file
changes (its size or modification time). The folder is ``docs/`` next to
the packages, found the way ``gateway.app`` finds the descriptor sets (the
repository is installed editable, so this is the checkout's folder).
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from starlette.exceptions import HTTPException
from starlette.responses import Response

DOCS_DIR = Path(__file__).resolve().parent.parent / "docs"
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # a file name stem: no dots, no slashes
LOCAL_DOC = re.compile(r"(?:\./)?(?:docs/)?([a-z0-9][a-z0-9_-]*)\.md(#\S*)?")

STYLE = """
:root { color-scheme: light dark; }
body { font: 1rem/1.6 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
  max-width: 46rem; padding: 1rem 1.25rem 3rem; overflow-wrap: break-word; }
nav { font-size: .9rem; padding-bottom: .5rem; border-bottom: 1px solid rgba(127,127,127,.35); }
h1, h2, h3 { line-height: 1.25; margin-top: 1.8em; }
h1 { margin-top: .8em; }
code, pre { font: .9rem/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
code { background: rgba(127,127,127,.15); border-radius: 3px; padding: .1em .3em; }
pre { background: rgba(127,127,127,.12); border-radius: 4px; padding: .75rem 1rem; overflow-x: auto; }
pre code { background: none; padding: 0; }
table { border-collapse: collapse; display: block; overflow-x: auto; }
th, td { border: 1px solid rgba(127,127,127,.4); padding: .3rem .6rem; text-align: left; vertical-align: top; }
blockquote { margin-left: 0; padding-left: 1rem; border-left: 4px solid rgba(127,127,127,.4); }
"""
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
HEADERS = {
    "content-security-policy": f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · observe</title>
<style>{style}</style>
</head>
<body>
<nav aria-label="Documentation"><a href="openapi">observe API reference</a></nav>
<main>
{body}</main>
</body>
</html>
"""


def _inline_text(tokens: list[Token], index: int) -> str:
    """The plain text of the inline token at ``index`` (a heading's words)."""
    return "".join(c.content for c in tokens[index].children or [] if c.type in ("text", "code_inline"))


def _anchors_and_links(state: StateCore) -> None:
    """Ids on headings (GitHub's slugs); ``x.md`` links point at the page ``x``."""
    seen: dict[str, int] = {}
    for i, token in enumerate(state.tokens):
        if token.type == "heading_open":
            slug = (
                re.sub(r"[^\w\- ]", "", _inline_text(state.tokens, i + 1).lower()).strip().replace(" ", "-")
                or "section"
            )
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            token.attrSet("id", f"{slug}-{count}" if count else slug)
        for child in token.children or []:
            if child.type == "link_open":
                match = LOCAL_DOC.fullmatch(str(child.attrGet("href") or ""))
                if match:
                    child.attrSet("href", match[1] + (match[2] or ""))


_markdown = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
_markdown.core.ruler.push("observe_anchors_and_links", _anchors_and_links)


def render(markdown: str) -> tuple[str, str]:
    """The HTML of ``markdown`` (raw HTML in it escaped) and its title: the
    text of its first heading ("" when it has none)."""
    tokens = _markdown.parse(markdown)
    title = ""
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            title = _inline_text(tokens, i + 1)
            break
    return _markdown.renderer.render(tokens, _markdown.options, {}), title


def page(markdown: str, fallback_title: str) -> str:
    """A complete HTML document for ``markdown``."""
    body, title = render(markdown)
    return PAGE.format(title=html.escape(title or fallback_title), style=STYLE, body=body)


class DocPages:
    """The pages of one folder of Markdown files, rendered on first use."""

    def __init__(self, directory: Path = DOCS_DIR) -> None:
        self.directory = directory
        self._cache: dict[str, tuple[tuple[int, int], bytes]] = {}

    def get(self, name: str) -> bytes | None:
        """The page ``name`` as UTF-8 HTML; None when there is no such file."""
        if not NAME.fullmatch(name):
            return None
        path = self.directory / f"{name}.md"
        try:
            stat = path.stat()
        except OSError:
            return None
        version = (stat.st_mtime_ns, stat.st_size)
        cached = self._cache.get(name)
        if cached is not None and cached[0] == version:
            return cached[1]
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        rendered = page(text, name).encode()
        self._cache[name] = (version, rendered)
        return rendered

    def response(self, name: str, method: str) -> Response:
        """GET or HEAD of ``/docs/<name>``; an unknown name is the 404 envelope."""
        body = self.get(name)
        if body is None:
            raise HTTPException(404)
        headers = {**HEADERS, "content-length": str(len(body))}
        content = b"" if method == "HEAD" else body
        return Response(content, media_type="text/html; charset=utf-8", headers=headers)
