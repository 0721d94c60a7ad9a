"""The core call pipeline: every RPC from every transport passes through here.

``admit`` runs the checks the method's rule declares (authentication, scope,
role, body size) and the request's own ``buf.validate`` rules. A mutation by a token then goes through Idempotency-Key
(claim or replay) and the PAT's daily mutation cap before its handler runs;
its reply is recorded for replay. Unexpected exceptions become ``INTERNAL``
without leaking their text to the caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.message import Message
from observe.v1 import options_pb2

from core.audit import recorder as audit
from core.errors import ErrorCode, ObserveError
from core.rpc import caps, scopes
from core.rpc.auth import Authenticator, bearer_from
from core.rpc.context import CallContext, Principal
from core.rpc.idempotency import Claim, IdempotencyStore, Replay
from core.rpc.methods import Method
from core.rpc.ratelimit import RateLimiter
from core.rpc.validator import VALIDATOR
from core.storage.db import Database

log = logging.getLogger("observe.pipeline")

SESSION_SCOPES = frozenset({scopes.WILDCARD})


class Pipeline:
    """Admits calls by their method's rule and runs their handlers."""

    def __init__(
        self,
        *,
        authenticator: Authenticator,
        db: Database,
        idempotency: IdempotencyStore,
        rate_limiter: RateLimiter,
    ) -> None:
        self.authenticator = authenticator
        self.db = db
        self.idempotency = idempotency
        self.rate_limiter = rate_limiter
        self.validator = VALIDATOR

    async def admit(self, method: Method, request: Message, ctx: CallContext) -> None:
        rule = method.rule
        if request.ByteSize() > method.body_limit:
            raise ObserveError(
                ErrorCode.ERROR_CODE_PAYLOAD_TOO_LARGE, f"request is larger than {method.body_limit} bytes"
            )
        if rule.public:
            key = _limit_key(rule, request) or f"ip:{ctx.ip}"
            ctx.response_headers.extend(await self.rate_limiter.hit(rule.rate_limit, key))
            self.validator.check_request(request, method.body_field)
            return
        principal = await self.authenticator.authenticate(ctx)
        ctx.principal = principal
        key = _limit_key(rule, request) or f"token:{principal.token_id}"
        ctx.response_headers.extend(await self.rate_limiter.hit(rule.rate_limit, key))
        if rule.scope and not scopes.grants(principal.scopes, rule.scope):
            raise ObserveError(
                ErrorCode.ERROR_CODE_PAT_SCOPE_INSUFFICIENT, f"this token lacks the '{rule.scope}' scope"
            )
        if method.allowed_roles and principal.role not in method.allowed_roles:
            raise ObserveError(
                ErrorCode.ERROR_CODE_ROLE_INSUFFICIENT, f"the {principal.role_name} role cannot call {method.name}"
            )
        # The proto's buf.validate rules, for both transports alike.
        self.validator.check_request(request, method.body_field)

    async def unary(self, method: Method, request: Message, ctx: CallContext) -> Message:
        """Admits and runs one unary call; raises :class:`ObserveError` only."""
        try:
            await self.admit(method, request, ctx)
            assert method.handler is not None, method.grpc_path
            if method.rule.mutation and ctx.principal is not None:
                return await self._mutate(method, request, ctx, ctx.principal)
            return await self._run(method, request, ctx)
        except ObserveError:
            raise
        except Exception as exc:
            raise _internal(method, exc) from exc

    async def _run(
        self, method: Method, request: Message, ctx: CallContext, claim: Claim | None = None, bearer: str = ""
    ) -> Message:
        """The handler with its audit entry and (with a claim) its stored
        reply: one transaction, so no change lands without its entry."""
        assert method.handler is not None
        if not method.rule.audit_action:
            response = await method.handler(request, ctx)
            if claim is not None:  # an unaudited mutation (log ingest): its reply is still kept for replay
                await self.idempotency.finish(claim, bearer, response, ctx.response_headers)
            return response
        async with self.db.unit_of_work():
            response = await method.handler(request, ctx)
            await audit.record(self.db, method, request, ctx)
            if claim is not None:
                await self.idempotency.finish(claim, bearer, response, ctx.response_headers)
        return response

    async def _mutate(self, method: Method, request: Message, ctx: CallContext, principal: Principal) -> Message:
        # The cap counts every admitted mutation, also those that then fail,
        # so it commits on its own, before the handler's unit of work.
        if not ctx.idempotency_key:
            await caps.count_mutation(self.db, principal)
            return await self._run(method, request, ctx)
        bearer = bearer_from(ctx)
        outcome = await self.idempotency.claim(principal.token_id, bearer, ctx.idempotency_key, method, request)
        if isinstance(outcome, Replay):
            ctx.replayed = True
            if outcome.error is not None:
                raise outcome.error
            ctx.response_headers.extend(outcome.headers)
            assert outcome.response is not None
            return method.output_class.FromString(outcome.response)
        try:
            # A replay never reaches this: it spends nothing of the cap.
            await caps.count_mutation(self.db, principal)
            response = await self._run(method, request, ctx, outcome, bearer)
        except ObserveError as err:
            if err.code == ErrorCode.ERROR_CODE_PAT_DAILY_LIMIT_EXCEEDED:
                await self.idempotency.release(outcome)
            else:
                await self.idempotency.finish_error(outcome, bearer, err)
            raise
        except BaseException:
            await asyncio.shield(self.idempotency.release(outcome))
            raise
        return response

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


def _limit_key(rule: options_pb2.Rule, request: Message) -> str:
    """The counter key of a rule's ``rate_limit_key`` field ("" when it names
    none): a digest of the value, so that a secret such as a heartbeat token
    never becomes a Redis key."""
    name = rule.rate_limit_key
    if not name:
        return ""
    digest = hashlib.sha256(str(getattr(request, name)).encode()).hexdigest()[:32]
    return f"{name}:{digest}"


def _internal(method: Method, exc: Exception) -> ObserveError:
    # The traceback goes to the log; the caller sees only the code.
    log.exception("unhandled error in %s", method.grpc_path, exc_info=exc)
    return ObserveError(ErrorCode.ERROR_CODE_INTERNAL, "internal error")
