"""Repeated keys in a JSON body, which orjson drops silently (it keeps the
last). Shared by the REST gateway (a repeated key is a 400) and the logs'
JSON ingest (it rejects that record).

Rather than parse every body twice, :func:`may_repeat_keys` counts the
colons of the body against those of orjson's compact JSON of what it kept
(both in C): outside strings a colon ends a key, inside one it is written
the same in both, so a dropped key is the only way the body has more. Where
it has, or where a colon was written as ``\\u003a`` (which the count cannot
see), :func:`parse_with_repeats` reads the body again, slowly, and
:func:`repeated_key_paths` names the repeated keys.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

import orjson


def may_repeat_keys(raw: bytes, parsed: Iterable[Any]) -> bool:
    """``raw`` may hold a key that orjson dropped from ``parsed`` (what it read of ``raw``)."""
    kept = sum(orjson.dumps(item).count(b":") for item in parsed)
    return raw.count(b":") != kept or b"\\u003a" in raw or b"\\u003A" in raw


class _Pairs(dict[str, Any]):
    """A JSON object that remembers which of its keys came more than once."""

    repeated: list[str]


def _pairs(items: list[tuple[str, Any]]) -> _Pairs:
    obj = _Pairs(items)
    obj.repeated = list(dict.fromkeys(k for k, n in Counter(k for k, _ in items).items() if n > 1))
    return obj


def parse_with_repeats(raw: bytes) -> Any:
    """``raw`` parsed so that :func:`repeated_key_paths` can see its repeated
    keys; None when the stdlib parser refuses what orjson accepted."""
    try:
        return json.loads(raw, object_pairs_hook=_pairs)
    except ValueError:
        return None


def repeated_key_paths(tree: Any, path: str = "") -> list[str]:
    """JSON paths (``monitors[2].name``) of the keys an object of ``tree``
    (from :func:`parse_with_repeats`) repeats, in document order."""
    out: list[str] = []
    stack: list[tuple[str, Any]] = [(path, tree)]
    while stack:
        at, node = stack.pop()
        if isinstance(node, _Pairs):
            prefix = f"{at}." if at else ""
            out += [prefix + key for key in node.repeated]
            stack.extend((prefix + key, value) for key, value in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((f"{at}[{i}]", item) for i, item in reversed(list(enumerate(node))))
    return out
