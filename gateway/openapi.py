"""The OpenAPI 3.1 document, built from the same descriptors as the routes.

Schemas come from the message types (the JSON mapping of ``jsonmap``:
numbers for 64-bit ids, lower-case enums, ``null`` for unset optional
fields); descriptions are the proto comments, read from the descriptor set
``make gen`` writes with source info. Response schemas mark every property
required, since every field is always present in output.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FieldDescriptor
from observe.v1 import options_pb2

from core.errors import CODES
from core.rpc.context import ROLE_NAMES
from core.rpc.jsonmap import AnyDesc, AnyField, enum_json_names
from core.rpc.methods import HttpBinding, Method
from gateway.routes import compile_template

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


class _Schemas:
    """Component schemas, one per (message, direction)."""

    def __init__(self, comments: dict[str, str]) -> None:
        self.comments = comments
        self.components: dict[str, Any] = {}
        self._names: dict[tuple[str, bool], str] = {}

    def ref(self, desc: AnyDesc, output: bool) -> dict[str, Any]:
        if desc.full_name in _WKT_SCHEMAS:
            return dict(_WKT_SCHEMAS[desc.full_name])
        key = (desc.full_name, output)
        name = self._names.get(key)
        if name is None:
            base = desc.full_name.removeprefix("observe.v1.").replace(".", "_")
            name = base if output or (desc.full_name, True) not in self._names else f"{base}Input"
            if not output and any(n == name for k, n in self._names.items() if k[1]):
                name = f"{base}Input"
            self._names[key] = name
            self.components[name] = {}
            self.components[name] = self._message(desc, output)
        return {"$ref": f"#/components/schemas/{name}"}

    def _message(self, desc: AnyDesc, output: bool) -> dict[str, Any]:
        props: dict[str, Any] = {}
        for fd in desc.fields:
            if fd.GetOptions().Extensions[options_pb2.field].alternate_media_type:
                continue  # sent instead of the JSON, never inside it
            prop = self.field(fd, output)
            comment = self.comments.get(fd.full_name)
            if comment:
                prop = (
                    {**prop, "description": comment}
                    if "$ref" not in prop
                    else {"allOf": [prop], "description": comment}
                )
            props[fd.json_name] = prop
        schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
        if output and props:
            schema["required"] = list(props)
        if desc.full_name in self.comments:
            schema["description"] = self.comments[desc.full_name]
        return schema

    def field(self, fd: AnyField, output: bool) -> dict[str, Any]:
        declared = fd.GetOptions().Extensions[options_pb2.field].json_schema
        if declared:
            return dict(json.loads(declared))
        if fd.type == FD.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
            value_fd = fd.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self._single(value_fd, output)}
        single = self._single(fd, output)
        if fd.is_repeated:
            return {"type": "array", "items": single}
        nullable = fd.type == FD.TYPE_MESSAGE or fd.has_presence or fd.type == FD.TYPE_ENUM
        return _nullable(single) if nullable else single

    def _single(self, fd: AnyField, output: bool) -> dict[str, Any]:
        t = fd.type
        if t == FD.TYPE_MESSAGE:
            return self.ref(fd.message_type, output)
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
    if "$ref" in schema:
        return {"oneOf": [schema, {"type": "null"}]}
    if "enum" in schema:
        return {**schema, "type": [schema["type"], "null"], "enum": [*schema["enum"], None]}
    if "type" in schema and isinstance(schema["type"], str):
        return {**schema, "type": [schema["type"], "null"]}
    return schema


def _operation(method: Method, binding: HttpBinding, schemas: _Schemas, comments: dict[str, str]) -> dict[str, Any]:
    path, body, response_body = binding.path, binding.body, binding.response_body
    rule = method.rule
    template = compile_template(path)
    in_desc: AnyDesc = method.descriptor.input_type
    out_desc = method.descriptor.output_type
    doc = comments.get(method.descriptor.full_name, "")
    op: dict[str, Any] = {
        "operationId": f"{method.descriptor.containing_service.name}_{method.name}",
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
        schema = schemas.field(fd, False) if fd is not None and "." not in var else {"type": "string"}
        schema = {k: v for k, v in schema.items()}
        if isinstance(schema.get("type"), list):
            schema["type"] = next(x for x in schema["type"] if x != "null")
        params.append({"name": path_param_name(in_desc, var), "in": "path", "required": True, "schema": schema})
    if body == "*":
        if in_desc.full_name != _HTTP_BODY:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schemas.ref(in_desc, False)}},
            }
        else:
            op["requestBody"] = {
                "required": True,
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            }
    elif body:
        fd = in_desc.fields_by_name[body]
        bound.add(body)
        content_type = (
            "*/*" if fd.message_type is not None and fd.message_type.full_name == _HTTP_BODY else "application/json"
        )
        op["requestBody"] = {"required": True, "content": {content_type: {"schema": schemas.field(fd, False)}}}
    if body != "*":
        for fd in in_desc.fields:
            if fd.name in bound or (fd.type == FD.TYPE_MESSAGE and fd.message_type.full_name not in _WKT_SCHEMAS):
                continue
            schema = schemas.field(fd, False)
            param: dict[str, Any] = {"name": fd.json_name, "in": "query", "required": False, "schema": schema}
            if fd.is_repeated:
                param.update(style="form", explode=True)
            if fd.full_name in comments:
                param["description"] = comments[fd.full_name]
            params.append(param)
    if params:
        op["parameters"] = params
    status = str(method.success_status)
    if method.success_status == 204:
        ok: dict[str, Any] = {"description": "No content."}
    elif method.server_streaming:
        ok = {
            "description": "Server-Sent Events; each `data:` line is one JSON message: "
            + schemas.ref(out_desc, True)["$ref"].rsplit("/", 1)[-1],
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    elif out_desc.full_name == _HTTP_BODY:
        ok = {"description": "Raw body.", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}
    elif response_body:
        body_schema = schemas.field(out_desc.fields_by_name[response_body], True)
        ok = {"description": "Success.", "content": {"application/json": {"schema": body_schema}}}
    else:
        ok = {"description": "Success.", "content": {"application/json": {"schema": schemas.ref(out_desc, True)}}}
        for fd in out_desc.fields:
            media = fd.GetOptions().Extensions[options_pb2.field].alternate_media_type
            if media:
                ok["content"][media] = {"schema": {"type": "string"}}
                ok["description"] += f" {fd.json_name}: {comments.get(fd.full_name, '')}"
    op["responses"] = {
        status: ok,
        "default": {
            "description": "Error envelope.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        },
    }
    op["security"] = [] if rule.public else [{"bearerAuth": []}, {"sessionCookie": []}]
    return op


def build_openapi(methods: Iterable[Method], comments: dict[str, str], *, server_url: str = "/") -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``methods``."""
    schemas = _Schemas(comments)
    paths: dict[str, dict[str, Any]] = {}
    for method in sorted(methods, key=lambda m: m.grpc_path):
        for binding in method.bindings:
            item = paths.setdefault(openapi_path(method.descriptor.input_type, binding.path), {})
            item[binding.verb.lower()] = _operation(method, binding, schemas, comments)
    schemas.components["Error"] = ERROR_SCHEMA
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "observe API",
            "version": "v1",
            "description": "Uptime monitoring, status pages, heartbeats and logs. Every route is generated from "
            "the observe.v1 protos; errors use the `{error, code, fields}` envelope.",
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
