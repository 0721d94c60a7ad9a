"""The RPC table: every method of observe.v1 with its rule and HTTP bindings.

Built once at start-up by walking the service descriptors; nothing here is
looked up again per request.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from buf.validate import validate_pb2
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor, FileDescriptor, MethodDescriptor
from google.protobuf.message import Message
from observe.v1 import options_pb2

from core.rpc.auth import parse_cookies

DEFAULT_BODY_LIMIT = 1 << 20

Handler = Callable[[Any, Any], Awaitable[Message]]


@dataclass(frozen=True, slots=True)
class HttpBinding:
    """One REST route of a method (a google.api.HttpRule, flattened)."""

    verb: str  # GET, POST, PUT, PATCH, DELETE or a custom kind such as HEAD
    path: str  # "/api/v1/me/tokens/{id}"
    body: str  # "", "*" or a field name
    response_body: str


@dataclass(slots=True)
class Method:
    """An RPC with everything the pipeline and the transports need."""

    descriptor: MethodDescriptor
    rule: options_pb2.Rule
    input_class: type[Message]
    output_class: type[Message]
    bindings: list[HttpBinding]
    allowed_roles: frozenset[int]
    body_limit: int
    success_status: int
    # Request fields filled from a request header or cookie, as
    # (field name, "header" or "cookie", header or cookie name, longest value taken).
    from_request: tuple[tuple[str, str, str, int], ...] = ()
    handler: Handler | None = None
    # Declared by another project's protos and served for one of ours
    # ((observe.v1.foreign) on our service): gRPC only, its rule from there.
    foreign: bool = False

    @property
    def service(self) -> str:
        return self.descriptor.containing_service.full_name

    @property
    def name(self) -> str:
        return self.descriptor.name

    @property
    def grpc_path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def server_streaming(self) -> bool:
        return bool(self.descriptor.server_streaming)

    @property
    def body_field(self) -> str:
        """The request field the REST body fills ("" none, "*" the whole request)."""
        return self.bindings[0].body if self.bindings else ""

    @property
    def has_rule(self) -> bool:
        return self.foreign or self.descriptor.GetOptions().HasExtension(options_pb2.rule)


def _bindings(rule: http_pb2.HttpRule) -> list[HttpBinding]:
    out: list[HttpBinding] = []
    kind = rule.WhichOneof("pattern")
    if kind == "custom":
        out.append(HttpBinding(rule.custom.kind.upper(), rule.custom.path, rule.body, rule.response_body))
    elif kind:
        out.append(HttpBinding(kind.upper(), getattr(rule, kind), rule.body, rule.response_body))
    for extra in rule.additional_bindings:
        out.extend(_bindings(extra))
    return out


def sensitive_paths(descriptor: Any, prefix: str = "", depth: int = 0) -> frozenset[str]:
    """JSON paths of fields marked ``(observe.v1.field).sensitive``."""
    paths: set[str] = set()
    for fd in descriptor.fields:
        path = f"{prefix}{fd.json_name}"
        if fd.GetOptions().Extensions[options_pb2.field].sensitive:
            paths.add(path)
        elif fd.type == FieldDescriptor.TYPE_MESSAGE and depth < 4 and not fd.message_type.GetOptions().map_entry:
            paths |= sensitive_paths(fd.message_type, path + ".", depth + 1)
    return frozenset(paths)


def request_bound_fields(descriptor: Any) -> tuple[tuple[str, str, str, int], ...]:
    """The fields of a request message marked ``(observe.v1.field).header``
    or ``.cookie``: ``(field name, "header" | "cookie", name, max length)``.
    REST fills them from the request's headers, gRPC from the call's
    metadata; neither takes them from the query string or the body."""
    out: list[tuple[str, str, str, int]] = []
    for fd in descriptor.fields:
        opts = fd.GetOptions().Extensions[options_pb2.field]
        longest = fd.GetOptions().Extensions[validate_pb2.field].string.max_len or 8192
        if opts.header:
            out.append((fd.name, "header", opts.header.lower(), longest))
        elif opts.cookie:
            out.append((fd.name, "cookie", opts.cookie, longest))
    return tuple(out)


def fill_from_request(request: Message, bound: tuple[tuple[str, str, str, int], ...], headers: dict[str, str]) -> None:
    """Sets each header- or cookie-bound field of ``request`` from ``headers``
    (lower-case names; "cookie" the raw Cookie header), clearing it when the
    request has none: a value the caller put in the message or the query does
    not count. A value longer than the field takes is ignored as if absent:
    browsers send what they hold, and a stray oversized cookie must not
    break a page."""
    cookies: dict[str, str] | None = None
    for name, kind, key, longest in bound:
        if kind == "header":
            value = headers.get(key, "")
        else:
            if cookies is None:
                cookies = parse_cookies(headers.get("cookie", ""))
            value = cookies.get(key, "")
        setattr(request, name, value if len(value) <= longest else "")


def build_method(descriptor: MethodDescriptor, foreign_rule: options_pb2.Rule | None = None) -> Method:
    options = descriptor.GetOptions()
    rule = foreign_rule if foreign_rule is not None else options.Extensions[options_pb2.rule]
    http = options.Extensions[annotations_pb2.http]
    return Method(
        foreign=foreign_rule is not None,
        descriptor=descriptor,
        rule=rule,
        input_class=message_factory.GetMessageClass(descriptor.input_type),
        output_class=message_factory.GetMessageClass(descriptor.output_type),
        bindings=_bindings(http),
        allowed_roles=frozenset(rule.roles),
        body_limit=rule.body_limit_bytes or DEFAULT_BODY_LIMIT,
        success_status=rule.success_status or 200,
        from_request=request_bound_fields(descriptor.input_type),
    )


def observe_files() -> list[FileDescriptor]:
    """Every generated observe.v1 file (imports each ``*_pb2`` module)."""
    import observe.v1 as package

    modules: list[ModuleType] = [
        importlib.import_module(f"observe.v1.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
        if info.name.endswith("_pb2")
    ]
    return [m.DESCRIPTOR for m in modules]


def build_methods(files: Iterable[FileDescriptor], implementations: Iterable[object]) -> dict[str, Method]:
    """Methods of every service in ``files``, bound to the implementation
    whose class derives from that service's generated servicer."""
    by_service: dict[str, object] = {}
    for impl in implementations:
        for cls in type(impl).__mro__:
            if cls.__name__.endswith("Servicer"):
                by_service[cls.__name__.removesuffix("Servicer")] = impl
    methods: dict[str, Method] = {}
    for file in files:
        for service in file.services_by_name.values():
            impl = by_service.get(service.name)
            for md in service.methods:
                method = build_method(md)
                if impl is not None:
                    method.handler = getattr(impl, md.name)
                methods[method.grpc_path] = method
            for declared in service.GetOptions().Extensions[options_pb2.foreign]:
                if impl is None:
                    continue  # gRPC-only and unimplemented here (the REST proxy's table)
                method = build_method(_foreign_descriptor(declared.method, service.full_name), declared.rule)
                # Bound to the implementation of our service, which has a
                # method of the foreign method's name.
                method.handler = getattr(impl, method.name)
                methods[method.grpc_path] = method
    return methods


def _foreign_descriptor(full_name: str, declared_by: str) -> MethodDescriptor:
    """The descriptor of a foreign method, from the default pool: the module
    that generated it (e.g. opentelemetry-proto's ``logs_service_pb2``) must
    be imported by the implementation before the table is built."""
    try:
        return descriptor_pool.Default().FindMethodByName(full_name)
    except KeyError:
        raise LookupError(f"{declared_by} serves {full_name}, which no imported module defines") from None
