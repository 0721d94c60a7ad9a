"""CEL syntax trees as JSON Schema: what a ``buf.validate`` CEL rule requires.

In: a rule (its text, or its syntax tree from gateway/cel_syntax.py) and its
scope, a message (``this.<field>``) or one field's value (``this``, an item
of a list, a variable of ``all``/``exists``). Out: the JSON Schema that
holds exactly when the rule passes, or None when the rule is outside the
subset translated here: ``has()``, comparisons of a field with literals (or
with another field whose values form a small set, as one case per value),
``in`` lists, ``startsWith`` and friends, ``matches`` with an ECMA-safe
pattern, ``size()``, ``%`` for multiples, ``all``/``exists``/``exists_one``
over lists, the ``is…`` format checks, ``! && || ?:``, and rules that return
their message (a string that is empty when valid). An absent field reads as
its zero value, as the server reads it. Timestamps relative to now, byte
lengths, arithmetic over open ranges and the like are left untranslated.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from core.rpc.jsonmap import AnyDesc, AnyField, enum_json_names
from gateway.cel_syntax import Node, UntranslatableError, parse
from gateway.proto_json import FD, INTS, NUMERIC_RULES, has_schema, json_type, listed, type_rules, zero_json
from gateway.schema_logic import FALSE, TRUE, Schema, all_of, any_of, choice, ecma_pattern, literal_pattern, negate


@dataclass
class CelScope:
    """What ``this`` is: a message (its fields by name) or one field's value."""

    desc: AnyDesc = None
    fd: AnyField = None
    item: bool = False
    variables: dict[str, tuple[AnyField, bool]] = field(default_factory=dict)

    @classmethod
    def message(cls, desc: AnyDesc) -> CelScope:
        return cls(desc=desc)

    @classmethod
    def value(cls, fd: AnyField, *, item: bool = False) -> CelScope:
        return cls(fd=fd, item=item)


# A subject: where a value comes from. ("field", fd) is a field of the message
# in scope (may be absent); ("value", fd, item) is the value in scope itself.
Subject = tuple[Any, ...]


def _typed(subject: Subject) -> tuple[AnyField, bool, str]:
    """The field a subject reads, whether its value is an item of it, and that value's JSON type."""
    fd = subject[1]
    item = subject[2] if subject[0] == "value" else False
    return fd, item, json_type(fd, item=item)


TRANSLATION_ERRORS = (UntranslatableError, KeyError, TypeError, ValueError, RecursionError, re.error)


def translate_rule(expression: str, scope: CelScope) -> Schema | None:
    """The JSON Schema of a CEL rule (bool, or string that is "" when valid),
    or None when the expression is outside the subset."""
    try:
        return Translator(scope).rule(parse(expression))
    except TRANSLATION_ERRORS:
        return None


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: bool(a == b),
    "!=": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
}


def _flip_args(compare: Callable[[Any, Any], bool], literal: Any, value: Any) -> bool:
    return compare(value, literal)


_FLIP = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_BOUND = {"<": "exclusiveMaximum", "<=": "maximum", ">": "exclusiveMinimum", ">=": "minimum"}


