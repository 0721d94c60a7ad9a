"""A postmortem's Markdown as HTML that is safe to put in a public page.

markdown-it-py renders CommonMark (plus tables and strikethrough) with raw
HTML off, so ``<script>`` in the text comes out as text; nh3 (Ammonia) then
keeps only basic formatting tags, links to http(s) and mailto with
``rel="nofollow noopener"``, and nothing else. Images are written as their
alt text: the page loads nothing from anywhere. Headings move down to
``heading_offset`` + 1 and below, so a postmortem's ``# Title`` fits the
page's heading order.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import nh3
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

ALLOWED_TAGS = frozenset(
    {
        "p", "br", "hr", "strong", "em", "s", "code", "pre", "blockquote", "ul", "ol", "li", "a",
        "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
URL_SCHEMES = frozenset({"http", "https", "mailto"})
LINK_REL = "nofollow noopener"


def _image_as_text(
    renderer: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    token = tokens[idx]
    alt = renderer.renderInlineAsText(token.children or [], options, env)
    return escape(alt)


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.add_render_rule("image", _image_as_text)
    return md


_MD = _parser()


def _shift_headings(tokens: list[Token], offset: int) -> None:
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            level = min(6, int(token.tag[1:]) + offset)
            token.tag = f"h{level}"


def render_markdown(text: str, *, heading_offset: int = 3) -> str:
    """``text`` (Markdown) as sanitised HTML; headings start at h(``heading_offset`` + 1)."""
    tokens = _MD.parse(text)
    _shift_headings(tokens, heading_offset)
    html = _MD.renderer.render(tokens, _MD.options, {})
    return nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(attrs) for tag, attrs in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        link_rel=LINK_REL,
        strip_comments=True,
    )
