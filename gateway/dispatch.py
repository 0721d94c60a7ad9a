"""Where the gateway sends a decoded call: the in-process pipeline (default)
or a remote gRPC core (``--grpc-upstream host:port``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import grpc
from google.protobuf.message import Message

from core.rpc.auth import SESSION_COOKIE
from core.rpc.context import CallContext
from core.rpc.methods import Method
from core.rpc.pipeline import Pipeline
from core.rpc.status import from_rpc_error

# Reply headers a remote core may set that the gateway passes on.
FORWARDED_REPLY_HEADERS = frozenset(
    {
        "set-cookie",
        "retry-after",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
        "idempotent-replayed",
        "cache-control",
        "location",
        "vary",
        "content-encoding",
        "content-security-policy",
    }
)


class Dispatcher(Protocol):
    async def unary(self, method: Method, request: Message, ctx: CallContext) -> Message: ...

    def stream(self, method: Method, request: Message, ctx: CallContext) -> AsyncIterator[Message]: ...

    async def close(self) -> None: ...


class InProcess:
    """Calls the pipeline directly: no serialisation, no loopback hop."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def unary(self, method: Method, request: Message, ctx: CallContext) -> Message:
        return await self.pipeline.unary(method, request, ctx)

    def stream(self, method: Method, request: Message, ctx: CallContext) -> AsyncIterator[Message]:
        return self.pipeline.stream(method, request, ctx)

    async def close(self) -> None:
        return None


def outgoing_metadata(
    ctx: CallContext, method: Method | None = None, request: Message | None = None
) -> list[tuple[str, str]]:
    md: list[tuple[str, str]] = []
    if ctx.authorization:
        md.append(("authorization", ctx.authorization))
    cookies = [f"{SESSION_COOKIE}={ctx.session_cookie}"] if ctx.session_cookie else []
    # Header- and cookie-bound request fields travel as what they came from:
    # the core fills them from the metadata, never from the message.
    for name, kind, key, _ in method.from_request if method is not None and request is not None else ():
        value = getattr(request, name)
        if value and kind == "cookie":
            cookies.append(f"{key}={value}")
        elif value:  # as x-forwarded-<name>: gRPC keeps Host, Accept-Encoding and the like for itself
            md.append((f"x-forwarded-{key}", value))
    if cookies:
        md.append(("cookie", "; ".join(cookies)))
    if ctx.idempotency_key is not None:
        md.append(("idempotency-key", ctx.idempotency_key))
    if ctx.ip:
        md.append(("x-forwarded-for", ctx.ip))
    if ctx.user_agent:
        md.append(("x-forwarded-user-agent", ctx.user_agent))
    return md


class Upstream:
    """Proxies each call to a remote gRPC core; its errors come back as
    ObserveError from the rich status, so the envelope is the same."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.aio.insecure_channel(target)

    async def unary(self, method: Method, request: Message, ctx: CallContext) -> Message:
        call = self.channel.unary_unary(
            method.grpc_path,
            request_serializer=type(request).SerializeToString,
            response_deserializer=method.output_class.FromString,
        )(request, metadata=outgoing_metadata(ctx, method, request))
        try:
            response: Message = await call
            _copy_reply_headers(await call.initial_metadata(), ctx)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return response

    async def stream(self, method: Method, request: Message, ctx: CallContext) -> AsyncIterator[Message]:
        call = self.channel.unary_stream(
            method.grpc_path,
            request_serializer=type(request).SerializeToString,
            response_deserializer=method.output_class.FromString,
        )(request, metadata=outgoing_metadata(ctx, method, request))
        try:
            async for item in call:
                yield item
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def close(self) -> None:
        await self.channel.close(grace=None)


def _copy_reply_headers(metadata: object, ctx: CallContext) -> None:
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key in FORWARDED_REPLY_HEADERS:
            ctx.response_headers.append((key, value if isinstance(value, str) else value.decode()))