class Translator:
    """Syntax trees of CEL rules in one scope as JSON Schema; raises
    UntranslatableError (or another of TRANSLATION_ERRORS) outside the subset."""

    def __init__(self, scope: CelScope) -> None:
        self.scope = scope

    # -- rules and booleans

    def rule(self, node: Node) -> Schema:
        """A top-level rule: a bool, or a string that is empty when valid."""
        if node[0] == "?":
            return choice(self.boolean(node[1]), self.rule(node[2]), self.rule(node[3]))
        if self._is_string(node):
            return TRUE if self._empty_string(node) else FALSE
        return self.boolean(node)

    def _is_string(self, node: Node) -> bool:
        if node[0] == "lit":
            return isinstance(node[1], str)
        if node[0] == "+":
            return self._is_string(node[1]) or self._is_string(node[2])
        return bool(node[0] == "call" and node[1] == "string")

    def _empty_string(self, node: Node) -> bool:
        if node[0] == "lit":
            return bool(node[1] == "")
        if self._known_nonempty(node):
            return False
        raise UntranslatableError("string of unknown length")

    def _known_nonempty(self, node: Node) -> bool:
        if node[0] == "lit":
            return bool(node[1] != "")
        return bool(node[0] == "+" and (self._known_nonempty(node[1]) or self._known_nonempty(node[2])))

    def boolean(self, node: Node) -> Schema:
        op = node[0]
        if op == "cmp":
            return self.compare(node[1], node[2], node[3])
        if op == "||":
            return any_of([self.boolean(node[1]), self.boolean(node[2])])
        if op == "&&":
            return all_of([self.boolean(node[1]), self.boolean(node[2])])
        if op == "!":
            return negate(self.boolean(node[1]))
        if op == "?":
            return choice(self.boolean(node[1]), self.boolean(node[2]), self.boolean(node[3]))
        if op == "lit" and isinstance(node[1], bool):
            return TRUE if node[1] else FALSE
        if op in _COMPARE:
            return self.compare(op, node[1], node[2])
        if op == "in":
            return self.membership(node[1], node[2])
        if op == "call":
            return self.call(node)
        raise UntranslatableError(op)

    # -- terms

    def subject(self, node: Node) -> Subject | None:
        """The field a term reads, or None when it is not a plain field read."""
        if node[0] == "id" and node[1] == "this" and self.scope.fd is not None:
            return ("value", self.scope.fd, self.scope.item)
        if node[0] == "id" and node[1] in self.scope.variables:
            fd, item = self.scope.variables[node[1]]
            return ("value", fd, item)
        if node[0] == "get" and node[1] == ("id", "this") and self.scope.desc is not None:
            return ("field", self.scope.desc.fields_by_name[node[2]])
        return None

    def constant(self, node: Node) -> Any:
        """The value of a term made of literals only, else UntranslatableError."""
        op = node[0]
        if op == "lit":
            return node[1]
        if op == "list":
            return [self.constant(n) for n in node[1]]
        if op == "neg":
            return -self.constant(node[1])
        if op in ("+", "-", "*", "/", "%"):
            a, b = self.constant(node[1]), self.constant(node[2])
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            if op == "*":
                return a * b
            if op == "/":
                return a // b if isinstance(a, int) and isinstance(b, int) else a / b
            return math.fmod(a, b)
        raise UntranslatableError("not a constant")

    def finite_domain(self, fd: AnyField) -> list[Any] | None:
        """The values a field can read as (its zero first), when few: enums,
        bools, and fields whose rules list their values."""
        if fd.is_repeated:
            return None
        if fd.type == FD.TYPE_ENUM:
            return [0, *(v.number for v in fd.enum_type.values if v.number != 0)]
        if fd.type == FD.TYPE_BOOL:
            return [False, True]
        kind, rules = type_rules(fd)
        if kind in NUMERIC_RULES | {"string"}:
            values = listed(rules)
            if values and len(values) <= 32:
                return [zero_json(fd), *(v for v in values if v != zero_json(fd))]
        return None

    def _present_values(self, fd: AnyField) -> list[Any] | None:
        """The values a present field may carry under its own rules, when few."""
        domain = self.finite_domain(fd)
        if domain is None:
            return None
        if fd.type == FD.TYPE_ENUM:
            return domain[1:]  # JSON has no name for the zero value
        kind, rules = type_rules(fd)
        if kind not in (None, "bool") and listed(rules):
            return domain[1:] if zero_json(fd) not in listed(rules) else domain
        return domain

    def _bounds(self, fd: AnyField) -> tuple[float, float] | None:
        """The closed range a present numeric field's own rules allow."""
        kind, r = type_rules(fd)
        if fd.is_repeated or kind not in NUMERIC_RULES:
            return None
        step = 1 if fd.type in INTS else 0
        low = r.gt + step if r.HasField("gt") else r.gte if r.HasField("gte") else -math.inf
        high = r.lt - step if r.HasField("lt") else r.lte if r.HasField("lte") else math.inf
        return (low, high) if low <= high else None

    def fields_in(self, node: Any) -> list[Node]:
        """The ``this.<field>`` reads in a node, in order."""
        if isinstance(node, tuple) and node and node[0] == "get" and node[1] == ("id", "this"):
            return [node]
        if isinstance(node, (tuple, list)):
            return [f for n in node for f in self.fields_in(n)]
        return []

    def _substitute(self, node: Any, target: Node, value: Any) -> Any:
        if node == target:
            return ("lit", value)
        if node == ("call", "has", None, [target]):
            return ("lit", value != self.finite_domain(self.scope.desc.fields_by_name[target[2]])[0])  # type: ignore[index]
        if isinstance(node, tuple):
            return tuple(self._substitute(n, target, value) for n in node)
        if isinstance(node, list):
            return [self._substitute(n, target, value) for n in node]
        return node

    def cases(self, ref: Node, rules: list[Node], *, present: bool = False) -> Schema:
        """``rules`` (all reading field ``ref``) as one case per value of that field;
        values with the same requirements share a case. ``present``: the field is
        required, so its unset value needs no case."""
        fd = self.scope.desc.fields_by_name[ref[2]]
        domain = self.finite_domain(fd) or []
        groups: dict[str, tuple[list[Any], Schema]] = {}
        excluded = False
        for value in domain[1:] if present else domain:
            body = all_of([self.rule(self._substitute(n, ref, value)) for n in rules])
            if body == FALSE:
                excluded = True
                continue
            key = json.dumps(body, sort_keys=True)
            groups.setdefault(key, ([], body))[0].append(value)
        if not present and not excluded and len(groups) == 2 and "{}" in groups:
            # Every value either meets the rules or meets X: "field in those values, or X".
            other = next(body for key, (_, body) in groups.items() if key != "{}")
            return any_of([self.membership(ref, ("list", [("lit", v) for v in groups["{}"][0]])), other])
        return any_of(
            [
                all_of([self.membership(ref, ("list", [("lit", v) for v in values])), body])
                for values, body in groups.values()
            ]
        )

    def compare(self, op: str, left: Node, right: Node) -> Schema:
        for a, b, o in ((left, right, op), (right, left, _FLIP[op])):
            subject = self.subject(a)
            size = self._size_subject(a) if subject is None else None
            if subject is None and size is None:
                multiple = self._multiple_of(a, b, o)
                if multiple is not None:
                    return multiple
                continue
            try:
                value = self.constant(b)
            except UntranslatableError:
                continue
            if subject is not None:
                test = functools.partial(_flip_args, _COMPARE[o], value)
                return self.atom(subject, test, self._value_schema(subject, o, value))
            if size is not None:
                return self.size_atom(size, o, value)
        try:
            return TRUE if _COMPARE[op](self.constant(left), self.constant(right)) else FALSE
        except UntranslatableError:
            pass
        return self._expand(("cmp", op, left, right))

    def _multiple_of(self, left: Node, right: Node, op: str) -> Schema | None:
        """``x % n == 0`` (or ``!=``) on an integer field: multipleOf."""
        if left[0] != "%" or op not in ("==", "!="):
            return None
        subject = self.subject(left[1])
        try:
            n, rest = self.constant(left[2]), self.constant(right)
        except UntranslatableError:
            return None
        if subject is None or rest != 0 or not isinstance(n, int) or n <= 0:
            return None
        if _typed(subject)[2] != "integer":
            return None
        present: Schema = {"type": "integer", "multipleOf": n}
        if op == "!=":
            present = {"type": "integer", "not": {"multipleOf": n}}
        return self.atom(subject, lambda v: (v % n == 0) == (op == "=="), present)

    def _expand(self, node: Node) -> Schema:
        """A comparison of two fields: one case per value of a field with few values."""
        for ref in self.fields_in(node):
            if self.finite_domain(self.scope.desc.fields_by_name[ref[2]]) is not None:
                return self.cases(ref, [node])
        raise UntranslatableError("comparison of fields")

    def membership(self, left: Node, right: Node) -> Schema:
        try:
            return TRUE if self.constant(left) in self.constant(right) else FALSE
        except UntranslatableError:
            pass
        subject = self.subject(left)
        if subject is not None:
            values = self.constant(right)
            if not isinstance(values, list):
                raise UntranslatableError("in")
            return self.atom(subject, lambda v: v in values, self._value_schema(subject, "in", values))
        collection = self.subject(right)
        if collection is not None:
            value = self.constant(left)
            fd = collection[1]
            item = {"const": self._json_value(fd, value)}
            if collection[0] == "field":
                return {"required": [fd.json_name], "properties": {fd.json_name: {"type": "array", "contains": item}}}
            return {"contains": item}
        raise UntranslatableError("in")

    def _size_subject(self, node: Node) -> Subject | None:
        if node[0] == "call" and node[1] == "size":
            target = node[2] if node[2] is not None else (node[3][0] if len(node[3]) == 1 else None)
            if target is not None and (node[2] is None or not node[3]):
                return self.subject(target)
        return None

    def size_atom(self, subject: Subject, op: str, n: Any) -> Schema:
        fd, item, t = _typed(subject)
        names = {
            "string": ("minLength", "maxLength"),
            "array": ("minItems", "maxItems"),
            "object": ("minProperties", "maxProperties"),
        }
        if t not in names:
            raise UntranslatableError("size")
        low, high = names[t]
        n = int(n)
        bounds = {
            "==": {low: n, high: n},
            "<": {high: n - 1},
            "<=": {high: n},
            ">": {low: n + 1},
            ">=": {low: n},
        }
        if op == "!=":
            schema: Schema = {"type": t, "not": {low: n, high: n}}
        else:
            schema = {"type": t, **bounds[op]}
        return self.atom(subject, lambda v: _COMPARE[op](0, n) if v == zero_json(fd, item=item) else None, schema)

    def call(self, node: Node) -> Schema:
        _, name, target, args = node
        if name == "has" and target is None and len(args) == 1:
            subject = self.subject(args[0])
            if subject is None or subject[0] != "field":
                raise UntranslatableError("has")
            return has_schema(subject[1])
        subject = self.subject(target) if target is not None else None
        if subject is None:
            raise UntranslatableError(name)
        fd = subject[1]
        if name in ("all", "exists", "exists_one") and len(args) == 2 and args[0][0] == "id":
            variables = {**self.scope.variables, args[0][1]: (fd, True)}
            inner = Translator(replace(self.scope, variables=variables)).boolean(args[1])
            if name == "all":
                value: Schema = {"type": "array", "items": inner}
                return self.atom(subject, lambda v: True if v == [] else None, value)
            counted: Schema = {"type": "array", "contains": inner}
            if name == "exists_one":
                counted.update(minContains=1, maxContains=1)
            return self.atom(subject, lambda v: False if v == [] else None, counted)
        if name in ("startsWith", "endsWith", "contains", "matches") and len(args) == 1:
            text = self.constant(args[0])
            if not isinstance(text, str):
                raise UntranslatableError(name)
            if name == "matches":
                pattern = ecma_pattern(text)
                if pattern is None:
                    raise UntranslatableError("RE2-only pattern")
                test: Callable[[Any], Any] = lambda v: re.search(text, v) is not None  # noqa: E731
            else:
                pattern = {
                    "startsWith": "^" + literal_pattern(text),
                    "endsWith": literal_pattern(text) + "$",
                    "contains": literal_pattern(text),
                }[name]
                test = {
                    "startsWith": lambda v: v.startswith(text),
                    "endsWith": lambda v: v.endswith(text),
                    "contains": lambda v: text in v,
                }[name]
            return self.atom(subject, test, {"type": "string", "pattern": pattern})
        formats = {"isEmail": "email", "isHostname": "hostname", "isUri": "uri", "isUriRef": "uri-reference"}
        if name in formats and not args:
            schema = {"type": "string", "format": formats[name]}
            return self.atom(subject, lambda v: v == "" and name == "isUriRef", schema)
        if name == "isIp" and len(args) <= 1:
            version = self.constant(args[0]) if args else 0
            fmt = {4: ["ipv4"], 6: ["ipv6"], 0: ["ipv4", "ipv6"]}[version]
            schema = any_of([{"format": f} for f in fmt])
            return self.atom(subject, lambda v: False, {"type": "string", **schema})
        raise UntranslatableError(name)

    # -- atoms

    def _json_value(self, fd: AnyField, value: Any) -> Any:
        """A CEL literal as the field's JSON (enum numbers → names)."""
        if fd.type == FD.TYPE_ENUM:
            if not isinstance(value, int):
                raise UntranslatableError("enum literal")
            names = enum_json_names(fd.enum_type)
            return names.get(value)
        return value

    def _value_schema(self, subject: Subject, op: str, value: Any) -> Schema:
        """Keywords that hold for a present (non-null) value when ``value op literal``."""
        fd, _, t = _typed(subject)
        if fd.type == FD.TYPE_ENUM:
            numbers = [v.number for v in fd.enum_type.values if v.number != 0]
            if op == "in":
                allowed = [n for n in numbers if n in value]
            elif op in ("==", "!="):
                allowed = [n for n in numbers if _COMPARE[op](n, value)]
            else:
                raise UntranslatableError("enum order")
            names = enum_json_names(fd.enum_type)
            return {"type": "string", "enum": [names[n] for n in allowed]} if allowed else FALSE
        if op == "in":
            return {"type": t, "enum": [self._json_value(fd, v) for v in value]}
        if op == "==":
            return {"type": t, "const": value}
        if op == "!=":
            return {"type": t, "not": {"const": value}}
        if t not in ("integer", "number"):
            raise UntranslatableError("order on non-numbers")
        return {"type": t, _BOUND[op]: value}

    def atom(self, subject: Subject, test: Callable[[Any], Any], present: Schema) -> Schema:
        """``present`` for the subject's value; an absent field reads as its zero value.
        A test that the field's own rules already decide becomes true or false."""
        if subject[0] == "value":
            return present
        fd = subject[1]
        values = self._present_values(fd)
        outcomes: list[Any] = []
        if values is not None:
            outcomes = [test(v) for v in values]
        elif (bounds := self._bounds(fd)) is not None and all(math.isfinite(b) for b in bounds):
            outcomes = [test(bounds[0]), test(bounds[1])] if _monotone(present) else []
        if outcomes and None not in outcomes:
            if all(outcomes):
                present = {"not": {"type": "null"}}
            elif not any(outcomes):
                present = FALSE
        if fd.type == FD.TYPE_ENUM and not fd.is_repeated:
            zero_ok = bool(test(0))
        else:
            outcome = test(zero_json(fd))
            if outcome is None:
                raise UntranslatableError("zero value")
            zero_ok = bool(outcome)
        name = fd.json_name
        if present == FALSE and not zero_ok:
            return FALSE
        if zero_ok:
            if present == {"not": {"type": "null"}}:
                return TRUE
            return {"properties": {name: any_of([{"type": "null"}, present])}}
        return {"required": [name], "properties": {name: present}}


def _monotone(schema: Schema) -> bool:
    """A bound test (x < n, x >= n, …): true at both ends of a range means true in between."""
    return any(k in schema for k in _BOUND.values())
