"""How wide a text is in 11px Verdana, the badges' font, in pixels.

The widths are the character-width table of the npm package anafanafo 2.0.0
(https://github.com/metabolize/anafanafo, ``data/verdana-11px-normal.json``,
copied unchanged into ``fonts/`` beside this module), © 2018 Metabolize LLC,
MIT licence (``fonts/anafanafo-LICENSE``). Shields.io measures its badges
with the same table, so ours come out the same size.

The table is a sorted list of ``[first, last, width]`` code-point ranges.
As anafanafo does, control characters count 0 and a character the table
does not know counts as wide as "m".
"""

from __future__ import annotations

import bisect
import json
from functools import cache
from pathlib import Path

_TABLE = Path(__file__).parent / "fonts" / "verdana-11px-normal.json"


@cache
def _ranges() -> tuple[list[int], list[int], list[float]]:
    rows = json.loads(_TABLE.read_text(encoding="utf-8"))
    return [r[0] for r in rows], [r[1] for r in rows], [float(r[2]) for r in rows]


def _char_width(code: int) -> float | None:
    if code <= 31 or code == 127:
        return 0.0
    firsts, lasts, widths = _ranges()
    i = bisect.bisect_right(firsts, code) - 1
    if i >= 0 and code <= lasts[i]:
        return widths[i]
    return None


def verdana_11px(text: str) -> float:
    """The width of ``text`` in 11px Verdana."""
    em = _char_width(ord("m")) or 0.0
    total = 0.0
    for char in text:
        width = _char_width(ord(char))
        total += em if width is None else width
    return total
