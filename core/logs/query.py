"""The log query language: ``q`` of search, live tail and log alerts.

``parse(q)`` turns a query into one small AST (frozen dataclasses below) that
every log store compiles to its own SQL; ``None`` means "match every record".
A bad query raises :class:`QueryError` with a message and a **1-based**
position: the character (Unicode code point) of ``q`` the error points at,
``len(q) + 1`` for "at the end". ``str(error)`` ends with ``at position N``.

The language, and exactly what each node means::

    timeout                  Text: the word's tokens appear in the message
    "connection reset"       Text(phrase=True): the tokens appear in this order, adjacent
    time*                    Text(prefix=True): the last token is a prefix (timeout, timer)
    service:api              Field: service == "api" (exact, case-sensitive); service:api* a prefix
    traceId:4bf9…  spanId:…  Field: hex id (32 / 16 digits; upper case is lowered); a prefix may be shorter
    attr.http.method:GET     Attr: a record *or* resource attribute equals the value
    service:*  attr.user:*   Field/Attr with value "" and prefix: the field is present and non-empty
    level:warn               Level(13, 16): severity_number BETWEEN 13 AND 16
    level>=warn              Level(13, 24); level>warn (17, 24); level<=warn (1, 16); level<warn (1, 12)
    -term  -(a OR b)         Not
    a b   a AND b            And (AND is implied; an explicit AND is the same)
    a OR b                   Or, binding looser than AND: ``a b OR c`` is ``(a b) OR c``
    ( … )                    grouping

Text matching: a message is a sequence of tokens, the maximal runs of Unicode
letters and digits (``message_tokens``; ``_`` and punctuation separate),
compared lower-cased (``str.lower``), accents kept. A word is split the same
way, so ``/api/users`` and ``user_id`` are matched as the phrases
``api users`` and ``user id``; ``phrase`` only records that it was quoted.
(SQLite FTS5 is fed these very tokens, joined by spaces, with the ``ascii``
tokenizer, and a phrase query ``"api users"``, with ``*`` after it for a
prefix; PostgreSQL gets a tsvector built from them.)

Field and attribute values match exactly, case-sensitively. An attribute
value is compared as text: strings as they are, numbers and booleans as JSON
writes them (``500``, ``1.5``, ``true``); arrays and maps never equal a value
but are present for ``attr.key:*``. Severity 0 (unspecified) is in no level.

Decisions:

* Field names are case-insensitive, ``trace_id``/``span_id`` too; attribute
  keys are case-sensitive. An unknown field (``foo:bar``, also ``http://x``)
  is an error naming it: quote text with a colon to search for it.
* Only upper-case ``AND`` and ``OR`` are operators; ``and``, ``or``, ``NOT``
  are words. ``-`` must touch its term (``- a`` is an error), negates once
  (``--a`` is an error; ``-(-a)`` is allowed); ``a-b`` is one word.
* ``*`` only ends a word or unquoted value, after a letter or digit (or
  alone as a field value); a bare ``*``, ``a*b`` and ``a-*`` are errors; in
  quotes it is a plain character. A word or phrase with no letter or digit
  (``!!!``, ``""``) is an error: nothing could match it.
* In quotes ``\\"`` is a quote and ``\\\\`` a backslash; any other backslash
  is kept as written. A quote starts a phrase wherever it appears.
* Limits: at most 2,000 characters, 100 terms, parentheses 20 deep.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, cast

from lark import Lark, Token, Transformer, UnexpectedCharacters, UnexpectedInput

from core.errors import FieldViolation, ObserveError, validation_failed

MAX_QUERY_CHARS = 2000
MAX_TERMS = 100
MAX_DEPTH = 20

# OTLP severity_number ranges of the six levels.
LEVELS: dict[str, tuple[int, int]] = {
    "trace": (1, 4),
    "debug": (5, 8),
    "info": (9, 12),
    "warn": (13, 16),
    "error": (17, 20),
    "fatal": (21, 24),
}
MIN_SEVERITY, MAX_SEVERITY = 1, 24

FieldName = Literal["service", "traceId", "spanId"]


@dataclass(frozen=True, slots=True)
class Text:
    """Words or a phrase in the message: ``tokens`` (lower-cased, never empty) in order, adjacent."""

    value: str
    tokens: tuple[str, ...]
    phrase: bool = False
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Field:
    """A record field equals ``value`` (or starts with it when ``prefix``)."""

    name: FieldName
    value: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Attr:
    """A record or resource attribute ``key`` equals ``value`` (or starts with it when ``prefix``)."""

    key: str
    value: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Level:
    """``low <= severity_number <= high``."""

    low: int
    high: int


@dataclass(frozen=True, slots=True)
class Not:
    node: Node


@dataclass(frozen=True, slots=True)
class And:
    """Every item matches; at least two items, none of them an ``And``."""

    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """Some item matches; at least two items, none of them an ``Or``."""

    items: tuple[Node, ...]


Node: TypeAlias = Text | Field | Attr | Level | Not | And | Or


class QueryError(ValueError):
    """A query that cannot be parsed; ``position`` is 1-based."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} at position {position}")
        self.message = message
        self.position = position

    def as_validation_error(self, path: str = "q") -> ObserveError:
        """The API's 400 VALIDATION_FAILED for this query parameter or field."""
        return validation_failed([FieldViolation(path, "invalid_string", str(self))])


