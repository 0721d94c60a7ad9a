"""PAT scopes: the 24 narrow scopes, ``X:*`` resource wildcards and ``*``."""

from __future__ import annotations

from collections.abc import Iterable

SCOPES: tuple[str, ...] = (
    "monitors:read",
    "monitors:write",
    "secrets:read",
    "secrets:write",
    "incidents:read",
    "incidents:write",
    "status-pages:read",
    "status-pages:write",
    "subscribers:read",
    "subscribers:write",
    "maintenance:read",
    "maintenance:write",
    "logs:read",
    "logs:write",
    "alerts:read",
    "alerts:write",
    "tokens:read",
    "tokens:write",
    "members:read",
    "members:write",
    "webhooks:read",
    "webhooks:write",
    "audit:read",
    "account:write",
)
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
