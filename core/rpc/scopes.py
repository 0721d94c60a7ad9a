"""PAT scopes: the 24 narrow scopes, ``X:*`` resource wildcards and ``*``,
read from tokens.proto (the list is written once, there)."""

from __future__ import annotations

from collections.abc import Iterable

from buf.validate import validate_pb2
from observe.v1 import tokens_pb2


def _declared() -> tuple[str, ...]:
    """The narrow scopes as tokens.proto declares them: the closed set that
    ``CreateTokenRequest.scopes`` accepts, less the wildcards."""
    rules = (
        tokens_pb2.CreateTokenRequest.DESCRIPTOR.fields_by_name["scopes"].GetOptions().Extensions[validate_pb2.field]
    )
    return tuple(s for s in getattr(rules.repeated.items.string, "in") if not s.endswith("*"))


SCOPES: tuple[str, ...] = _declared()
WILDCARD = "*"
RESOURCES: frozenset[str] = frozenset(s.split(":", 1)[0] for s in SCOPES)
_NARROW = frozenset(SCOPES)


def is_valid(scope: str) -> bool:
    """A narrow scope, ``X:*`` for a known resource X, or ``*``."""
    if scope == WILDCARD or scope in _NARROW:
        return True
    resource, _, action = scope.partition(":")
    return action == "*" and resource in RESOURCES


def grants(granted: frozenset[str], required: str) -> bool:
    """Whether the ``granted`` set covers the one narrow ``required`` scope."""
    if WILDCARD in granted or required in granted:
        return True
    return f"{required.split(':', 1)[0]}:*" in granted


def expand(scope: str) -> frozenset[str]:
    """The narrow scopes one scope stands for."""
    if scope == WILDCARD:
        return _NARROW
    if scope.endswith(":*"):
        resource = scope[:-2]
        return frozenset(s for s in SCOPES if s.startswith(resource + ":"))
    return frozenset({scope})


def covers(granted: frozenset[str], requested: Iterable[str]) -> list[str]:
    """The requested scopes that ``granted`` does not cover (no escalation)."""
    return [
        scope
        for scope in requested
        if (scope == WILDCARD and WILDCARD not in granted)
        or not all(grants(granted, narrow) for narrow in expand(scope))
    ]