def parse(q: str) -> Node | None:
    """The query's AST, or ``None`` for an empty (all-whitespace) query, which matches everything."""
    if len(q) > MAX_QUERY_CHARS:
        raise QueryError(f"the query is longer than {MAX_QUERY_CHARS} characters", MAX_QUERY_CHARS + 1)
    try:
        # With a transformer given to Lark, LALR returns what _Build.start returns, not a Tree.
        tree = cast("Node | None", _parser().parse(q))
    except UnexpectedCharacters as e:  # the one character no token starts with: a '-' without its term
        raise QueryError(_LONE_MINUS, (e.pos_in_stream or 0) + 1) from None
    except UnexpectedInput as e:  # _Checks rejects every bad sequence first; this is a safety net
        raise QueryError("unexpected input", (e.pos_in_stream or 0) + 1) from None
    return tree


_LONE_MINUS = "'-' must be directly followed by a term (quote \"-\" to search for it)"
_TOKEN = re.compile(r"[^\W_]+")


def message_tokens(text: str) -> list[str]:
    """A message's tokens as text matching sees them: runs of letters and digits, lower-cased."""
    return _TOKEN.findall(text.lower())


# ---------------------------------------------------------------- the grammar

_UNQUOTED = r'[^\s()"]'
_QUOTED = r'"(?:[^"\\]|\\.)*"?'  # the closing quote is optional here so a missing one is reported by name

_GRAMMAR = rf"""
start: or_expr?

?or_expr: and_expr (OR and_expr)*
?and_expr: unary (AND? unary)*
?unary: NEG atom -> negation
      | atom
?atom: LPAR or_expr RPAR -> group
     | term
term: WORD | PHRASE | FIELD_TERM | COMPARE_TERM

FIELD_TERM.2: /[^\W\d][\w.\-\/]*:(?:{_QUOTED}|{_UNQUOTED}*)/s
COMPARE_TERM.2: /(?i:level)(?:>=|<=|>|<){_UNQUOTED}*/
PHRASE: /{_QUOTED}/s
WORD: /[^\s()"\-]{_UNQUOTED}*/
NEG: /-(?=[^\s)])/
AND: "AND"
OR: "OR"
LPAR: "("
RPAR: ")"

%ignore /\s+/
"""

_TERMS = frozenset({"WORD", "PHRASE", "FIELD_TERM", "COMPARE_TERM"})
_OPERATORS = frozenset({"AND", "OR", "NEG"})
_SHOWN = {"AND": "'AND'", "OR": "'OR'", "NEG": "'-'"}


class _Build(Transformer[Token, Node | None]):
    """Builds the AST while LALR reduces (no parse tree is kept)."""

    def start(self, children: list[Node]) -> Node | None:
        return children[0] if children else None

    def or_expr(self, children: list[Any]) -> Node:
        return Or(_flatten(Or, children))

    def and_expr(self, children: list[Any]) -> Node:
        return And(_flatten(And, children))

    def negation(self, children: list[Any]) -> Node:
        return Not(children[1])

    def group(self, children: list[Any]) -> Node:
        node: Node = children[1]
        return node

    def term(self, children: list[Token]) -> Node:
        (tok,) = children
        return _term(tok.type, str(tok))


def _flatten(kind: type[And] | type[Or], children: list[Any]) -> tuple[Node, ...]:
    items: list[Node] = []
    for child in children:
        if isinstance(child, Token):
            continue
        if isinstance(child, kind):
            items.extend(child.items)
        else:
            items.append(child)
    return tuple(items)


