"""The query AST evaluated in Python, on one record: the live tail's filter,
and the meaning the SQL compilers of the stores must agree with (the shared
test table runs every case through all three).

A message's tokens are computed per matcher call, except inside
:func:`tokens_shared`: there each message is tokenised once, however many
matchers look at it (the live tail delivers a batch to every tail of an org
within one, so ten tails with words cost one tokenising per record).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import orjson

from core.logs.query import And, Attr, Field, Level, Node, Not, Text, message_tokens
from core.logs.records import LogRecord

Matcher = Callable[[LogRecord], bool]

_shared_tokens: ContextVar[dict[str, list[str]] | None] = ContextVar("log_message_tokens", default=None)


@contextmanager
def tokens_shared() -> Iterator[None]:
    """Within it, each message is tokenised at most once (the memo ends with it)."""
    token = _shared_tokens.set({})
    try:
        yield
    finally:
        _shared_tokens.reset(token)


def _tokens(message: str) -> list[str]:
    memo = _shared_tokens.get()
    if memo is None:
        return message_tokens(message)
    found = memo.get(message)
    if found is None:
        found = memo[message] = message_tokens(message)
    return found


def compile_matcher(node: Node | None) -> Matcher:
    """A predicate for ``node`` (``None`` matches everything)."""
    if node is None:
        return lambda record: True
    return _compile(node)


def _compile(node: Node) -> Matcher:
    if isinstance(node, Text):
        return _text(node)
    if isinstance(node, Field):
        return _field(node)
    if isinstance(node, Attr):
        return _attr(node)
    if isinstance(node, Level):
        low, high = node.low, node.high
        return lambda r: low <= r.severity_number <= high
    if isinstance(node, Not):
        inner = _compile(node.node)
        return lambda r: not inner(r)
    if isinstance(node, And):
        parts = [_compile(n) for n in node.items]
        return lambda r: all(p(r) for p in parts)
    parts = [_compile(n) for n in node.items]
    return lambda r: any(p(r) for p in parts)


def _text(node: Text) -> Matcher:
    wanted = node.tokens
    n = len(wanted)
    prefix = node.prefix
    leading = list(wanted[:-1])

    def match(record: LogRecord) -> bool:
        tokens = _tokens(record.message)
        for start in range(len(tokens) - n + 1):
            if tokens[start : start + n - 1] != leading:
                continue
            last = tokens[start + n - 1]
            if last == wanted[-1] or (prefix and last.startswith(wanted[-1])):
                return True
        return False

    return match


def _equal_or_prefix(actual: str | None, value: str, prefix: bool) -> bool:
    if actual is None:
        return False
    if prefix:
        return actual.startswith(value) and actual != ""
    return actual == value


def _field(node: Field) -> Matcher:
    name = {"service": "service", "traceId": "trace_id", "spanId": "span_id"}[node.name]
    value, prefix = node.value, node.prefix
    return lambda r: _equal_or_prefix(getattr(r, name), value, prefix)


def attribute_text(value: Any) -> str | None:
    """An attribute value as the query compares it: strings as they are,
    numbers and booleans as JSON writes them; None for arrays, maps and null."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return orjson.dumps(value).decode()
    return None


def _attr(node: Attr) -> Matcher:
    key, value, prefix = node.key, node.value, node.prefix
    presence = prefix and value == ""

    def one(attributes: dict[str, Any]) -> bool:
        if key not in attributes:
            return False
        actual = attributes[key]
        if presence:
            return actual is not None and actual != ""
        return _equal_or_prefix(attribute_text(actual), value, prefix)

    return lambda r: one(r.attributes) or one(r.resource)
