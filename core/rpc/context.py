"""What one call carries through the pipeline: who, from where, and replies."""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.message import Message
from observe.v1 import options_pb2

from core.errors import ErrorCode, ObserveError

ROLE_NAMES: dict[int, str] = {
    options_pb2.ROLE_OWNER: "owner",
    options_pb2.ROLE_ADMIN: "admin",
    options_pb2.ROLE_MEMBER: "member",
    options_pb2.ROLE_VIEWER: "viewer",
}
ROLES_BY_NAME: dict[str, int] = {name: number for number, name in ROLE_NAMES.items()}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a user acting through a PAT or a session."""

    user_id: int
    org_id: int
    role: int
    email: str
    token_id: int
    token_kind: str  # "pat" or "session"
    scopes: frozenset[str]
    daily_mutation_limit: int | None = None
    daily_log_bytes_limit: int | None = None

    @property
    def pat_id(self) -> int | None:
        """The PAT id, or None for a session (audit rows say actorPatId: null)."""
        return self.token_id if self.token_kind == "pat" else None

    @property
    def role_name(self) -> str:
        return ROLE_NAMES[self.role]


@dataclass(slots=True)
class AuditNote:
    """What a handler tells the audit log about its call. All optional: by
    default the entry shows the request's fields as the change."""

    resource: str = ""
    before: Message | None = None  # the resource before (updates, deletes)
    after: Message | None = None  # the resource after (creates, updates)
    # For public calls (register, reset-password): whom to attribute them to.
    actor_user_id: int | None = None
    actor_org_id: int | None = None
    actor_email: str = ""
    # The verb when the call did one of several things its route may do (the
    # OAuth callback: sign in, sign up or link); empty: the rule's audit_action.
    action: str = ""


@dataclass(slots=True)
class CallContext:
    """Transport-neutral request facts, filled by the gRPC server or the gateway."""

    transport: str
    authorization: str | None = None
    session_cookie: str | None = None
    ip: str = ""
    user_agent: str = ""
    idempotency_key: str | None = None
    principal: Principal | None = None
    # Headers for the reply (Set-Cookie, RateLimit-*); gRPC sends them as
    # initial metadata.
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    audit: AuditNote = field(default_factory=AuditNote)
    replayed: bool = False  # answered from the Idempotency-Key store

    def require_principal(self) -> Principal:
        if self.principal is None:
            raise ObserveError(ErrorCode.ERROR_CODE_AUTH_REQUIRED, "authentication required")
        return self.principal