class _Checks:
    """Sees every token before the parser does, to reject a bad query at the right place in plain words."""

    always_accept = ()

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        open_parens: list[int] = []
        terms = 0
        prev: Token | None = None
        for tok in stream:
            kind = tok.type
            wants_term = prev is None or prev.type in ("LPAR", "AND", "OR", "NEG")
            if kind in _TERMS:
                terms += 1
                if terms > MAX_TERMS:
                    raise QueryError(f"the query has more than {MAX_TERMS} terms", _at(tok))
                try:
                    _term(kind, str(tok))
                except _TermError as e:
                    raise QueryError(e.message, _at(tok) + e.offset) from None
            elif kind == "LPAR":
                if len(open_parens) == MAX_DEPTH:
                    raise QueryError(f"parentheses nest more than {MAX_DEPTH} deep", _at(tok))
                open_parens.append(_at(tok))
            elif kind == "RPAR":
                if not open_parens:
                    raise QueryError("')' has no matching '('", _at(tok))
                if prev is not None and prev.type == "LPAR":
                    raise QueryError("empty parentheses", _at(prev))
                if prev is not None and wants_term:
                    raise QueryError(f"{_SHOWN[prev.type]} must be followed by a term", _at(prev))
                open_parens.pop()
            elif kind in ("AND", "OR"):
                if prev is not None and prev.type in _OPERATORS:
                    raise QueryError(f"{_SHOWN[prev.type]} must be followed by a term", _at(prev))
                if wants_term:
                    raise QueryError(f"{_SHOWN[kind]} needs a term before it", _at(tok))
            elif kind == "NEG" and prev is not None and prev.type == "NEG":
                raise QueryError("a term can be negated only once", _at(tok))
            prev = tok
            yield tok
        if prev is not None and prev.type in _OPERATORS:
            raise QueryError(f"{_SHOWN[prev.type]} must be followed by a term", _at(prev))
        if open_parens:
            raise QueryError("'(' is never closed", open_parens[-1])


def _at(tok: Token) -> int:
    assert tok.start_pos is not None
    return tok.start_pos + 1


@functools.cache
def _parser() -> Lark:
    return Lark(_GRAMMAR, parser="lalr", lexer="basic", transformer=_Build(), postlex=_Checks())


# ---------------------------------------------------------------- one term


class _TermError(Exception):
    """A bad term; ``offset`` (0-based) is where in the term's text."""

    def __init__(self, message: str, offset: int = 0) -> None:
        self.message = message
        self.offset = offset


_FIELD_NAMES: dict[str, FieldName | Literal["level"]] = {
    "service": "service",
    "level": "level",
    "traceid": "traceId",
    "trace_id": "traceId",
    "spanid": "spanId",
    "span_id": "spanId",
}
_ID_DIGITS = {"traceId": 32, "spanId": 16}
_HEX = re.compile(r"[0-9a-f]*")
_CLOSED = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_ESCAPE = re.compile(r'\\(["\\])')
_KNOWN = "service, level, traceId, spanId, attr.<key>"


@functools.lru_cache(maxsize=1024)
def _term(kind: str, text: str) -> Node:
    """The node for one term token; pure, so the checks and the parser share the work."""
    if kind == "WORD":
        return _word(text)
    if kind == "PHRASE":
        value = _unquote(text, 0)
        tokens = tuple(message_tokens(value))
        if not tokens:
            raise _TermError("the phrase has no letters or digits to search for")
        return Text(value, tokens, phrase=True)
    if kind == "COMPARE_TERM":
        return _compare(text)
    return _field(text)


def _word(text: str) -> Text:
    value, prefix = _strip_star(text, 0)
    if prefix and not value:
        raise _TermError("a '*' needs letters or digits before it (an empty query matches everything)")
    if prefix and not value[-1].isalnum():
        raise _TermError("a '*' must follow a letter or digit", len(value))
    tokens = tuple(message_tokens(value))
    if not tokens:
        raise _TermError(f"{text!r} has no letters or digits to search for")
    return Text(value, tokens, prefix=prefix)


def _strip_star(text: str, start: int) -> tuple[str, bool]:
    """An unquoted value without its final ``*``; a ``*`` anywhere else is an error."""
    prefix = text.endswith("*")
    value = text[:-1] if prefix else text
    star = value.find("*")
    if star >= 0:
        raise _TermError("'*' is allowed only at the end, for a prefix", start + star)
    return value, prefix


def _unquote(text: str, start: int) -> str:
    if not _CLOSED.fullmatch(text):
        raise _TermError("the quote is never closed", start)
    return _ESCAPE.sub(r"\1", text[1:-1])


