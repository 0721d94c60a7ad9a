"""A shields.io-style badge as SVG: a grey label on the left, a coloured
message on the right, in the "flat" or "flat-square" style.

The layout is shields' own (badge-maker): each text is measured in 11px
Verdana (:mod:`core.status_pages.text_width`), truncated to whole pixels and
rounded up to an odd number (pixel-grid alignment), padded 5 px each side;
texts are drawn at 10× size scaled by .1 with ``textLength`` fixed to the
measured width, so a viewer without Verdana still fits them in the box. The
badge is an image with ``role="img"``, an ``aria-label`` and a ``<title>``
saying "label: message".

Built with ``xml.etree.ElementTree``, so the label and message (the label
comes from the query string) are escaped by construction.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from core.status_pages.text_width import verdana_11px

SVG = "http://www.w3.org/2000/svg"
STYLES = ("flat", "flat-square")
HEIGHT = 20
_PADDING = 5
_LABEL_COLOR = "#555"
_FONT = "Verdana,Geneva,DejaVu Sans,sans-serif"
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _preferred_width(text: str) -> int:
    width = int(verdana_11px(text))
    return width + 1 if width % 2 == 0 else width


def _brightness(color: str) -> float:
    """Perceived brightness, 0–1, of "#rgb" or "#rrggbb"."""
    digits = color[1:] if len(color) == 7 else "".join(c * 2 for c in color[1:])
    r, g, b = (int(digits[i : i + 2], 16) for i in (0, 2, 4))
    return (r * 299 + g * 587 + b * 114) / 255_000


def _text_colors(background: str) -> tuple[str, str]:
    """Text and shadow colour on ``background``: dark on light, as shields does."""
    return ("#fff", "#010101") if _brightness(background) <= 0.69 else ("#333", "#ccc")


def _num(value: float) -> str:
    return f"{value:g}"


def _texts(group: ET.Element, text: str, left: int, width: int, background: str, *, shadow: bool) -> None:
    fill, shadow_fill = _text_colors(background)
    x = _num(10 * (left + 0.5 * width + _PADDING))
    length = str(10 * width)
    if shadow:
        attrs = {"aria-hidden": "true", "x": x, "y": "150", "fill": shadow_fill, "fill-opacity": ".3"}
        ET.SubElement(group, "text", {**attrs, "transform": "scale(.1)", "textLength": length}).text = text
    attrs = {"x": x, "y": "140", "transform": "scale(.1)", "fill": fill, "textLength": length}
    ET.SubElement(group, "text", attrs).text = text


def render_badge(label: str, message: str, color: str, *, style: str = "flat") -> bytes:
    """The badge's SVG document. ``color`` is the message's background,
    "#rgb" or "#rrggbb"; an empty ``label`` gives a message-only badge."""
    label, message = _NOT_XML.sub("", label), _NOT_XML.sub("", message)
    flat = style != "flat-square"
    label_width = _preferred_width(label) if label else 0
    message_width = _preferred_width(message)
    left = label_width + 2 * _PADDING if label else 0
    right = message_width + 2 * _PADDING
    width = left + right
    title = f"{label}: {message}" if label else message

    svg = ET.Element(
        "svg",
        {"xmlns": SVG, "width": str(width), "height": str(HEIGHT), "role": "img", "aria-label": title},
    )
    ET.SubElement(svg, "title").text = title
    rects: list[dict[str, str]] = []
    if label:
        rects.append({"width": str(left), "height": str(HEIGHT), "fill": _LABEL_COLOR})
    rects.append({"x": str(left), "width": str(right), "height": str(HEIGHT), "fill": color})
    if flat:
        gradient = ET.SubElement(svg, "linearGradient", {"id": "s", "x2": "0", "y2": "100%"})
        ET.SubElement(gradient, "stop", {"offset": "0", "stop-color": "#bbb", "stop-opacity": ".1"})
        ET.SubElement(gradient, "stop", {"offset": "1", "stop-opacity": ".1"})
        clip = ET.SubElement(svg, "clipPath", {"id": "r"})
        ET.SubElement(clip, "rect", {"width": str(width), "height": str(HEIGHT), "rx": "3", "fill": "#fff"})
        shapes = ET.SubElement(svg, "g", {"clip-path": "url(#r)"})
        rects.append({"width": str(width), "height": str(HEIGHT), "fill": "url(#s)"})
    else:
        shapes = ET.SubElement(svg, "g", {"shape-rendering": "crispEdges"})
    for rect in rects:
        ET.SubElement(shapes, "rect", rect)

    texts = ET.SubElement(
        svg,
        "g",
        {
            "fill": "#fff",
            "text-anchor": "middle",
            "font-family": _FONT,
            "text-rendering": "geometricPrecision",
            "font-size": "110",
        },
    )
    if label:
        _texts(texts, label, 1, label_width, _LABEL_COLOR, shadow=flat)
    # The message starts a pixel into the label's box (shields' overlap), or at 0 alone.
    _texts(texts, message, left - 1 if label else 0, message_width, color, shadow=flat)
    data: bytes = ET.tostring(svg, encoding="utf-8", xml_declaration=False)
    return data
