"""JSON Schema as logic: true, false, and, or, not, kept small.

In: JSON Schemas (dicts). Out: the schema of their conjunction, disjunction or
negation, simplified where that means the same (nested ``anyOf``/``allOf``
flattened, constraints on one property made one ``properties`` entry, a
contradiction made FALSE, alternative string patterns made one pattern); two
rules about the same properties made one when that leaves fewer branches; and
whether JSON null meets a schema. Also the regular expressions of JSON
Schema's dialect (ECMA-262): an RE2 pattern that reads the same there, and a
literal text as a pattern. Nothing here knows about protobuf or CEL.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

Schema = dict[str, Any]

TRUE: Schema = {}
FALSE: Schema = {"not": {}}

# Constructs of RE2 that ECMA-262 (JSON Schema's dialect) reads differently.
_RE2_ONLY = re.compile(r"\(\?[a-zA-Z]|\\[AzQEpP]|\[\[:|\(\?P<")


def ecma_pattern(pattern: str) -> str | None:
    """An RE2 pattern that means the same in ECMA-262, or None."""
    return None if _RE2_ONLY.search(pattern) else pattern


def literal_pattern(text: str) -> str:
    """``text`` as a regular expression matching itself (ECMA-safe escapes)."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", text)


def any_of(items: list[Schema]) -> Schema:
    """Some of ``items`` holds."""
    flat: list[Schema] = []
    for item in items:
        if item == TRUE:
            return TRUE
        if item == FALSE:
            continue
        for x in branches(item):
            if x not in flat:
                flat.append(x)
    # String patterns, any of which may match, are one pattern.
    if len(flat) > 1 and all(set(x) == {"type", "pattern"} and x["type"] == "string" for x in flat):
        return {"type": "string", "pattern": "|".join(f"(?:{x['pattern']})" for x in flat)}
    # Branches that each constrain the same one property become one constraint on it:
    # {"properties": {n: anyOf[...]}}, required when no branch allows n to be absent.
    by_name: dict[str, list[Schema]] = {}
    for item in flat:
        name = _single_property(item)
        if name is not None:
            by_name.setdefault(name, []).append(item)
    for name, same in by_name.items():
        if len(same) < 2:
            continue
        union: Schema = {"properties": {name: any_of([b["properties"][name] for b in same])}}
        if all(b.get("required") == [name] for b in same):
            union = {"required": [name], **union}
        first = flat.index(same[0])
        flat = [x for x in flat if not any(x is b for b in same)]
        flat.insert(min(first, len(flat)), union)
    if not flat:
        return FALSE
    return flat[0] if len(flat) == 1 else {"anyOf": flat}


def all_of(items: list[Schema]) -> Schema:
    """Every one of ``items`` holds."""
    flat: list[Schema] = []
    for item in items:
        if item == FALSE:
            return FALSE
        if item == TRUE:
            continue
        flat.extend(item["allOf"] if list(item) == ["allOf"] else [item])
    # Constraints on properties become one object schema: {"required": [...], "properties": {...}}.
    merged: Schema = {}
    rest: list[Schema] = []
    for item in flat:
        if not set(item) <= {"required", "properties"}:
            rest.append(item)
            continue
        for name in item.get("required", []):
            merged.setdefault("required", [])
            if name not in merged["required"]:
                merged["required"].append(name)
        for name, prop in item.get("properties", {}).items():
            props = merged.setdefault("properties", {})
            props[name] = all_of([props[name], prop]) if name in props else prop
    for name, prop in merged.get("properties", {}).items():
        if prop == FALSE and name in merged.get("required", []):
            return FALSE  # a required property that no value satisfies
    flat = ([merged] if merged else []) + rest
    for x in flat:
        if negate(x) in flat:
            return FALSE
    if not flat:
        return TRUE
    return flat[0] if len(flat) == 1 else {"allOf": flat}