def _field(text: str) -> Field | Attr | Level:
    raw_name, _, raw_value = text.partition(":")
    at = len(raw_name) + 1  # where the value starts
    name = _FIELD_NAMES.get(raw_name.lower())
    if name is None and raw_name.lower().startswith("attr.") and len(raw_name) > len("attr."):
        name_or_attr: str = "attr"
    elif name is None:
        hint = "; attr needs a key: attr.<key>" if raw_name.lower() in ("attr", "attr.") else ""
        raise _TermError(f"unknown field {raw_name!r} (fields: {_KNOWN}; quote text with a colon to find it){hint}")
    else:
        name_or_attr = name
    if raw_value.startswith('"'):
        value, prefix = _unquote(raw_value, at), False
        if not value:
            raise _TermError(f"'{raw_name}:' has an empty value ('{raw_name}:*' matches any value)", at)
    else:
        if not raw_value:
            raise _TermError(f"'{raw_name}:' needs a value right after the colon", at)
        value, prefix = _strip_star(raw_value, at)
    if name_or_attr == "attr":
        return Attr(raw_name[len("attr.") :], value, prefix)
    if name_or_attr == "level":
        if prefix:
            raise _TermError("a level takes no '*'", at + len(value))
        low, high = _level(value, at)
        return Level(low, high)
    if name_or_attr in _ID_DIGITS:
        return _id(name_or_attr, value, prefix, at)
    return Field("service", value, prefix)


def _id(name: str, value: str, prefix: bool, at: int) -> Field:
    digits = _ID_DIGITS[name]
    value = value.lower()
    ok = _HEX.fullmatch(value) is not None and (len(value) <= digits if prefix else len(value) == digits)
    if not ok:
        raise _TermError(f"{name} is {digits} hex digits (or fewer followed by '*')", at)
    return Field("traceId" if name == "traceId" else "spanId", value, prefix)


def _level(value: str, at: int) -> tuple[int, int]:
    bounds = LEVELS.get(value.lower())
    if bounds is None:
        raise _TermError(f"unknown level {value!r} (levels: {', '.join(LEVELS)})", at)
    return bounds


def _compare(text: str) -> Level:
    op = text[5:7] if text[6:7] == "=" else text[5:6]
    at = 5 + len(op)
    value = text[at:]
    if not value:
        raise _TermError(f"'level{op}' needs a level right after it", at)
    low, high = _level(value, at)
    if op == ">=":
        bounds = (low, MAX_SEVERITY)
    elif op == ">":
        bounds = (high + 1, MAX_SEVERITY)
    elif op == "<=":
        bounds = (MIN_SEVERITY, high)
    else:
        bounds = (MIN_SEVERITY, low - 1)
    if bounds[0] > bounds[1]:
        raise _TermError(f"no level is {op} {value.lower()}", at)
    return Level(*bounds)


# ---------------------------------------------------------------- back to text


def format_query(node: Node | None) -> str:
    """A query that parses back to ``node`` (for any AST ``parse`` returns)."""
    if node is None:
        return ""
    if isinstance(node, Text):
        if node.phrase or not _is_plain_word(node.value):
            return _quote(node.value)
        return node.value + ("*" if node.prefix else "")
    if isinstance(node, Field | Attr):
        name = node.name if isinstance(node, Field) else f"attr.{node.key}"
        if node.prefix:
            if node.value and not _is_plain_value(node.value):
                raise ValueError(f"a prefix cannot be quoted: {node.value!r}")
            return f"{name}:{node.value}*"
        return f"{name}:{node.value if _is_plain_value(node.value) else _quote(node.value)}"
    if isinstance(node, Level):
        return _format_level(node)
    if isinstance(node, Not):
        inner = node.node
        return "-" + (f"({format_query(inner)})" if isinstance(inner, And | Or | Not) else format_query(inner))
    if isinstance(node, And):
        return " ".join(f"({format_query(i)})" if isinstance(i, Or) else format_query(i) for i in node.items)
    return " OR ".join(format_query(i) for i in node.items)


def _is_plain_word(value: str) -> bool:
    return (
        re.fullmatch(r'[^\s()"\-*][^\s()"*]*', value) is not None
        and value not in ("AND", "OR")
        and re.match(r"[^\W\d][\w.\-/]*:|(?i:level)[<>]", value) is None
    )


def _is_plain_value(value: str) -> bool:
    return re.fullmatch(r'[^\s()"*]+', value) is not None and not value.startswith('"')


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _format_level(node: Level) -> str:
    for name, (low, high) in LEVELS.items():
        if (node.low, node.high) == (low, high):
            return f"level:{name}"
        if (node.low, node.high) == (low, MAX_SEVERITY):
            return f"level>={name}"
        if (node.low, node.high) == (MIN_SEVERITY, high):
            return f"level<={name}"
    raise ValueError(f"severity range {node.low}-{node.high} is not expressible as levels")
