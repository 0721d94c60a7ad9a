"""The log query language (core/logs/query.py): every feature, every error and its 1-based position."""

from __future__ import annotations

import random

import pytest

from core.errors import ErrorCode
from core.logs.query import (
    LEVELS,
    MAX_DEPTH,
    MAX_QUERY_CHARS,
    MAX_TERMS,
    And,
    Attr,
    Field,
    Level,
    Node,
    Not,
    Or,
    QueryError,
    Text,
    format_query,
    message_tokens,
    parse,
)


def w(value: str, prefix: bool = False) -> Text:
    return Text(value, tuple(message_tokens(value)), prefix=prefix)


def p(value: str) -> Text:
    return Text(value, tuple(message_tokens(value)), phrase=True)


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"

VALID: list[tuple[str, Node | None]] = [
    # empty
    ("", None),
    ("   \t\n ", None),
    # words
    ("timeout", w("timeout")),
    ("TimeOut", Text("TimeOut", ("timeout",))),
    ("  timeout  ", w("timeout")),
    ("time*", w("time", prefix=True)),
    ("a-b", Text("a-b", ("a", "b"))),
    ("/api/users", Text("/api/users", ("api", "users"))),
    ("user_id", Text("user_id", ("user", "id"))),
    ("api/us*", Text("api/us", ("api", "us"), prefix=True)),
    ("12:30:45", Text("12:30:45", ("12", "30", "45"))),
    ("level=warn", Text("level=warn", ("level", "warn"))),
    ("latency>5", Text("latency>5", ("latency", "5"))),
    ("café", w("café")),
    ("日本語", w("日本語")),
    ("ÄRGER*", Text("ÄRGER", ("ärger",), prefix=True)),
    ("ORACLE ANDROID", And((w("ORACLE"), w("ANDROID")))),
    ("and or not NOT Or", And((w("and"), w("or"), w("not"), w("NOT"), w("Or")))),
    ("foo-", w("foo-")),
    # phrases
    ('"connection reset"', p("connection reset")),
    ('"Connection  RESET"', Text("Connection  RESET", ("connection", "reset"), phrase=True)),
    ('"a OR b"', p("a OR b")),
    ('"(x)"', p("(x)")),
    ('"time*"', p("time*")),
    ('"say \\"hi\\""', p('say "hi"')),
    ('"C:\\temp\\\\"', p("C:\\temp\\")),
    ('"a\\nb"', p("a\\nb")),
    ('"service:api"', p("service:api")),
    ('"-x"', p("-x")),
    ('"日本 語"', p("日本 語")),
    ('foo"bar"', And((w("foo"), p("bar")))),
    # service
    ("service:api", Field("service", "api")),
    ("SERVICE:Api", Field("service", "Api")),
    ("service:checkout-api*", Field("service", "checkout-api", prefix=True)),
    ("service:*", Field("service", "", prefix=True)),
    ('service:"my api"', Field("service", "my api")),
    ('service:"api*"', Field("service", "api*")),
    ("service:OR", Field("service", "OR")),
    ("service:-api", Field("service", "-api")),
    ("service:a:b", Field("service", "a:b")),
    ('service:"a"b', And((Field("service", "a"), w("b")))),
    # ids
    (f"traceId:{TRACE}", Field("traceId", TRACE)),
    (f"traceId:{TRACE.upper()}", Field("traceId", TRACE)),
    (f"traceid:{TRACE}", Field("traceId", TRACE)),
    (f"trace_id:{TRACE}", Field("traceId", TRACE)),
    (f'traceId:"{TRACE}"', Field("traceId", TRACE)),
    ("traceId:4bf9*", Field("traceId", "4bf9", prefix=True)),
    (f"traceId:{TRACE}*", Field("traceId", TRACE, prefix=True)),
    ("traceId:*", Field("traceId", "", prefix=True)),
    (f"spanId:{SPAN}", Field("spanId", SPAN)),
    (f"span_id:{SPAN.upper()}", Field("spanId", SPAN)),
    ("spanId:00f0*", Field("spanId", "00f0", prefix=True)),
    # attributes
    ("attr.http.method:GET", Attr("http.method", "GET")),
    ("ATTR.Http.Method:GET", Attr("Http.Method", "GET")),
    ("attr.user_id:42", Attr("user_id", "42")),
    ("attr.k8s-pod/name:web-1", Attr("k8s-pod/name", "web-1")),
    ("attr.http.url:https://x.example/a?b=c", Attr("http.url", "https://x.example/a?b=c")),
    ('attr.msg:"a b"', Attr("msg", "a b")),
    ("attr.path:/api*", Attr("path", "/api", prefix=True)),
    ("attr.user:*", Attr("user", "", prefix=True)),
    ("attr.ключ:значение", Attr("ключ", "значение")),
    # levels
    *[(f"level:{name}", Level(low, high)) for name, (low, high) in LEVELS.items()],
    ("level:WARN", Level(13, 16)),
    ('level:"warn"', Level(13, 16)),
    ("level>=warn", Level(13, 24)),
    ("level>warn", Level(17, 24)),
    ("level<=warn", Level(1, 16)),
    ("level<warn", Level(1, 12)),
    ("level>=trace", Level(1, 24)),
    ("level<=fatal", Level(1, 24)),
    ("level>error", Level(21, 24)),
    ("level<debug", Level(1, 4)),
    ("LEVEL>=Error", Level(17, 24)),
    # negation
    ("-timeout", Not(w("timeout"))),
    ('-"a b"', Not(p("a b"))),
    ("-service:api", Not(Field("service", "api"))),
    ("-level>=warn", Not(Level(13, 24))),
    ("-attr.user:*", Not(Attr("user", "", prefix=True))),
    ("-(a OR b)", Not(Or((w("a"), w("b"))))),
    ("-(-a)", Not(Not(w("a")))),
    ("-(a)", Not(w("a"))),
    ("a -b", And((w("a"), Not(w("b"))))),
    # AND, OR, grouping
    ("a b", And((w("a"), w("b")))),
    ("a AND b", And((w("a"), w("b")))),
    ("a b c", And((w("a"), w("b"), w("c")))),
    ("a OR b", Or((w("a"), w("b")))),
    ("a OR b OR c", Or((w("a"), w("b"), w("c")))),
    ("a b OR c", Or((And((w("a"), w("b"))), w("c")))),
    ("a OR b c", Or((w("a"), And((w("b"), w("c")))))),
    ("a AND b OR c AND d", Or((And((w("a"), w("b"))), And((w("c"), w("d")))))),
    ("a (b OR c)", And((w("a"), Or((w("b"), w("c")))))),
    ("(a OR b) c", And((Or((w("a"), w("b"))), w("c")))),
    ("(a)", w("a")),
    ("((a))", w("a")),
    ("a (b c) d", And((w("a"), w("b"), w("c"), w("d")))),
    ("(a OR b) OR c", Or((w("a"), w("b"), w("c")))),
    ("a(b)", And((w("a"), w("b")))),
    ("(a)(b)", And((w("a"), w("b")))),
    ("a\tAND\nb", And((w("a"), w("b")))),
    (
        'level>=error service:api -attr.http.route:/health* (timeout OR "connection reset")',
        And(
            (
                Level(17, 24),
                Field("service", "api"),
                Not(Attr("http.route", "/health", prefix=True)),
                Or((w("timeout"), p("connection reset"))),
            )
        ),
    ),
]


