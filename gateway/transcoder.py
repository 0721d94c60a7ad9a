"""REST ⇄ RPC transcoding, generated from the descriptors' HttpRules.

One :class:`Route` per binding is built at start-up; a request is matched,
its path variables, query string and JSON body are decoded into the input
message, the call goes to the dispatcher (pipeline or remote core), and the
reply is encoded with the method's success status. Server-streaming methods
answer as Server-Sent Events. Everything non-2xx is the error envelope.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import status_pb2
from observe.v1 import options_pb2

from core.errors import ErrorCode, FieldViolation, ObserveError, Violations, not_found, validation_failed
from core.rpc.auth import session_from_cookie
from core.rpc.context import CallContext
from core.rpc.idempotency import received_key
from core.rpc.jsonkeys import may_repeat_keys, parse_with_repeats, repeated_key_paths
from core.rpc.jsonmap import AnyDesc, AnyField, JsonCodec
from core.rpc.methods import HttpBinding, Method, fill_from_request
from gateway.dispatch import Dispatcher
from gateway.envelope import error_payload, error_response, framework_error
from gateway.routes import Router, Template

log = logging.getLogger("observe.gateway")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

HTTP_BODY = "google.api.HttpBody"
JSON_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


class ClientDisconnectedError(Exception):
    pass


@dataclass(slots=True)
class Route:
    """One REST binding of one method."""

    method: Method
    binding: HttpBinding
    template: Template | None = None
    body_field: AnyField | None = None
    http_body_in: bool = False
    http_body_out: bool = False
    query_allowed: bool = True
    alternate_body: str = ""  # an HttpBody response field sent raw when set
    id_variables: frozenset[str] = frozenset()  # path variables bound to integer fields

    @classmethod
    def build(cls, method: Method, binding: HttpBinding) -> Route:
        route = cls(method, binding)
        in_desc = method.descriptor.input_type
        if binding.body not in ("", "*"):
            route.body_field = in_desc.fields_by_name[binding.body]
            route.http_body_in = route.body_field.message_type is not None and (
                route.body_field.message_type.full_name == HTTP_BODY
            )
        else:
            route.http_body_in = binding.body == "*" and in_desc.full_name == HTTP_BODY
        route.http_body_out = method.descriptor.output_type.full_name == HTTP_BODY and not binding.response_body
        route.query_allowed = binding.body != "*"
        route.alternate_body = alternate_body_field(method.descriptor.output_type)
        route.id_variables = frozenset(
            fd.name
            for fd in in_desc.fields
            if fd.cpp_type in _INTEGER_TYPES and not fd.is_repeated and "{" + fd.name in binding.path
        )
        return route


def alternate_body_field(desc: AnyDesc) -> str:
    """The response field marked ``(observe.v1.field).alternate_media_type``."""
    for fd in desc.fields:
        if fd.GetOptions().Extensions[options_pb2.field].alternate_media_type:
            return str(fd.name)
    return ""


def build_router(methods: Iterable[Method]) -> Router[Route]:
    router: Router[Route] = Router()
    for method in methods:
        for binding in method.bindings:
            route = Route.build(method, binding)
            route.template = router.add(binding.verb, binding.path, route)
    return router


def _header_map(scope: Scope) -> dict[bytes, bytes]:
    return dict(scope["headers"])


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnectedError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ObserveError(ErrorCode.ERROR_CODE_PAYLOAD_TOO_LARGE, f"request body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _decoded(raw: bytes, encoding: bytes, limit: int) -> bytes:
    """A ``Content-Encoding: gzip`` (or ``deflate``) body, decompressed; the
    route's body limit applies to what it decompresses to (a small bomb is
    413 like a large body). A gzip body may hold several members (RFC 1952),
    as concatenated gzip files do: all of them count."""
    if encoding in (b"gzip", b"x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == b"deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise ObserveError(
            ErrorCode.ERROR_CODE_UNSUPPORTED_MEDIA_TYPE, "Content-Encoding must be gzip, deflate or identity"
        )
    out = bytearray()
    rest = raw
    try:
        while True:
            inflater = zlib.decompressobj(wbits=wbits)
            out += inflater.decompress(rest, limit + 1 - len(out))
            if len(out) > limit or inflater.unconsumed_tail:
                raise ObserveError(
                    ErrorCode.ERROR_CODE_PAYLOAD_TOO_LARGE, f"request body is larger than {limit} bytes decompressed"
                )
            if not inflater.eof:
                raise zlib.error("truncated")
            rest = inflater.unused_data
            if not rest:
                return bytes(out)
            if wbits == zlib.MAX_WBITS:
                raise zlib.error("data after the deflate stream")
    except zlib.error:
        raise validation_failed(
            [FieldViolation("", "invalid_type", f"the body is not valid {encoding.decode()} data")]
        ) from None


_INTEGER_TYPES = frozenset(
    {FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT32,
     FieldDescriptor.CPPTYPE_UINT64}
)  # fmt: skip
_INT64_MAX = 2**63 - 1


def _is_path_id(text: str) -> bool:
    """Plain ASCII digits, no sign, no leading zero, within int64."""
    return text.isascii() and text.isdigit() and (text == "0" or text[0] != "0") and int(text) <= _INT64_MAX


def parse_json(raw: bytes) -> Any:
    """A JSON body; malformed JSON and duplicate keys (at any depth) are
    VALIDATION_FAILED (CONTRACT.md, input hygiene: ``custom``, path = the key;
    how they are found: core.rpc.jsonkeys)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise validation_failed([FieldViolation("", "invalid_type", f"Malformed JSON: {exc}")]) from None
    if isinstance(data, (dict, list)) and may_repeat_keys(raw, [data]):
        repeated = repeated_key_paths(parse_with_repeats(raw))
        if repeated:
            raise validation_failed([FieldViolation(path, "custom", "Duplicate key") for path in repeated])
    return data


