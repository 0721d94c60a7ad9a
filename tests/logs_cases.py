"""One table of log-query cases that every engine must answer alike: the
Python matcher (core.logs.match, the live tail's filter), SQLite FTS5 and
PostgreSQL. ``RECORDS`` is a small dataset with a name per record; ``CASES``
pairs a query with the names it must find. tests/test_log_search_backends.py
runs the table against each engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from core.logs.records import LogRecord, level_of

TRACE_A = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_A = "00f067aa0ba902b7"
TRACE_G = "0af7651916cd43dd8448eb211c80319c"

# name: (message, service, severity, attributes, resource, trace_id, span_id)
_DATA: dict[str, tuple[str, str | None, int, dict[str, Any], dict[str, Any], str | None, str | None]] = {
    "a": (
        "Connection refused to db-1 at 10.0.0.5",
        "api",
        17,
        {"http.method": "GET", "http.status_code": 500, "user": "alice"},
        {"service.name": "api"},
        TRACE_A,
        SPAN_A,
    ),
    "b": (
        "connection reset by peer",
        "api",
        13,
        {"http.method": "POST", "retry": True},
        {"service.name": "api", "host.name": "web-1"},
        None,
        None,
    ),
    "c": ("User alice logged in", "auth", 9, {"user": "alice", "ratio": 1.5}, {"service.name": "auth"}, None, None),
    "d": (
        "Timeout while calling /api/users",
        "worker",
        17,
        {"tags": ["a", "b"], "nested": {"k": "v"}},
        {"service.name": "worker"},
        None,
        None,
    ),
    "e": ("timer fired: cleanup", "worker", 5, {"empty": ""}, {"service.name": "worker"}, None, None),
    "f": ("Café crème", None, 9, {}, {}, None, None),
    "g": ("GET /health 200", "api-gateway", 9, {}, {"service.name": "api-gateway"}, TRACE_G, None),
    "h": ("fatal: out of memory", "api", 21, {}, {"service.name": "api"}, None, None),
    "i": ("unspecified severity", "api", 0, {}, {"service.name": "api"}, None, None),
    "j": ("refused connection", "auth", 13, {}, {"service.name": "auth"}, None, None),
    "k": ("user_id=42 not found", "api", 9, {"user_id": 42}, {"service.name": "api"}, None, None),
    # Text FTS5's unicode61 split or folded unlike message_tokens: a decomposed
    # accent (U+0308 is no letter: it splits the word), a private-use
    # character, dotted capital I (lower() gives i + U+0307), a final sigma,
    # Georgian Mtavruli (Unicode 11) and Adlam (Unicode 9) capitals.
    "l": (
        "nai\u0308ve a\ue000b \u0130stanbul \u039f\u0394\u039f\u03a3 \u1c92\u1c90\u1c9b\u1c90 \U0001e900\U0001e923",
        None,
        9,
        {},
        {},
        None,
        None,
    ),
    # Numbers JSON writes exactly and SQLite's REAL would not (15 digits).
    "m": (
        "float attributes",
        None,
        9,
        {"f": 0.30000000000000004, "z": -0.0, "tiny": 1e-7, "big": 2**53 + 1, "u64": 2**64 - 1},
        {"e": 1e20},
        None,
        None,
    ),
}
# The other org's record: no query of org 1 ever finds it.
OTHER_ORG_MESSAGE = ("Connection refused", "api", 17)

ORDER = list(_DATA)  # oldest first: record n is n seconds after the base time


def record(message: str, service: str | None, severity: int, at: datetime, **extra: Any) -> LogRecord:
    return LogRecord(
        timestamp=at,
        observed_at=at,
        severity_number=severity,
        severity_text="",
        level=level_of(severity),
        message=message,
        service=service,
        trace_id=extra.get("trace_id"),
        span_id=extra.get("span_id"),
        attributes=extra.get("attributes", {}),
        resource=extra.get("resource", {}),
    )


def records(base: datetime | None = None) -> dict[str, LogRecord]:
    """The dataset, record ``n`` stamped ``base + n seconds`` (base: ten minutes ago)."""
    base = base or (datetime.now(UTC) - timedelta(minutes=10)).replace(microsecond=0)
    out: dict[str, LogRecord] = {}
    for n, (name, (message, service, severity, attrs, resource, trace, span)) in enumerate(_DATA.items()):
        out[name] = record(
            message,
            service,
            severity,
            base + timedelta(seconds=n),
            attributes=attrs,
            resource=resource,
            trace_id=trace,
            span_id=span,
        )
    return out


ALL = "abcdefghijklm"

# (query, the names it finds). Order does not matter here: engines return
# newest first, which the test checks separately.
CASES: list[tuple[str, str]] = [
    ("", ALL),
    ("   ", ALL),
    # words: whole tokens, case-insensitive, accents kept
    ("refused", "aj"),
    ("REFUSED", "aj"),
    ("connection", "abj"),
    ("timeout", "d"),
    ("tim", ""),
    ("user", "ck"),
    ("42", "k"),
    ("café", "f"),
    ("CAFÉ", "f"),
    ("cafe", ""),
    ("crème", "f"),
    ("memory fatal", "h"),
    # tokens as message_tokens makes them, on every engine (record l)
    ('"nai ve"', "l"),
    ("nai\u0308ve", "l"),
    ("na\u00efve", ""),
    ("naive", ""),
    ("a\ue000b", "l"),
    ('"b i stanbul"', "l"),
    ("\u0130stanbul", "l"),
    ("istanbul", ""),
    ("stan*", "l"),
    ("\u039f\u0394\u039f\u03a3", "l"),
    ("\u03bf\u03b4\u03bf\u03c2", "l"),
    ("\u03bf\u03b4\u03bf\u03c3", ""),
    ("\u10d2\u10d0\u10db\u10d0", "l"),
    ("\u1c92\u1c90*", "l"),
    ("\U0001e922\U0001e923", "l"),
    ("\U0001e900\U0001e923", "l"),
    # prefixes
    ("connect*", "abj"),
    ("time*", "de"),
    ("ref*", "aj"),
    # phrases: tokens adjacent, in order
    ('"connection refused"', "a"),
    ('"refused connection"', "j"),
    ('"Connection Refused to"', "a"),
    ('"refused to db"', "a"),
    ('"connection refused" OR "refused connection"', "aj"),
    ('"GET /health"', "g"),
    ('"reset by pe*"', ""),
    ("reset by pe*", "b"),
    # a word that splits into several tokens is a phrase
    ("/api/users", "d"),
    ("user_id", "k"),
    ("db-1", "a"),
    ("10.0.0.5", "a"),
    # fields
    ("service:api", "abhik"),
    ('service:"api"', "abhik"),
    ("service:API", ""),
    ("service:api*", "abghik"),
    ("service:*", "abcdeghijk"),
    ("-service:*", "flm"),
    ("-service:api", "cdefgjlm"),
    (f"traceId:{TRACE_A}", "a"),
    (f"traceId:{TRACE_A.upper()}", "a"),
    (f"traceId:{TRACE_A[:8]}*", "a"),
    ("traceId:*", "ag"),
    (f"spanId:{SPAN_A}", "a"),
    ("spanId:*", "a"),
    # levels (severity 0 is in none)
    ("level:error", "ad"),
    ("level:fatal", "h"),
    ("level>=warn", "abdhj"),
    ("level>warn", "adh"),
    ("level<warn", "cefgklm"),
    ("level<=info", "cefgklm"),
    ("level:debug", "e"),
    ("-level:info", "abdehij"),
    # attributes: record or resource, exact and case-sensitive, as text
    ("attr.http.method:GET", "a"),
    ("attr.http.method:get", ""),
    ("attr.http.status_code:500", "a"),
    ("attr.http.status_code:5*", "a"),
    ("attr.retry:true", "b"),
    ("attr.ratio:1.5", "c"),
    ("attr.user:alice", "ac"),
    ("attr.user:ali*", "ac"),
    ("attr.user:*", "ac"),
    ("attr.host.name:web-1", "b"),
    ("attr.service.name:worker", "de"),
    ("attr.empty:*", ""),
    ("attr.tags:*", "d"),
    ("attr.nested:*", "d"),
    ("attr.tags:a", ""),
    ("attr.user_id:42", "k"),
    ('attr.user_id:"42"', "k"),
    ("attr.missing:*", ""),
    ("-attr.user:alice", "bdefghijklm"),
    # numbers as JSON writes them: every digit, the sign of zero, exponents (record m)
    ("attr.f:0.30000000000000004", "m"),
    ("attr.f:0.3", ""),
    ("attr.f:0.3000000000000000*", "m"),
    ("attr.z:-0.0", "m"),
    ("attr.tiny:1e-7", "m"),
    ("attr.tiny:1.0e-07", ""),
    ("attr.big:9007199254740993", "m"),
    ("attr.big:9007199254740992", ""),
    ("attr.u64:18446744073709551615", "m"),
    ("attr.e:1e+20", "m"),
    ("attr.e:1e20", ""),
    # boolean structure
    ("service:api level:error", "a"),
    ("service:api AND level:error", "a"),
    ("level:error OR level:fatal", "adh"),
    ("service:auth (refused OR alice)", "cj"),
    ("refused OR alice service:worker", "aj"),
    ("(refused OR alice) service:auth", "cj"),
    ("-refused connection", "b"),
    ("-(refused OR reset) connection", ""),
    ("-(-refused)", "aj"),
    ("service:api -level:error -level:fatal", "bik"),
    ("(service:api OR service:auth) (level:warn OR level:info)", "bcjk"),
]

# Queries that must be refused, with the 1-based position the error names.
BAD_QUERIES: list[tuple[str, int]] = [
    ('"unclosed', 1),
    ("foo:bar", 1),
    ("a (b", 3),
    ("a)", 2),
    ("level>=loud", 8),
    ("- a", 1),
    ("a OR", 3),
    ('attr.empty:""', 12),
]

# Counts per service over the whole dataset (count(group_by="service")).
COUNT_BY_SERVICE: dict[str | None, int] = {"api": 5, "auth": 2, "worker": 2, "api-gateway": 1, None: 3}
