"""CEL text as a syntax tree, for the rules the OpenAPI document publishes.

In: the expression of a ``buf.validate`` CEL rule. Out: its syntax tree, or
UntranslatableError for text outside the grammar read here (the operators,
member calls, indexes, lists and literals of CEL; no maps or macros beyond
calls). Nodes are tuples: ``("lit", value)``, ``("id", name)``, ``("list",
[items])``, ``("get", target, field)``, ``("index", target, index)``,
``("call", name, target or None, [args])``, ``("!", x)``, ``("neg", x)``,
``("?", cond, then, otherwise)`` and ``(op, left, right)`` for the binary
operators (``||``, ``&&``, comparisons, ``in``, arithmetic). Also the text a
rule shows people (rule_text).
"""

from __future__ import annotations

import re
from typing import Any

Node = tuple[Any, ...]


class UntranslatableError(Exception):
    """The expression is outside what is read or translated here."""


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>\d+\.\d+(?:[eE][+-]?\d+)?|0x[0-9a-fA-F]+u?|\d+u?)
    | (?P<str>[rR]?'(?:\\.|[^'\\])*'|[rR]?"(?:\\.|[^"\\])*")
    | (?P<op>\|\||&&|==|!=|<=|>=|[-+*/%<>!?:.,()\[\]])
    | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.X,
)


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise UntranslatableError(text[pos:])
        pos = m.end()
        if m.group("num"):
            raw = m.group("num").rstrip("u")
            out.append(("lit", float(raw) if "." in raw else int(raw, 0)))
        elif m.group("str"):
            raw = m.group("str")
            if raw[0] in "rR":
                out.append(("lit", raw[2:-1]))
            else:
                out.append(("lit", _unescape(raw[1:-1])))
        elif m.group("op"):
            out.append(("op", m.group("op")))
        else:
            word = m.group("id")
            if word in ("true", "false"):
                out.append(("lit", word == "true"))
            elif word == "null":
                out.append(("lit", None))
            elif word == "in":
                out.append(("op", "in"))
            else:
                out.append(("id", word))
    return out


def _unescape(text: str) -> str:
    simple = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "'": "'", '"': '"', "`": "`", "?": "?"}

    def repl(m: re.Match[str]) -> str:
        body = m.group(1)
        if body[0] in simple:
            return simple[body[0]] + body[1:]
        if body[0] in "uUx":
            return chr(int(body[1:], 16))
        raise UntranslatableError(body)

    return re.sub(r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|x[0-9a-fA-F]{2}|.)", repl, text)


class _Parser:
    """Recursive descent over the CEL grammar; nodes are tuples."""

    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, op: str | None = None) -> tuple[str, Any]:
        tok = self.peek()
        if tok is None or (op is not None and tok != ("op", op)):
            raise UntranslatableError(f"expected {op}")
        self.i += 1
        return tok

    def at(self, op: str) -> bool:
        return self.peek() == ("op", op)

    def parse(self) -> Node:
        node = self.expr()
        if self.peek() is not None:
            raise UntranslatableError("trailing input")
        return node

    def expr(self) -> Node:
        cond = self.binary(0)
        if self.at("?"):
            self.take("?")
            then = self.expr()
            self.take(":")
            return ("?", cond, then, self.expr())
        return cond

    _LEVELS: tuple[tuple[str, ...], ...] = (
        ("||",),
        ("&&",),
        ("==", "!=", "<", "<=", ">", ">=", "in"),
        ("+", "-"),
        ("*", "/", "%"),
    )

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while (tok := self.peek()) is not None and tok[0] == "op" and tok[1] in self._LEVELS[level]:
            self.take()
            node = (tok[1], node, self.binary(level + 1))
        return node

    def unary(self) -> Node:
        if self.at("!"):
            self.take("!")
            return ("!", self.unary())
        if self.at("-"):
            self.take("-")
            return ("neg", self.unary())
        return self.member()

    def member(self) -> Node:
        node = self.primary()
        while True:
            if self.at("."):
                self.take(".")
                kind, name = self.take()
                if kind != "id":
                    raise UntranslatableError("member")
                node = ("call", name, node, self.args(")")) if self.at("(") else ("get", node, name)
            elif self.at("["):
                self.take("[")
                index = self.expr()
                self.take("]")
                node = ("index", node, index)
            else:
                return node

    def args(self, close: str) -> list[Node]:
        self.take("(" if close == ")" else "[")
        out: list[Node] = []
        while not self.at(close):
            out.append(self.expr())
            if not self.at(close):
                self.take(",")
        self.take(close)
        return out

    def primary(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise UntranslatableError("end of input")
        if tok == ("op", "("):
            self.take("(")
            node = self.expr()
            self.take(")")
            return node
        if tok == ("op", "["):
            return ("list", self.args("]"))
        kind, value = self.take()
        if kind == "lit":
            return ("lit", value)
        if kind == "id":
            if self.at("("):
                return ("call", value, None, self.args(")"))
            return ("id", value)
        raise UntranslatableError(str(value))


def parse(text: str) -> Node:
    """The syntax tree of a CEL expression."""
    return _Parser(text).parse()


def rule_text(message: str, expression: str) -> str:
    """What a CEL rule says, for people: its message; else, for a rule that
    returns its message (``cond ? '' : 'Must be …' + …``), the literal text of
    that message; else the expression."""
    if message:
        return message
    try:
        node = parse(expression)
    except UntranslatableError:
        return expression
    while node[0] == "?" and node[2] == ("lit", ""):
        node = node[3]
    parts: list[str] = []

    def walk(n: Node) -> None:
        if n[0] == "+":
            walk(n[1])
            walk(n[2])
        elif n[0] == "lit" and isinstance(n[1], str):
            parts.append(n[1])
        else:
            parts.append("…")

    walk(node)
    text = "".join(parts)
    return text if text.strip("… ") and node[0] in ("+", "lit") else expression
