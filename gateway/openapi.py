"""The OpenAPI 3.1 document, built from the same descriptors as the routes.

Schemas come from the message types (the JSON mapping of ``jsonmap``:
numbers for 64-bit ids, lower-case enums, ``null`` for unset optional
fields); descriptions are the proto comments, read from the descriptor set
``make gen`` writes with source info. Response schemas mark every property
required, since every field is always present in output; a reply field is
nullable only when the server may send null (proto3 ``optional``, a oneof
member, or a message field whose comment says "null").

Request schemas carry the ``buf.validate`` rules (gateway/openapi_rules.py):
``required``, ranges, sets, lengths, patterns, formats, and the CEL rules that
JSON Schema can say. A request with an ``update_mask`` takes its patch as a
``…Patch`` schema with nothing required. A body is never nullable; an
operation whose fields all sit in the path declares no body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FieldDescriptor
from observe.v1 import options_pb2

from core.errors import CODES
from core.rpc.context import ROLE_NAMES
from core.rpc.jsonmap import AnyDesc, AnyField, enum_json_names
from core.rpc.methods import HttpBinding, Method
from gateway.openapi_rules import (
    collection_rules,
    is_required,
    item_rules,
    map_part_rules,
    message_notes,
    message_schemas,
    nonzero_keywords,
    oneof_schemas,
    value_rules,
)
from gateway.proto_json import field_rules, message_rules
from gateway.routes import compile_template
from gateway.schema_logic import accepts_null

FD = FieldDescriptor
_INT32 = {FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32, FD.TYPE_UINT32, FD.TYPE_FIXED32}
_INT64 = {FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64, FD.TYPE_UINT64, FD.TYPE_FIXED64}
_WKT_SCHEMAS: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$"},
    "google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated lowerCamelCase field names."},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object", "properties": {}, "additionalProperties": False},
    "google.protobuf.Any": {"type": "object", "additionalProperties": True},
    "google.protobuf.Int64Value": {"type": "integer", "format": "int64"},
    "google.protobuf.UInt64Value": {"type": "integer", "format": "int64", "minimum": 0},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": {"type": "integer", "format": "int32", "minimum": 0},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string", "contentEncoding": "base64"},
    "google.protobuf.DoubleValue": {"type": "number"},
    "google.protobuf.FloatValue": {"type": "number"},
}
_HTTP_BODY = "google.api.HttpBody"
_FIELD_MASK = "google.protobuf.FieldMask"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The envelope of every non-2xx response.",
    "required": ["error", "code"],
    "properties": {
        "error": {"type": "string", "description": "Human-readable message."},
        "code": {
            "type": "string",
            "enum": sorted(info.name for info in CODES.values()),
            "description": "Stable machine-readable code.",
        },
        "fields": {
            "type": "array",
            "description": "Present when code is VALIDATION_FAILED.",
            "items": {
                "type": "object",
                "required": ["path", "code", "message"],
                "properties": {
                    "path": {"type": "string", "examples": ["intervalSec", "monitors[3].intervalSec"]},
                    "code": {"type": "string", "examples": ["invalid_literal", "required", "unrecognized_keys"]},
                    "message": {"type": "string"},
                },
            },
        },
        "retryAfterSec": {"type": "integer", "description": "Seconds to wait before retrying (429, 409, 503)."},
    },
}


def load_comments(paths: Iterable[Path]) -> dict[str, str]:
    """Full name → leading comment, from descriptor sets with source info."""
    comments: dict[str, str] = {}
    for path in paths:
        if not path.exists():
            continue
        fds = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
        for file in fds.file:
            _collect(file, comments)
    return comments


def _collect(file: descriptor_pb2.FileDescriptorProto, out: dict[str, str]) -> None:
    by_path = {
        tuple(loc.path): loc.leading_comments.strip() for loc in file.source_code_info.location if loc.leading_comments
    }
    pkg = file.package

    def walk_message(msg: descriptor_pb2.DescriptorProto, prefix: str, path: tuple[int, ...]) -> None:
        name = f"{prefix}.{msg.name}"
        if path in by_path:
            out[name] = by_path[path]
        for i, fld in enumerate(msg.field):
            if (*path, 2, i) in by_path:
                out[f"{name}.{fld.name}"] = by_path[(*path, 2, i)]
        for i, nested in enumerate(msg.nested_type):
            walk_message(nested, name, (*path, 3, i))
        for i, enum in enumerate(msg.enum_type):
            walk_enum(enum, name, (*path, 4, i))

    def walk_enum(enum: descriptor_pb2.EnumDescriptorProto, prefix: str, path: tuple[int, ...]) -> None:
        if path in by_path:
            out[f"{prefix}.{enum.name}"] = by_path[path]

    for i, msg in enumerate(file.message_type):
        walk_message(msg, pkg, (4, i))
    for i, enum in enumerate(file.enum_type):
        walk_enum(enum, pkg, (5, i))
    for i, service in enumerate(file.service):
        sname = f"{pkg}.{service.name}"
        if (6, i) in by_path:
            out[sname] = by_path[(6, i)]
        for j, method in enumerate(service.method):
            if (6, i, 2, j) in by_path:
                out[f"{sname}.{method.name}"] = by_path[(6, i, 2, j)]


Mode = Literal["out", "in", "patch"]
_NULL_WORD = re.compile(r"\bnull\b")


def _has_update_mask(desc: AnyDesc) -> bool:
    mask = desc.fields_by_name.get("update_mask")
    return mask is not None and mask.message_type is not None and mask.message_type.full_name == _FIELD_MASK


def _patched(fd: AnyField) -> bool:
    """Whether ``fd`` is the patch of a request with an update_mask (a singular message field)."""
    return (
        fd.type == FD.TYPE_MESSAGE
        and not fd.is_repeated
        and fd.name != "update_mask"
        and fd.message_type.full_name not in _WKT_SCHEMAS
        and _has_update_mask(fd.containing_type)
    )


def _proto3_optional(fd: AnyField) -> bool:
    oneof = fd.containing_oneof
    return oneof is not None and len(oneof.fields) == 1 and oneof.name == "_" + fd.name


def _describe(text: str, notes: list[str]) -> str:
    lines = [f"- {n}" for n in dict.fromkeys(notes)]
    return "\n\n".join(part for part in (text, "\n".join(lines)) if part)


def _messages_reachable(roots: Iterable[AnyDesc]) -> set[str]:
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        desc = stack.pop()
        if desc.full_name in seen:
            continue
        seen.add(desc.full_name)
        stack.extend(fd.message_type for fd in desc.fields if fd.type == FD.TYPE_MESSAGE)
    return seen


class _Schemas:
    """Component schemas, one per (message, mode, fields left out).

    Modes: ``out`` (replies: every field present, null only where the server
    sends null), ``in`` (request bodies: ``required`` and the other
    ``buf.validate`` rules; null is accepted and means "unset"), ``patch``
    (the patch of a request with an update_mask: any subset, so nothing is
    required, and message-level rules are checked on the patched result).
    """

    def __init__(self, comments: dict[str, str], output_messages: set[str] | None = None) -> None:
        self.comments = comments
        self.output_messages = output_messages or set()
        self.components: dict[str, Any] = {}
        self._names: dict[tuple[str, str, frozenset[str]], str] = {}

    def ref(self, desc: AnyDesc, mode: Mode, omit: frozenset[str] = frozenset()) -> dict[str, Any]:
        if desc.full_name in _WKT_SCHEMAS:
            return dict(_WKT_SCHEMAS[desc.full_name])
        key = (desc.full_name, mode, omit)
        name = self._names.get(key)
        if name is None:
            base = desc.full_name.removeprefix("observe.v1.").replace(".", "_")
            if mode != "out" and desc.full_name in self.output_messages:
                base += "Input"
            if mode == "patch":
                base += "Patch"
            name, n = base, 1
            while name in self.components:
                n += 1
                name = f"{base}Body" if n == 2 and omit else f"{base}{n}"
            self._names[key] = name
            self.components[name] = {}
            self.components[name] = self._message(desc, mode, omit)
        return {"$ref": f"#/components/schemas/{name}"}

    def required(self, ref: dict[str, Any]) -> list[str]:
        """The required properties of a component named by ``ref``."""
        name = ref.get("$ref", "").rsplit("/", 1)[-1]
        return list(self.components.get(name, {}).get("required", []))

    def _message(self, desc: AnyDesc, mode: Mode, omit: frozenset[str]) -> dict[str, Any]:
        props: dict[str, Any] = {}
        required: list[str] = []
        for fd in desc.fields:
            if fd.name in omit or fd.GetOptions().Extensions[options_pb2.field].alternate_media_type:
                continue  # bound to the path, or sent instead of the JSON, never inside it
            rules = field_rules(fd)
            must = mode == "in" and is_required(fd, rules)
            if must:
                required.append(fd.json_name)
            nullable = self._sent_as_null(fd) if mode == "out" else not is_required(fd, rules)
            field_mode: Mode = "out" if mode == "out" else ("patch" if mode == "in" and _patched(fd) else "in")
            prop, notes = self.field(
                fd, field_mode, nullable=nullable, required=must or (mode == "patch" and not nullable)
            )
            text = _describe(self.comments.get(fd.full_name, ""), notes)
            if text:
                prop = {**prop, "description": text} if "$ref" not in prop else {"allOf": [prop], "description": text}
            props[fd.json_name] = prop
        schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
        if mode == "out" and props:
            schema["required"] = list(props)
        elif required:
            schema["required"] = required
        rules = message_rules(desc)
        notes = [f"{name}: {text}" if name else text for name, text in message_notes(desc, rules)]
        oneof_rules, oneof_notes = oneof_schemas(desc)
        notes.extend(oneof_notes)
        if mode != "patch":
            extra = message_schemas(desc, rules, frozenset(required)) + oneof_rules
            if extra:
                # Each rule R as {"if": true, "then": R}, which means R: validators and test-data
                # generators apply it, type generators (openapi-typescript) keep the object type plain.
                # (Not {"if": R, "else": false}: equal, but a generator negates R to reach the else,
                # and the negation of the per-type cases outgrows schemathesis' canonicaliser.)
                schema["allOf"] = [{"if": True, "then": rule} for rule in extra]
        elif notes:
            notes = [f"{n} (checked on the result of the patch)" for n in notes]
        text = _describe(self.comments.get(desc.full_name, ""), notes)
        if text:
            schema["description"] = text
        return schema

    def _sent_as_null(self, fd: AnyField) -> bool:
        """Whether a reply may carry null for ``fd``: proto3 optional fields and
        oneof members; for a message field, also when its comment says so."""
        if fd.is_repeated:
            return False
        if fd.containing_oneof is not None:
            return True
        if fd.type == FD.TYPE_MESSAGE:
            return bool(_NULL_WORD.search(self.comments.get(fd.full_name, "")))
        return bool(fd.has_presence)

    def field(
        self, fd: AnyField, mode: Mode, *, nullable: bool = False, required: bool = False
    ) -> tuple[dict[str, Any], list[str]]:
        """The schema of field ``fd`` with its rules, and the rules said in words;
        ``required``: its zero value counts as missing (protovalidate's required)."""
        declared = fd.GetOptions().Extensions[options_pb2.field].json_schema
        if declared:
            return dict(json.loads(declared)), []
        rules = field_rules(fd)
        notes: list[str] = []
        schema: dict[str, Any]
        if fd.type == FD.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
            key_fd = fd.message_type.fields_by_name["key"]
            value_fd = fd.message_type.fields_by_name["value"]
            value, value_notes = self._value(value_fd, mode, map_part_rules(rules, "values"))
            keys = value_rules(key_fd, map_part_rules(rules, "keys"))
            schema = {"type": "object", "additionalProperties": value}
            if keys.schema:
                schema["propertyNames"] = keys.schema
            notes += [f"each key: {n}" for n in keys.notes] + [f"each value: {n}" for n in value_notes]
        elif fd.is_repeated:
            item, item_notes = self._value(fd, mode, item_rules(fd, rules), item=True)
            schema = {"type": "array", "items": item}
            notes += [f"each item: {n}" for n in item_notes]
        else:
            schema, notes = self._value(fd, mode, rules)
        if fd.is_repeated:
            extra, more = collection_rules(fd, rules)
            schema.update(extra)
            notes += more
            cel = value_rules(fd, _only_cel(rules))
            schema = _merge_rules(schema, cel.schema)
            notes += cel.notes
        if required and (fd.is_repeated or fd.type != FD.TYPE_MESSAGE):
            schema = _merge_rules(schema, _stricter(schema, nonzero_keywords(fd)))
        return (_nullable(schema) if nullable else schema), notes

    def _value(self, fd: AnyField, mode: Mode, rules: Any, *, item: bool = False) -> tuple[dict[str, Any], list[str]]:
        """One value of ``fd`` (an item of it, for ``item``) with its rules."""
        base = self._single(fd, mode)
        published = value_rules(fd, rules, item=item) if not fd.is_repeated or item else value_rules(fd, None)
        return _merge_rules(base, published.schema), published.notes

    def _single(self, fd: AnyField, mode: Mode) -> dict[str, Any]:
        t = fd.type
        if t == FD.TYPE_MESSAGE:
            return self.ref(fd.message_type, mode)
        if t == FD.TYPE_ENUM:
            return {"type": "string", "enum": list(enum_json_names(fd.enum_type).values())}
        if t in _INT32:
            return {"type": "integer", "format": "int32"}
        if t in _INT64:
            return {"type": "integer", "format": "int64"}
        if t in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
            return {"type": "number"}
        if t == FD.TYPE_BOOL:
            return {"type": "boolean"}
        if t == FD.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        return {"type": "string"}


def _stricter(schema: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra``'s lower bounds, unless ``schema`` already has tighter ones."""
    return {
        k: v
        for k, v in extra.items()
        if not (k in ("minLength", "minItems", "minProperties") and schema.get(k, 0) >= v)
    }


def _only_cel(rules: Any) -> Any:
    """Just the field-level CEL of ``rules`` (for a repeated field's own list)."""
    if rules is None or not (rules.cel or rules.cel_expression):
        return None
    out = type(rules)()
    out.cel.extend(rules.cel)
    out.cel_expression.extend(rules.cel_expression)
    out.ignore = rules.ignore
    return out


def _merge_rules(base: dict[str, Any], rules: dict[str, Any]) -> dict[str, Any]:
    """``base`` (a type, or a $ref) narrowed by the keywords in ``rules``."""
    if not rules:
        return base
    if "$ref" in base:
        return {"allOf": [base, rules]}
    out = dict(base)
    if "enum" in rules and "enum" in out:
        allowed = rules["enum"]
        out["enum"] = [v for v in out["enum"] if v in allowed]
        rules = {k: v for k, v in rules.items() if k != "enum"}
    for key, value in rules.items():
        if key in out and out[key] != value:
            out.setdefault("allOf", []).append({key: value})
        else:
            out[key] = value
    return out


def _first_sentence(doc: str) -> str:
    """The first sentence of a comment, across its line breaks, without the full stop."""
    text = " ".join(doc.split())
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    return (match.group(1) if match else text).rstrip(".")


def path_param_name(desc: AnyDesc, var: str) -> str:
    """``thing_id`` → ``thingId``: path parameters carry JSON names."""
    names = []
    for part in var.split("."):
        fd = desc.fields_by_name.get(part) if desc is not None else None
        names.append(fd.json_name if fd is not None else part)
        desc = fd.message_type if fd is not None else None
    return ".".join(names)


def openapi_path(desc: AnyDesc, path: str) -> str:
    """The OpenAPI form of an HttpRule path: ``{name=a/*}`` → ``{name}``, JSON names."""
    template = compile_template(path)
    text = template.openapi_path
    for var in template.variables:
        text = text.replace("{" + var + "}", "{" + path_param_name(desc, var) + "}")
    return text


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or null: "null" among its types when its other keywords let
    null through (most are for one type only), else wrapped in anyOf."""
    if accepts_null(schema):
        return schema
    kind = schema.get("type")
    others = {k: v for k, v in schema.items() if k not in ("type", "enum")}
    if isinstance(kind, str) and accepts_null(others):
        out = {**schema, "type": [kind, "null"]}
        if "enum" in schema:
            out["enum"] = [*schema["enum"], None]
        return out
    return {"anyOf": [schema, {"type": "null"}]}


def _operation(
    method: Method, binding: HttpBinding, schemas: _Schemas, comments: dict[str, str], index: int = 0
) -> dict[str, Any]:
    """The operation of one binding; a method's additional bindings (index
    1, 2, …) get operation ids of their own: ``Service_Method_2``, …"""
    path, body, response_body = binding.path, binding.body, binding.response_body
    rule = method.rule
    template = compile_template(path)
    in_desc: AnyDesc = method.descriptor.input_type
    out_desc = method.descriptor.output_type
    doc = comments.get(method.descriptor.full_name, "")
    op: dict[str, Any] = {
        "operationId": f"{method.descriptor.containing_service.name}_{method.name}"
        + (f"_{index + 1}" if index else ""),
        "tags": [method.descriptor.containing_service.name],
        "summary": _first_sentence(doc) or method.name,
        "description": doc,
        "x-observe-rule": {
            "scope": rule.scope or None,
            "roles": [ROLE_NAMES[r] for r in rule.roles],
            "public": rule.public,
            "mutation": rule.mutation,
            "bodyLimitBytes": method.body_limit,
        },
    }
    params: list[dict[str, Any]] = []
    bound: set[str] = set()
    for var in template.variables:
        head = var.split(".")[0]
        bound.add(head)
        fd = in_desc.fields_by_name.get(head)
        schema: dict[str, Any] = {"type": "string"}
        notes: list[str] = []
        if fd is not None and "." not in var:
            schema, notes = schemas.field(fd, "in")
        name = path_param_name(in_desc, var)
        param: dict[str, Any] = {"name": name, "in": "path", "required": True, "schema": schema}
        text = _describe(comments.get(fd.full_name, "") if fd is not None else "", notes)
        if text:
            param["description"] = text
        params.append(param)
    for name, kind, key, longest in method.from_request:
        bound.add(name)
        if key == "host":
            continue  # the request's own Host: not a parameter anyone sets
        fd = in_desc.fields_by_name[name]
        # Any value is taken; one longer than the field's bound is ignored (as if absent).
        param = {"name": key, "in": kind, "required": False, "schema": {"type": "string"}}
        text = _describe(comments.get(fd.full_name, ""), [f"Values longer than {longest} characters are ignored."])
        if text:
            param["description"] = text
        params.append(param)
    if body == "*" and in_desc.full_name == _HTTP_BODY:
        op["requestBody"] = {"required": True, "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}
    elif body == "*":
        omit = frozenset(name for name in bound if name in in_desc.fields_by_name)
        if any(fd.name not in omit for fd in in_desc.fields):
            ref = schemas.ref(in_desc, "in", omit)
            op["requestBody"] = {
                "required": bool(schemas.required(ref)),
                "content": {"application/json": {"schema": ref}},
            }
        # else: every field is in the path; the operation takes no body
    elif body:
        fd = in_desc.fields_by_name[body]
        bound.add(body)
        if fd.message_type is not None and fd.message_type.full_name == _HTTP_BODY:
            content: dict[str, Any] = _raw_body_content(fd)
        else:
            schema, notes = schemas.field(fd, "patch" if _patched(fd) else "in")
            content = {"application/json": {"schema": schema}}
        op["requestBody"] = {"required": is_required(fd, field_rules(fd)), "content": content}
    if body != "*":
        for fd in in_desc.fields:
            if fd.name in bound or (fd.type == FD.TYPE_MESSAGE and fd.message_type.full_name not in _WKT_SCHEMAS):
                continue
            must = is_required(fd, field_rules(fd))
            schema, notes = schemas.field(fd, "in", required=must)
            param = {
                "name": fd.json_name,
                "in": "query",
                "required": must,
                "schema": schema,
            }
            if fd.is_repeated:
                param.update(style="form", explode=True)
            text = _describe(comments.get(fd.full_name, ""), notes)
            if text:
                param["description"] = text
            params.append(param)
    if params:
        op["parameters"] = params
    status = str(method.success_status)
    if method.success_status == 204:
        ok: dict[str, Any] = {"description": "No content."}
    elif method.server_streaming:
        ok = {
            "description": "Server-Sent Events; each `data:` line is one JSON message: "
            + schemas.ref(out_desc, "out")["$ref"].rsplit("/", 1)[-1],
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    elif out_desc.full_name == _HTTP_BODY:
        ok = {"description": "Raw body.", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}
    elif response_body:
        body_schema, _ = schemas.field(out_desc.fields_by_name[response_body], "out")  # the reply itself: never null
        ok = {"description": "Success.", "content": {"application/json": {"schema": body_schema}}}
    else:
        ok = {"description": "Success.", "content": {"application/json": {"schema": schemas.ref(out_desc, "out")}}}
        for fd in out_desc.fields:
            field_options = fd.GetOptions().Extensions[options_pb2.field]
            media = field_options.alternate_media_type
            if media and media != "application/json":  # "application/json": this reply, prepared
                ok["content"][media] = {"schema": {"type": "string"}}
                ok["description"] += f" {fd.json_name}: {comments.get(fd.full_name, '')}"
                if field_options.json_schema:  # the body's JSON form replaces the message's
                    ok["content"]["application/json"] = {"schema": json.loads(field_options.json_schema)}
    errors: dict[str, Any] = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    if out_desc.full_name == _HTTP_BODY:  # a web page's route may answer an error as a page (X-Error-Code)
        errors["text/html"] = {"schema": {"type": "string"}}
    op["responses"] = {
        status: ok,
        "default": {"description": "Error envelope.", "content": errors},
    }
    op["security"] = [] if rule.public else [{"bearerAuth": []}, {"sessionCookie": []}]
    return op


def _raw_body_content(fd: Any) -> dict[str, Any]:
    """The request media types of a google.api.HttpBody body field: its
    declared JSON schema and other media types, else any."""
    rules = fd.GetOptions().Extensions[options_pb2.field]
    content: dict[str, Any] = {}
    if rules.json_schema:
        content["application/json"] = {"schema": json.loads(rules.json_schema)}
    for media in rules.media_types:
        content[media] = {"schema": {"type": "string", "format": "binary"}}
    return content or {"*/*": {"schema": {"type": "string", "format": "binary"}}}


def _link_created_resources(paths: dict[str, dict[str, Any]], schemas: _Schemas) -> None:
    """Links from a create (POST /things answering a thing with an id) to the
    operations on that thing (/things/{id}…), for readers and for tools that
    chain calls."""
    for path, item in paths.items():
        create = item.get("post")
        if create is None:
            continue
        reply: dict[str, Any] = next((r for code, r in create["responses"].items() if code.startswith("2")), {})
        schema = reply.get("content", {}).get("application/json", {}).get("schema", {})
        target = schemas.components.get(schema.get("$ref", "").rsplit("/", 1)[-1], {})
        if target.get("properties", {}).get("id", {}).get("type") != "integer":
            continue
        links: dict[str, Any] = {}
        for other, other_item in paths.items():
            match = re.fullmatch(re.escape(path) + r"/\{(\w+)\}(/.*)?", other)
            if match is None or "{" in (match.group(2) or ""):
                continue
            for op in other_item.values():
                links[op["operationId"]] = {
                    "operationId": op["operationId"],
                    "parameters": {match.group(1): "$response.body#/id"},
                    "description": f"The created resource's id as {match.group(1)}.",
                }
        if links:
            reply["links"] = links


def build_openapi(methods: Iterable[Method], comments: dict[str, str], *, server_url: str = "/") -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``methods``."""
    methods = sorted(methods, key=lambda m: m.grpc_path)
    schemas = _Schemas(comments, _messages_reachable(m.descriptor.output_type for m in methods))
    paths: dict[str, dict[str, Any]] = {}
    for method in methods:
        for index, binding in enumerate(method.bindings):
            item = paths.setdefault(openapi_path(method.descriptor.input_type, binding.path), {})
            item[binding.verb.lower()] = _operation(method, binding, schemas, comments, index)
    _link_created_resources(paths, schemas)
    schemas.components["Error"] = ERROR_SCHEMA
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "observe API",
            "version": "v1",
            "description": "Uptime monitoring, status pages, heartbeats and logs. Every route is generated from "
            "the observe.v1 protos; errors use the `{error, code, fields}` envelope. Request rules come from the "
            "protos' buf.validate annotations; rules across fields are listed in each schema's description. "
            "On every route, strings never contain U+0000 and unknown fields are refused (400).",
        },
        "servers": [{"url": server_url}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "A PAT (obs_…) or session (obss_…)."},
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "observe_session"},
            },
        },
    }