PROTOBUF = "application/x-protobuf"


def _is_protobuf(content_type: bytes) -> bool:
    return content_type.split(b";", 1)[0].strip().lower() == PROTOBUF.encode()


def status_message(err: ObserveError) -> bytes:
    """The error as a serialized google.rpc.Status: the reply to a protobuf
    request (OTLP/HTTP), with the HTTP status and Retry-After as for JSON."""
    status = status_pb2.Status(code=err.info.grpc_status.value[0], message=err.message)
    data: bytes = status.SerializeToString()
    return data


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


async def send_reply(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    if status != 204:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, err: ObserveError, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    status, headers, body = error_response(err)
    if extra:
        headers.extend(extra)
    await send_reply(send, status, headers, body)


def _infer_update_mask(codec: JsonCodec, request: Message, body_field: Any, data: Any) -> None:
    """A PATCH body is a JSON merge: when the request has an ``update_mask``
    the caller left unset, it names the keys present in the patched object
    (the body itself, or for ``body: "*"`` its one message-valued key), so
    ``{"alertSlackUrl": null}`` clears a field and absent keys stay as they are."""
    fields = request.DESCRIPTOR.fields_by_name
    mask_fd = fields.get("update_mask")
    if mask_fd is None or mask_fd.message_type is None or mask_fd.message_type.full_name != "google.protobuf.FieldMask":
        return
    if request.HasField("update_mask") or not isinstance(data, dict):
        return
    patch: Any
    if body_field is not None:
        target_fd, patch = body_field, data
    else:
        candidates = [
            fd
            for fd in request.DESCRIPTOR.fields
            if fd.type == fd.TYPE_MESSAGE
            and not fd.is_repeated
            and fd.name != "update_mask"
            and (fd.json_name in data or fd.name in data)
        ]
        if len(candidates) != 1:
            return
        target_fd = candidates[0]
        patch = data.get(target_fd.json_name, data.get(target_fd.name))
    if not isinstance(patch, dict) or target_fd.message_type is None:
        return
    table = codec.field_table(target_fd.message_type)
    paths = [table[key][0].name for key in patch if key in table]
    mask: Any = request.update_mask  # type: ignore[attr-defined]
    mask.paths.extend(dict.fromkeys(paths))
    if not paths:
        mask.SetInParent()


class Transcoder:
    """The ASGI app for every generated route."""

    def __init__(self, methods: Iterable[Method], dispatcher: Dispatcher, codec: JsonCodec | None = None) -> None:
        self.codec = codec or JsonCodec()
        self.router = build_router(methods)
        self.dispatcher = dispatcher
        # First path segments of the routes outside /api/ (web pages such as
        # /status/{slug}, "" for /): the app sends these paths here too.
        self.web_roots = frozenset(
            template.text.split("/")[1]
            for template, _ in self.router.entries()
            if not template.text.startswith("/api/")
        )
        if any("{" in root for root in self.web_roots):
            raise ValueError("a route outside /api/ must start with a literal segment")

    def serves(self, path: str) -> bool:
        """The path is one of this transcoder's (the rest is the shell's)."""
        return path.startswith("/api/") or (path.startswith("/") and path[1:].split("/", 1)[0] in self.web_roots)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        verb = scope["method"]
        matched = self.router.match(verb, scope["path"])
        if isinstance(matched, list):
            if verb == "HEAD":  # HEAD on a GET route: the GET without a body
                again = self.router.match("GET", scope["path"])
                if not isinstance(again, list):
                    await self._serve(again[0], again[2], scope, receive, _drop_body(send))
                    return
            await send_error(send, framework_error(405 if matched else 404, matched))
            return
        route, template, variables = matched
        scope["observe.route"] = template.text
        await self._serve(route, variables, scope, receive, send)

    async def _serve(self, route: Route, variables: dict[str, str], scope: Scope, receive: Receive, send: Send) -> None:
        headers = _header_map(scope)
        ctx = CallContext(transport="rest")
        auth = headers.get(b"authorization")
        if auth is not None:
            ctx.authorization = auth.decode("latin-1")
        cookie = headers.get(b"cookie")
        if cookie is not None:
            # Cookies may come in several headers (HTTP/2 front ends split them): all of them count.
            cookie = headers[b"cookie"] = b"; ".join(v for k, v in scope["headers"] if k == b"cookie")
            ctx.session_cookie = session_from_cookie(cookie.decode("latin-1"))
        ua = headers.get(b"user-agent")
        if ua is not None:
            ctx.user_agent = ua.decode("latin-1")
        client = scope.get("client")
        if client:
            ctx.ip = client[0]
        try:
            key = headers.get(b"idempotency-key")
            if key is not None:
                ctx.idempotency_key = received_key(key.decode("latin-1"))
            request = await self._decode(route, variables, scope, headers, receive)
            if route.method.server_streaming:
                await self._stream(route, request, ctx, receive, send)
                return
            call = self.dispatcher.unary(route.method, request, ctx)
            # A read whose client left is cancelled, with the database query
            # it waits on (issue: a slow filter ran on for minutes after the
            # client gave up). A mutation runs to its end: it may have begun
            # to change things, and its idempotency record must be written.
            response = await (call if route.method.rule.mutation else _unless_disconnected(call, receive))
        except ObserveError as err:
            if err.page is None and _is_protobuf(headers.get(b"content-type", b"")):
                err.page = (PROTOBUF, status_message(err))
            await send_error(send, err, _encode_headers(ctx.response_headers))
            return
        except ClientDisconnectedError:
            return
        await self._reply(route, response, ctx, send)

    async def _decode(
        self, route: Route, variables: dict[str, str], scope: Scope, headers: dict[bytes, bytes], receive: Receive
    ) -> Message:
        method = route.method
        request = method.input_class()
        v = Violations()
        repeated: list[tuple[str, str, Any]] = []
        binding = route.binding
        if binding.body:
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > method.body_limit:
                raise ObserveError(
                    ErrorCode.ERROR_CODE_PAYLOAD_TOO_LARGE, f"request body is larger than {method.body_limit} bytes"
                )
            raw = await _read_body(receive, method.body_limit)
            encoding = headers.get(b"content-encoding", b"identity").strip().lower()
            if encoding != b"identity":
                raw = _decoded(raw, encoding, method.body_limit)
            content_type = headers.get(b"content-type", b"")
            if route.http_body_in:
                target: Any = getattr(request, route.body_field.name) if route.body_field else request
                target.content_type = content_type.decode("latin-1")
                target.data = raw
            elif raw.strip():
                if not _is_json(content_type):
                    raise framework_error(415)
                data = parse_json(raw)
                repeated = self._take_path_fields(route, variables, data)
                if route.body_field is None:
                    self.codec.decode_object(request, data, "", v)
                else:
                    # The body is the field: its paths are the body's own (intervalSec, not monitor.intervalSec).
                    fd = route.body_field
                    entry = self.codec.field_table(method.descriptor.input_type)[fd.name]
                    entry[1](request, data, "", v)
                _infer_update_mask(self.codec, request, route.body_field, data)
        path_ok: set[str] = set()
        for var, text in variables.items():
            if var in route.id_variables and not _is_path_id(text):
                raise not_found()  # CONTRACT.md, input hygiene: as for a missing id
            before = len(v.items)
            self.codec.assign_text(request, var, [text], _json_path(self.codec, method, var), v)
            if len(v.items) == before:
                path_ok.add(var)
        for var, body_path, value in repeated:
            self._check_repeated(request, var, body_path, value, variables[var] if var in path_ok else None, v)
        query = scope.get("query_string", b"")
        if query:
            self._decode_query(route, request, variables, query, v)
        if method.from_request:
            sent = {k.decode("latin-1"): x.decode("latin-1") for k, x in headers.items()}
            fill_from_request(request, method.from_request, sent)
        if v:
            raise validation_failed(v.items)
        return request

    def _take_path_fields(self, route: Route, variables: dict[str, str], data: Any) -> list[tuple[str, str, Any]]:
        """Takes out of the JSON body each field the path already binds, as
        ``(field path, where the body had it, value)``: the path's value is
        the one used, and a body that repeats it must agree
        (:meth:`_check_repeated`). The same on every route: ``body: "*"``
        (where the body could name the field itself), or a body bound to a
        field (``PATCH /monitors/{id}`` with ``{"id": …}`` beside the changes)."""
        if not variables or not isinstance(data, dict):
            return []
        taken: list[tuple[str, str, Any]] = []
        input_desc = route.method.descriptor.input_type
        body = route.body_field
        for var in variables:
            parts = var.split(".")
            if body is None:
                desc, walk = input_desc, parts
            elif body.message_type is None:
                continue
            elif parts[0] == body.name and len(parts) > 1:
                desc, walk = body.message_type, parts[1:]
            elif len(parts) == 1 and parts[0] not in self.codec.field_table(body.message_type):
                desc, walk = input_desc, parts  # beside the body; the body's own fields are its own
            else:
                continue
            found = self._pop_json(desc, walk, data)
            if found is not None:
                taken.append((var, *found))
        return taken

    def _pop_json(self, desc: AnyDesc, parts: list[str], data: dict[str, Any]) -> tuple[str, Any] | None:
        """Removes the field at ``parts`` (proto names) from the JSON object
        ``data``, where it may be spelt either way; returns where it was
        (JSON path as written) and its value."""
        keys: list[str] = []
        node: Any = data
        for i, part in enumerate(parts):
            entry = self.codec.field_table(desc).get(part)
            if entry is None or not isinstance(node, dict):
                return None
            fd = entry[0]
            key = next((k for k in (fd.json_name, fd.name) if k in node), None)
            if key is None:
                return None
            keys.append(key)
            if i == len(parts) - 1:
                return ".".join(keys), node.pop(key)
            node, desc = node[key], fd.message_type
        return None

    def _check_repeated(
        self, request: Message, var: str, body_path: str, value: Any, path_text: str | None, v: Violations
    ) -> None:
        """A path field the body repeats: an equal value is fine; another one is a
        violation at the body's key. (Skipped when the path itself was bad.)"""
        if value is None or path_text is None:
            return
        scratch = type(request)()
        parts = var.split(".")
        target_in_body: Any = scratch
        target_in_path: Any = request
        for part in parts[:-1]:
            name = self.codec.field_table(target_in_body.DESCRIPTOR)[part][0].name
            target_in_body, target_in_path = getattr(target_in_body, name), getattr(target_in_path, name)
        fd, decode = self.codec.field_table(target_in_body.DESCRIPTOR)[parts[-1]]
        before = len(v.items)
        decode(target_in_body, value, body_path, v)
        if len(v.items) == before and getattr(target_in_body, fd.name) != getattr(target_in_path, fd.name):
            v.add(body_path, "invalid_literal", f"Expected {path_text}, the value in the path")

    def _decode_query(
        self, route: Route, request: Message, variables: dict[str, str], query: bytes, v: Violations
    ) -> None:
        params: dict[str, list[str]] = {}
        for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            params.setdefault(key, []).append(value)
        table = self.codec.field_table(route.method.descriptor.input_type)
        bound = {table[var.split(".")[0]][0].name for var in variables if var.split(".")[0] in table}
        if route.body_field is not None:
            bound.add(route.body_field.name)
        bound.update(name for name, _, _, _ in route.method.from_request)
        for key, values in params.items():
            head = table.get(key.split(".")[0])
            if not route.query_allowed or head is None or head[0].name in bound:
                if not route.binding.path.startswith("/api/") or route.method.rule.redirect_target:
                    # A web page's link may carry anything (utm_source, fbclid), and a provider's
                    # redirect back its own parameters (scope, authuser): neither is an API call.
                    continue
                v.add(key, "unrecognized_keys", f"Unrecognized query parameter: '{key}'")
                continue
            self.codec.assign_text(request, key, values, key, v)

    async def _reply(self, route: Route, response: Message, ctx: CallContext, send: Send) -> None:
        extra = _encode_headers(ctx.response_headers)
        status = route.method.success_status
        if status == 204:
            await send_reply(send, 204, [(b"cache-control", b"no-store"), *extra], b"")
            return
        raw: Any = response
        if route.alternate_body and response.HasField(route.alternate_body):
            raw = getattr(response, route.alternate_body)
        if route.http_body_out or raw is not response:
            content_type = getattr(raw, "content_type", "") or "application/octet-stream"
            headers = [(b"content-type", content_type.encode()), *extra]
            await send_reply(send, status, headers, getattr(raw, "data", b""))
            return
        if route.binding.response_body:
            payload: Any = getattr(response, route.binding.response_body)
            fd = response.DESCRIPTOR.fields_by_name[route.binding.response_body]
            if fd.is_repeated:
                payload = [self.codec.encode_value(x) if isinstance(x, Message) else x for x in payload]
            elif isinstance(payload, Message):
                payload = self.codec.encode_value(payload)
        else:
            payload = self.codec.encode(response)
        await send_reply(send, status, [*JSON_HEADERS, *extra], orjson.dumps(payload))

    async def _stream(self, route: Route, request: Message, ctx: CallContext, receive: Receive, send: Send) -> None:
        iterator = self.dispatcher.stream(route.method, request, ctx).__aiter__()
        # The first item is awaited before the headers go out, so a refused
        # call (auth, scope) is an ordinary error reply, not a broken stream.
        try:
            first: Message | None = await iterator.__anext__()
        except StopAsyncIteration:
            first = None
        headers = [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-store"),
            (b"x-accel-buffering", b"no"),
            *_encode_headers(ctx.response_headers),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def pump() -> None:
            item = first
            try:
                while item is not None:
                    data = orjson.dumps(self.codec.encode(item))
                    await send({"type": "http.response.body", "body": b"data: " + data + b"\n\n", "more_body": True})
                    try:
                        item = await iterator.__anext__()
                    except StopAsyncIteration:
                        item = None
            except ObserveError as err:
                payload = orjson.dumps(error_payload(err))
                await send(
                    {
                        "type": "http.response.body",
                        "body": b"event: error\ndata: " + payload + b"\n\n",
                        "more_body": True,
                    }
                )
            await send({"type": "http.response.body", "body": b""})

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        pump_task = asyncio.ensure_future(pump())
        watch_task = asyncio.ensure_future(watch())
        done, pending = await asyncio.wait({pump_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
        if pump_task in done and pump_task.exception() is not None:
            log.error("stream %s failed", route.method.grpc_path, exc_info=pump_task.exception())


async def _unless_disconnected(call: Awaitable[Message], receive: Receive) -> Message:
    """The result of ``call``; cancels it and raises ClientDisconnectedError
    when the ASGI server reports that the client went away first."""

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(call)
    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        loser = watch if task.done() else task
        loser.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loser
    if task.cancelled():
        raise ClientDisconnectedError
    return task.result()


def _json_path(codec: JsonCodec, method: Method, field_path: str) -> str:
    """``monitor_id`` → ``monitorId`` for violation paths."""
    desc: AnyDesc = method.descriptor.input_type
    parts = []
    for part in field_path.split("."):
        entry = codec.field_table(desc).get(part) if desc is not None else None
        if entry is None:
            parts.append(part)
            desc = None
            continue
        parts.append(entry[0].json_name)
        desc = entry[0].message_type
    return ".".join(parts)


def _encode_headers(pairs: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs]


def _drop_body(send: Send) -> Send:
    async def send_head(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return send_head