def negate(item: Schema) -> Schema:
    """``item`` does not hold."""
    if item == TRUE:
        return FALSE
    if item == FALSE:
        return TRUE
    if list(item) == ["not"]:
        return dict(item["not"])
    props = item.get("properties", {})
    if set(item) <= {"required", "properties"} and len(props) == 1:
        (name, prop), required = next(iter(props.items())), item.get("required", [])
        if required == [name]:
            # not (present and P) = absent, or present and not P: one property constraint, no disjunction
            return {"properties": {name: negate(prop)}}
        if not required:
            return {"required": [name], "properties": {name: negate(prop)}}
    if item == {"not": {"type": "null"}}:
        return {"type": "null"}
    if item in ({"type": "array", "minItems": 1}, {"type": "object", "minProperties": 1}):
        return {"maxItems": 0} if item["type"] == "array" else {"maxProperties": 0}  # null, or empty
    if set(item) == {"type", "not"} and set(item["not"]) == {"const"}:
        return {"enum": [None, item["not"]["const"]]}  # has() on a field without presence, negated
    return {"not": item}


def choice(cond: Schema, then: Schema, otherwise: Schema) -> Schema:
    """``cond ? then : otherwise``."""
    return any_of([all_of([cond, then]), all_of([negate(cond), otherwise])])


def at_most_one(items: list[Schema]) -> list[Schema]:
    """No two of ``items`` hold together (nothing to say for fewer than two)."""
    pairs = [{"allOf": [a, b]} for a, b in itertools.combinations(items, 2)]
    return [{"not": {"anyOf": pairs}}] if pairs else []


def _single_property(item: Schema) -> str | None:
    """The one property a {"required"?, "properties"} schema constrains, if it is one."""
    props = item.get("properties")
    if not set(item) <= {"required", "properties"} or not isinstance(props, dict) or len(props) != 1:
        return None
    name = next(iter(props))
    return name if item.get("required", [name]) == [name] else None


def branches(schema: Schema) -> list[Schema]:
    """The alternatives of a schema: its ``anyOf`` items, or itself."""
    return list(schema["anyOf"]) if list(schema) == ["anyOf"] else [schema]


def _names(schema: Any) -> set[str]:
    """Property names a schema mentions anywhere."""
    if isinstance(schema, dict):
        found = set(schema.get("properties", {})) | set(schema.get("required", []))
        return found.union(*(_names(v) for v in schema.values()))
    if isinstance(schema, list):
        return set().union(*(_names(v) for v in schema))
    return set()


def merge_overlapping(rules: list[Schema]) -> list[Schema]:
    """Two rules about the same properties as one, when their combined branches
    (contradictions dropped) are fewer than both rules' branches together."""
    rules = list(rules)
    merged = True
    while merged:
        merged = False
        for i, j in itertools.combinations(range(len(rules)), 2):
            a, b = branches(rules[i]), branches(rules[j])
            if len(a) < 2 or len(b) < 2 or not _names(rules[i]) & _names(rules[j]):
                continue
            product = [x for x in (all_of([p, q]) for p in a for q in b) if x != FALSE]
            if len(product) < len(a) + len(b):
                rules[i] = any_of(product)
                del rules[j]
                merged = True
                break
    return rules


def accepts_null(schema: Any) -> bool:
    """Whether JSON null meets ``schema`` (keywords for other types let it through)."""
    if schema is True or schema == {}:
        return True
    if schema is False:
        return False
    kinds = schema.get("type")
    if kinds is not None and "null" not in (kinds if isinstance(kinds, list) else [kinds]):
        return False
    if "const" in schema and schema["const"] is not None:
        return False
    if "enum" in schema and None not in schema["enum"]:
        return False
    if "$ref" in schema:
        return False
    if "not" in schema and accepts_null(schema["not"]):
        return False
    if "allOf" in schema and not all(accepts_null(x) for x in schema["allOf"]):
        return False
    return not any(k in schema and not any(accepts_null(x) for x in schema[k]) for k in ("anyOf", "oneOf"))