@pytest.mark.parametrize(("q", "expected"), VALID, ids=[repr(q) for q, _ in VALID])
def test_it_parses(q: str, expected: Node | None) -> None:
    assert parse(q) == expected


# (query, the message's start, 1-based position)
ERRORS: list[tuple[str, str, int]] = [
    # quotes
    ('"abc', "the quote is never closed", 1),
    ('a "b c', "the quote is never closed", 3),
    ('"a\\"', "the quote is never closed", 1),
    ('service:"abc', "the quote is never closed", 9),
    ('attr.k:"abc', "the quote is never closed", 8),
    ('""', "the phrase has no letters or digits", 1),
    ('a "..."', "the phrase has no letters or digits", 3),
    # words
    ("*", "a '*' needs letters or digits before it", 1),
    ("a *", "a '*' needs letters or digits before it", 3),
    ("a*b", "'*' is allowed only at the end", 2),
    ("a**", "'*' is allowed only at the end", 2),
    ("a-*", "a '*' must follow a letter or digit", 3),
    ("!!!", "'!!!' has no letters or digits", 1),
    ("ok :-)", "':-' has no letters or digits", 4),
    # minus
    ("-", "'-' must be directly followed by a term", 1),
    ("- a", "'-' must be directly followed by a term", 1),
    ("a -", "'-' must be directly followed by a term", 3),
    ("(a -)", "'-' must be directly followed by a term", 4),
    ("--x", "a term can be negated only once", 2),
    ("a ---x", "a term can be negated only once", 4),
    ("-OR a", "'-' must be followed by a term", 1),
    # AND / OR
    ("OR", "'OR' needs a term before it", 1),
    ("OR a", "'OR' needs a term before it", 1),
    ("AND a", "'AND' needs a term before it", 1),
    ("(OR a)", "'OR' needs a term before it", 2),
    ("a OR", "'OR' must be followed by a term", 3),
    ("a AND", "'AND' must be followed by a term", 3),
    ("a OR OR b", "'OR' must be followed by a term", 3),
    ("a AND OR b", "'AND' must be followed by a term", 3),
    ("a OR AND b", "'OR' must be followed by a term", 3),
    ("(a OR) b", "'OR' must be followed by a term", 4),
    ("(a OR", "'OR' must be followed by a term", 4),
    # parentheses
    ("(a", "'(' is never closed", 1),
    ("(a (b)", "'(' is never closed", 1),
    ("a (b (c)", "'(' is never closed", 3),
    ("a)", "')' has no matching '('", 2),
    (")", "')' has no matching '('", 1),
    ("(a))", "')' has no matching '('", 4),
    ("()", "empty parentheses", 1),
    ("a ( ) b", "empty parentheses", 3),
    ("-()", "empty parentheses", 2),
    # fields
    ("foo:bar", "unknown field 'foo'", 1),
    ("a http://x", "unknown field 'http'", 3),
    ("C:\\temp", "unknown field 'C'", 1),
    ("error:", "unknown field 'error'", 1),
    ("attr:x", "unknown field 'attr'", 1),
    ("attr.:x", "unknown field 'attr.'", 1),
    ("service:", "'service:' needs a value right after the colon", 9),
    ("service: api", "'service:' needs a value right after the colon", 9),
    ("service:(api)", "'service:' needs a value right after the colon", 9),
    ('service:""', "'service:' has an empty value", 9),
    ("service:a*b", "'*' is allowed only at the end", 10),
    ("service:**", "'*' is allowed only at the end", 9),
    ("attr.k:", "'attr.k:' needs a value", 8),
    # ids
    ("traceId:abc", "traceId is 32 hex digits", 9),
    (f"traceId:{TRACE}0", "traceId is 32 hex digits", 9),
    (f"traceId:{TRACE[:-1]}g", "traceId is 32 hex digits", 9),
    (f"traceId:{TRACE}0*", "traceId is 32 hex digits", 9),
    ("spanId:xyz*", "spanId is 16 hex digits", 8),
    (f"spanId:{TRACE}", "spanId is 16 hex digits", 8),
    # levels
    ("level:warning", "unknown level 'warning'", 7),
    ("level:13", "unknown level '13'", 7),
    ("level:warn*", "a level takes no '*'", 11),
    ("level:*", "a level takes no '*'", 7),
    ("level>=", "'level>=' needs a level right after it", 8),
    ("level>", "'level>' needs a level right after it", 7),
    ('level>="warn"', "'level>=' needs a level right after it", 8),
    ("level>=loud", "unknown level 'loud'", 8),
    ("level<trace", "no level is < trace", 7),
    ("level>FATAL", "no level is > fatal", 7),
    # limits
    ("a" * (MAX_QUERY_CHARS + 1), f"the query is longer than {MAX_QUERY_CHARS} characters", MAX_QUERY_CHARS + 1),
    (" ".join(["a"] * (MAX_TERMS + 1)), f"the query has more than {MAX_TERMS} terms", 2 * MAX_TERMS + 1),
    ("(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1), "parentheses nest more than", MAX_DEPTH + 1),
    # the leftmost error wins
    ("foo:bar )", "unknown field 'foo'", 1),
    ("service: )", "'service:' needs a value", 9),
    ('a OR "b', "the quote is never closed", 6),
]


@pytest.mark.parametrize(("q", "message", "position"), ERRORS, ids=[repr(q[:40]) for q, _, _ in ERRORS])
def test_it_rejects_with_the_position(q: str, message: str, position: int) -> None:
    with pytest.raises(QueryError) as caught:
        parse(q)
    error = caught.value
    assert error.message.startswith(message), error.message
    assert error.position == position
    assert str(error) == f"{error.message} at position {position}"


def test_limits_are_inclusive() -> None:
    assert parse("a" * MAX_QUERY_CHARS) == w("a" * MAX_QUERY_CHARS)
    many = parse(" ".join(f"w{i}" for i in range(MAX_TERMS)))
    assert isinstance(many, And)
    assert len(many.items) == MAX_TERMS
    assert parse("(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH) == w("a")
    deep_not = parse("-(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH)
    for _ in range(MAX_DEPTH):
        assert isinstance(deep_not, Not)
        deep_not = deep_not.node
    assert deep_not == w("a")


def test_an_unknown_field_names_the_fields_and_the_way_out() -> None:
    with pytest.raises(QueryError) as caught:
        parse("sevice:api")
    assert "service, level, traceId, spanId, attr.<key>" in caught.value.message
    assert "quote" in caught.value.message


def test_a_query_error_becomes_the_apis_validation_error() -> None:
    with pytest.raises(QueryError) as caught:
        parse("a OR")
    error = caught.value.as_validation_error()
    assert error.code == ErrorCode.ERROR_CODE_VALIDATION_FAILED
    assert error.http_status == 400
    (violation,) = error.fields
    assert (violation.path, violation.code) == ("q", "invalid_string")
    assert violation.message == "'OR' must be followed by a term at position 3"


@pytest.mark.parametrize(
    ("message", "tokens"),
    [
        ("Connection reset by peer", ["connection", "reset", "by", "peer"]),
        ("GET /api/users?id=42 -> 500", ["get", "api", "users", "id", "42", "500"]),
        ("user_id=7 CAFÉ 日本語", ["user", "id", "7", "café", "日本語"]),
        ("", []),
        ("--- !!! ---", []),
    ],
)
def test_message_tokens_are_runs_of_letters_and_digits_lower_cased(message: str, tokens: list[str]) -> None:
    assert message_tokens(message) == tokens


@pytest.mark.parametrize(("q", "expected"), VALID, ids=[repr(q) for q, _ in VALID])
def test_format_query_parses_back_to_the_same_tree(q: str, expected: Node | None) -> None:
    assert parse(format_query(expected)) == expected


@pytest.mark.parametrize(
    ("node", "text"),
    [
        (And((w("a"), Or((w("b"), w("c"))))), "a (b OR c)"),
        (Or((And((w("a"), w("b"))), w("c"))), "a b OR c"),
        (Not(And((w("a"), w("b")))), "-(a b)"),
        (Not(Not(w("a"))), "-(-a)"),
        (Level(13, 24), "level>=warn"),
        (Level(1, 12), "level<=info"),
        (Field("service", "my api"), 'service:"my api"'),
        (Attr("k", 'say "hi"'), 'attr.k:"say \\"hi\\""'),
        (w("AND"), '"AND"'),
        (Text("service:api", ("service", "api")), '"service:api"'),
    ],
)
def test_format_query_writes_the_canonical_text(node: Node, text: str) -> None:
    assert format_query(node) == text


def test_a_severity_range_that_is_no_level_cannot_be_formatted() -> None:
    with pytest.raises(ValueError, match="5-12"):
        format_query(Level(5, 12))


# ------------------------------------------------------------- random round trips

_WORDS = ["timeout", "Error", "api/v1", "café", "x-y", "日本", "id_7", "OR", "AND", "level", "a:b"]
_VALUES = ["api", "My Service", 'q"uote', "back\\slash", "a*b", "-x", "ünï", "(p)"]


def _random_leaf(rng: random.Random) -> Node:
    kind = rng.randrange(6)
    if kind == 0:
        word = rng.choice(_WORDS)
        return Text(word, tuple(message_tokens(word)), phrase=True)
    if kind == 1:
        word = rng.choice([x for x in _WORDS if x not in ("OR", "AND", "a:b")])
        return Text(word, tuple(message_tokens(word)), prefix=word[-1].isalnum() and rng.random() < 0.3)
    if kind == 2:
        value = rng.choice(_VALUES)
        prefix = rng.random() < 0.3 and "*" not in value and " " not in value and '"' not in value
        return Field("service", value.replace("(", "").replace(")", "") if prefix else value, prefix)
    if kind == 3:
        return Attr(rng.choice(["http.method", "user", "k8s.pod/name"]), rng.choice(_VALUES))
    if kind == 4:
        return Field("traceId", TRACE[: rng.randrange(33)], prefix=True)
    low, high = rng.choice(list(LEVELS.values()))
    return rng.choice([Level(low, high), Level(low, 24), Level(1, high)])


def _random_tree(rng: random.Random, depth: int) -> Node:
    if depth == 0 or rng.random() < 0.3:
        return _random_leaf(rng)
    kind = rng.randrange(3)
    if kind == 0:
        return Not(_random_tree(rng, depth - 1))
    cls = And if kind == 1 else Or
    items: list[Node] = []
    for _ in range(rng.randrange(2, 4)):
        item = _random_tree(rng, depth - 1)
        items.extend(item.items if isinstance(item, cls) else (item,))
    return cls(tuple(items))


def test_random_trees_survive_format_and_parse() -> None:
    rng = random.Random(13)
    checked = 0
    for _ in range(500):
        tree = _random_tree(rng, 4)
        text = format_query(tree)
        if len(text) > MAX_QUERY_CHARS:
            continue
        assert parse(text) == tree, text
        checked += 1
    assert checked > 400
