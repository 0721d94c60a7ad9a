"""The core call pipeline: every RPC from every transport passes through here.

``admit`` runs the checks the method's rule declares (authentication, scope,
role, body size); then the domain handler runs. Unexpected exceptions become
``INTERNAL`` without leaking their text to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.message import Message

from core.errors import ErrorCode, ObserveError
from core.rpc import scopes
from core.rpc.auth import Authenticator
from core.rpc.context import CallContext
from core.rpc.methods import Method

log = logging.getLogger("observe.pipeline")

SESSION_SCOPES = frozenset({scopes.WILDCARD})


class Pipeline:
    """Admits calls by their method's rule and runs their handlers."""

    def __init__(self, *, methods: dict[str, Method], authenticator: Authenticator) -> None:
        self.methods = methods
        self.authenticator = authenticator

    async def admit(self, method: Method, request: Message, ctx: CallContext) -> None:
        rule = method.rule
        if request.ByteSize() > method.body_limit:
            raise ObserveError(
                ErrorCode.ERROR_CODE_PAYLOAD_TOO_LARGE, f"request is larger than {method.body_limit} bytes"
            )
        if rule.public:
            return
        principal = await self.authenticator.authenticate(ctx)
        ctx.principal = principal
        if rule.scope and not scopes.grants(principal.scopes, rule.scope):
            raise ObserveError(
                ErrorCode.ERROR_CODE_PAT_SCOPE_INSUFFICIENT, f"this token lacks the '{rule.scope}' scope"
            )
        if method.allowed_roles and principal.role not in method.allowed_roles:
            raise ObserveError(
                ErrorCode.ERROR_CODE_ROLE_INSUFFICIENT, f"the {principal.role_name} role cannot call {method.name}"
            )

    async def unary(self, method: Method, request: Message, ctx: CallContext) -> Message:
        """Admits and runs one unary call; raises :class:`ObserveError` only."""
        try:
            await self.admit(method, request, ctx)
            assert method.handler is not None, method.grpc_path
            return await method.handler(request, ctx)
        except ObserveError:
            raise
        except Exception as exc:
            raise _internal(method, exc) from exc

    async def stream(self, method: Method, request: Message, ctx: CallContext) -> AsyncIterator[Message]:
        """Admits and runs one server-streaming call."""
        try:
            await self.admit(method, request, ctx)
            assert method.handler is not None, method.grpc_path
            iterator: Any = method.handler(request, ctx)
            async for item in iterator:
                yield item
        except ObserveError:
            raise
        except Exception as exc:
            raise _internal(method, exc) from exc


def _internal(method: Method, exc: Exception) -> ObserveError:
    # The traceback goes to the log; the caller sees only the code.
    log.exception("unhandled error in %s", method.grpc_path, exc_info=exc)
    return ObserveError(ErrorCode.ERROR_CODE_INTERNAL, "internal error")
