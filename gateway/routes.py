"""HttpRule path templates compiled to a router.

Templates follow google.api.http: literal segments, ``{field}`` (one
segment), ``{field=pattern}`` with ``*`` (one segment) and ``**`` (the rest),
and an optional ``:verb`` suffix. When several templates match a path, the
more literal one wins (``/monitors/bulk`` before ``/monitors/{id}``); a path
that matches but not for this HTTP method is a 405 with ``Allow``.
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
    return Template(text + verb, re.compile("".join(pattern)), tuple(variables), tuple(specificity))


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
                self._dynamic.sort(key=lambda e: (len(e.template.specificity), e.template.specificity))
            else:
                self._static[path] = entry
        if verb in entry.targets:
            raise ValueError(f"{verb} {path} is bound twice")
        entry.targets[verb] = target
        return entry.template

    def match(self, verb: str, path: str) -> tuple[T, Template, dict[str, str]] | list[str]:
        """The target, its template and path variables; or, when no template
        takes this method, the methods allowed on the path (empty: 404)."""
        allowed: list[str] = []
        entry = self._static.get(path)
        if entry is not None:
            target = entry.targets.get(verb)
            if target is not None:
                return target, entry.template, {}
            allowed.extend(entry.targets)
        for entry in self._dynamic:
            m = entry.template.regex.match(path)
            if m is None:
                continue
            target = entry.targets.get(verb)
            if target is None:
                allowed.extend(entry.targets)
                continue
            groups = m.groups()
            return target, entry.template, {var: groups[i] for i, var in enumerate(entry.template.variables)}
        return sorted(set(allowed))

    def entries(self) -> list[tuple[Template, dict[str, T]]]:
        return [(e.template, e.targets) for e in self._entries.values()]
