"""HttpRule path templates compiled to a router.

Templates follow google.api.http: literal segments, ``{field}`` (one
segment), ``{field=pattern}`` with ``*`` (one segment) and ``**`` (the rest),
and an optional ``:verb`` suffix. When several templates match a path, the
more literal one wins, segment by segment from the left (``/monitors/bulk``
over ``/monitors/{id}``, ``/a/b/{x}`` over ``/a/{y}/c``, a ``:verb`` over none),
whatever the HTTP method: when the winner has no binding for the method, the
answer is a 405 with its ``Allow``, never a less literal template's binding
(``GET /monitors/bulk`` is not ``GetMonitor`` with ``id=bulk``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)(?:=([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled path template."""

    text: str
    regex: re.Pattern[str]
    variables: tuple[str, ...]  # field paths, in group order
    specificity: tuple[int, ...]  # lower sorts first: literal 0, "*" 1, "**" 2
    has_verb: bool = False  # ends in a literal ":verb"

    @property
    def rank(self) -> tuple[int, ...]:
        """Sorts the more literal of two templates matching one path first: by
        segment from the left, then a ``:verb`` before none (it is one more
        literal part; without it, ``{id}`` would also match ``5:verb``)."""
        return (*self.specificity, 0 if self.has_verb else 3)

    @property
    def openapi_path(self) -> str:
        """``/a/{name=b/*}`` → ``/a/{name}``."""
        return _VAR.sub(lambda m: "{" + m.group(1) + "}", self.text)


def compile_template(text: str) -> Template:
    verb = ""
    last_slash = text.rfind("/")
    colon = text.find(":", last_slash)
    if colon != -1 and "}" not in text[colon:]:
        text, verb = text[:colon], text[colon:]
    pattern = ["^"]
    variables: list[str] = []
    specificity: list[int] = []
    pos = 0
    for m in _VAR.finditer(text):
        literal = text[pos : m.start()]
        pattern.append(re.escape(literal))
        specificity.extend(0 for s in literal.split("/") if s)
        sub = m.group(2) or "*"
        parts = []
        for seg in sub.split("/"):
            if seg == "**":
                parts.append(".+")
                specificity.append(2)
            elif seg == "*":
                parts.append("[^/]+")
                specificity.append(1)
            else:
                parts.append(re.escape(seg))
                specificity.append(0)
        pattern.append(f"(?P<v{len(variables)}>{'/'.join(parts)})")
        variables.append(m.group(1))
        pos = m.end()
    tail = text[pos:]
    pattern.append(re.escape(tail))
    specificity.extend(0 for s in tail.split("/") if s)
    pattern.append(re.escape(verb) + "$")
    return Template(text + verb, re.compile("".join(pattern)), tuple(variables), tuple(specificity), bool(verb))


@dataclass(slots=True)
class _Entry(Generic[T]):
    template: Template
    targets: dict[str, T] = field(default_factory=dict)  # HTTP method → target


class Router(Generic[T]):
    """Maps (HTTP method, path) to a target plus path variables."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry[T]] = {}
        self._static: dict[str, _Entry[T]] = {}
        self._dynamic: list[_Entry[T]] = []

    def add(self, verb: str, path: str, target: T) -> Template:
        entry = self._entries.get(path)
        if entry is None:
            entry = _Entry(compile_template(path))
            self._entries[path] = entry
            if entry.template.variables:
                self._dynamic.append(entry)
                self._dynamic.sort(key=lambda e: e.template.rank)
            else:
                self._static[path] = entry
        if verb in entry.targets:
            raise ValueError(f"{verb} {path} is bound twice")
        entry.targets[verb] = target
        return entry.template

    def match(self, verb: str, path: str) -> tuple[T, Template, dict[str, str]] | list[str]:
        """The target, its template and path variables; or, when the most
        literal template matching the path has no binding for this method,
        the methods it allows (empty: no template matches, a 404)."""
        entry = self._static.get(path)
        if entry is not None:  # all literal: nothing matches more closely
            target = entry.targets.get(verb)
            if target is not None:
                return target, entry.template, {}
            return sorted(entry.targets)
        allowed: list[str] = []
        best: tuple[int, ...] | None = None
        for entry in self._dynamic:  # most literal first
            if best is not None and entry.template.rank != best:
                break  # only less literal templates are left
            m = entry.template.regex.match(path)
            if m is None:
                continue
            best = entry.template.rank
            target = entry.targets.get(verb)
            if target is None:
                allowed.extend(entry.targets)
                continue
            groups = m.groups()
            return target, entry.template, {var: groups[i] for i, var in enumerate(entry.template.variables)}
        return sorted(set(allowed))

    def entries(self) -> list[tuple[Template, dict[str, T]]]:
        return [(e.template, e.targets) for e in self._entries.values()]
