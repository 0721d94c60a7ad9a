"""Members, roles, invites and the webhook signing secret of an organisation."""

from __future__ import annotations

import base64
import os
from datetime import timedelta
from typing import Any

from observe.v1 import members_pb2, members_pb2_grpc, options_pb2
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core import clock
from core.accounts.service import normalize_email
from core.config import Settings
from core.errors import ErrorCode, ObserveError, not_found
from core.mail.sender import Mailer
from core.rpc.context import ROLE_NAMES, ROLES_BY_NAME, CallContext
from core.storage import tables as t
from core.storage.db import Database
from core.storage.sealing import Sealer
from core.tokens import secrets

INVITE_TTL = timedelta(days=7)
_RANK = {"owner": 0, "admin": 1, "member": 2, "viewer": 3}


def new_webhook_secret() -> str:
    """Standard Webhooks: whsec_ + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def _member(row: Any) -> members_pb2.Member:
    return members_pb2.Member(
        user_id=row.user_id,
        email=row.email,
        name=row.name,
        role=options_pb2.Role.ValueType(ROLES_BY_NAME[row.role]),
        joined_at=clock.to_timestamp(row.created_at),
    )


def _invite(row: Any) -> members_pb2.Invite:
    return members_pb2.Invite(
        id=row.id,
        email=row.email,
        role=options_pb2.Role.ValueType(ROLES_BY_NAME[row.role]),
        expires_at=clock.to_timestamp(row.expires_at),
        created_at=clock.to_timestamp(row.created_at),
    )


_MEMBERS = select(
    t.memberships.c.user_id, t.memberships.c.role, t.memberships.c.created_at, t.users.c.email, t.users.c.name
).join(t.users, t.users.c.id == t.memberships.c.user_id)


async def _owners(conn: AsyncConnection, org_id: int) -> int:
    query = select(func.count()).where((t.memberships.c.org_id == org_id) & (t.memberships.c.role == "owner"))
    return int((await conn.execute(query)).scalar_one())


class MemberService(members_pb2_grpc.MemberServiceServicer):
    def __init__(self, *, db: Database, settings: Settings, mailer: Mailer, sealer: Sealer) -> None:
        self.db = db
        self.settings = settings
        self.mailer = mailer
        self.sealer = sealer

    async def ListMembers(
        self, request: members_pb2.ListMembersRequest, ctx: CallContext
    ) -> members_pb2.ListMembersResponse:
        principal = ctx.require_principal()
        async with self.db.read() as conn:
            rows = (await conn.execute(_MEMBERS.where(t.memberships.c.org_id == principal.org_id))).all()
        rows = sorted(rows, key=lambda r: (_RANK[r.role], r.created_at, r.user_id))
        return members_pb2.ListMembersResponse(members=[_member(r) for r in rows])

    async def UpdateMember(
        self, request: members_pb2.UpdateMemberRequest, ctx: CallContext
    ) -> members_pb2.UpdateMemberResponse:
        principal = ctx.require_principal()
        new_role = ROLE_NAMES[request.role]
        async with self.db.write() as conn:
            mine = (t.memberships.c.org_id == principal.org_id) & (t.memberships.c.user_id == request.user_id)
            row = (await conn.execute(_MEMBERS.where(mine))).first()
            if row is None:
                raise not_found("member")
            if row.role == "owner" and new_role != "owner" and await _owners(conn, principal.org_id) <= 1:
                raise ObserveError(ErrorCode.ERROR_CODE_SOLE_OWNER, "the organisation's only owner cannot be demoted")
            await conn.execute(update(t.memberships).where(mine).values(role=new_role))
        before = _member(row)
        after = members_pb2.Member()
        after.CopyFrom(before)
        after.role = request.role
        ctx.audit.resource, ctx.audit.before, ctx.audit.after = f"member:{request.user_id}", before, after
        return members_pb2.UpdateMemberResponse(member=after)

    async def RemoveMember(
        self, request: members_pb2.RemoveMemberRequest, ctx: CallContext
    ) -> members_pb2.RemoveMemberResponse:
        principal = ctx.require_principal()
        async with self.db.write() as conn:
            mine = (t.memberships.c.org_id == principal.org_id) & (t.memberships.c.user_id == request.user_id)
            row = (await conn.execute(_MEMBERS.where(mine))).first()
            if row is None:
                raise not_found("member")
            if row.role == "owner":
                if principal.role != options_pb2.ROLE_OWNER:
                    raise ObserveError(ErrorCode.ERROR_CODE_ROLE_INSUFFICIENT, "only owners remove owners")
                if await _owners(conn, principal.org_id) <= 1:
                    raise ObserveError(ErrorCode.ERROR_CODE_SOLE_OWNER, "the organisation's only owner cannot leave")
            await conn.execute(delete(t.memberships).where(mine))
            # Their tokens already fail (authentication joins the membership);
            # revoking them too keeps the record plain.
            await conn.execute(
                update(t.api_tokens)
                .where((t.api_tokens.c.user_id == request.user_id) & t.api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=clock.now())
            )
        ctx.audit.resource, ctx.audit.before = f"member:{request.user_id}", _member(row)
        return members_pb2.RemoveMemberResponse()

    async def ListInvites(
        self, request: members_pb2.ListInvitesRequest, ctx: CallContext
    ) -> members_pb2.ListInvitesResponse:
        principal = ctx.require_principal()
        query = (
            select(t.invites)
            .where(
                (t.invites.c.org_id == principal.org_id)
                & t.invites.c.accepted_at.is_(None)
                & (t.invites.c.expires_at > clock.now())
            )
            .order_by(t.invites.c.id.desc())
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return members_pb2.ListInvitesResponse(invites=[_invite(r) for r in rows])

    async def CreateInvite(
        self, request: members_pb2.CreateInviteRequest, ctx: CallContext
    ) -> members_pb2.CreateInviteResponse:
        principal = ctx.require_principal()
        email = normalize_email(request.email)
        role = ROLE_NAMES.get(request.role, "member")
        if role == "owner" and principal.role != options_pb2.ROLE_OWNER:
            raise ObserveError(ErrorCode.ERROR_CODE_ROLE_INSUFFICIENT, "only owners invite owners")
        token = secrets.new_token(secrets.INVITE_PREFIX)
        now = clock.now()
        async with self.db.write() as conn:
            # Whether the address has an account elsewhere is not the inviter's
            # to learn (it was a 409: account enumeration); only what this
            # organisation already sees, its members and open invites, is a
            # conflict. An address with an account in another organisation
            # is refused when the invite is accepted (core.accounts.service).
            member = (
                await conn.execute(
                    select(t.users.c.id)
                    .join(t.memberships, t.memberships.c.user_id == t.users.c.id)
                    .where((t.users.c.email == email) & (t.memberships.c.org_id == principal.org_id))
                )
            ).first()
            pending = (
                await conn.execute(
                    select(t.invites.c.id).where(
                        (t.invites.c.org_id == principal.org_id)
                        & (t.invites.c.email == email)
                        & t.invites.c.accepted_at.is_(None)
                        & (t.invites.c.expires_at > now)
                    )
                )
            ).first()
            if member is not None or pending is not None:
                raise ObserveError(
                    ErrorCode.ERROR_CODE_CONFLICT, "this e-mail is already a member or has an open invite here"
                )
            invite_id = (
                await conn.execute(
                    insert(t.invites)
                    .values(
                        org_id=principal.org_id,
                        email=email,
                        role=role,
                        token_hash=secrets.token_hash(token),
                        invited_by=principal.user_id,
                        expires_at=now + INVITE_TTL,
                        created_at=now,
                    )
                    .returning(t.invites.c.id)
                )
            ).scalar_one()
            row = (await conn.execute(select(t.invites).where(t.invites.c.id == invite_id))).one()
        self.mailer.send_later(
            email,
            "You are invited to observe",
            f"{principal.email} invited you to join their organisation on observe as {role}.\n\n"
            f"Join: {self.settings.public_url}/join?token={token}\n"
            f"Or sign up through the API with this invite token: {token}\n\n"
            "The invite works once, for 7 days.\n",
        )
        invite = _invite(row)
        ctx.audit.resource, ctx.audit.after = f"invite:{invite_id}", invite
        return members_pb2.CreateInviteResponse(invite=invite)

    async def DeleteInvite(
        self, request: members_pb2.DeleteInviteRequest, ctx: CallContext
    ) -> members_pb2.DeleteInviteResponse:
        principal = ctx.require_principal()
        async with self.db.write() as conn:
            mine = (
                (t.invites.c.id == request.id)
                & (t.invites.c.org_id == principal.org_id)
                & t.invites.c.accepted_at.is_(None)
            )
            row = (await conn.execute(select(t.invites).where(mine))).first()
            if row is None:
                raise not_found("invite")
            await conn.execute(delete(t.invites).where(mine))
        ctx.audit.resource, ctx.audit.before = f"invite:{row.id}", _invite(row)
        return members_pb2.DeleteInviteResponse()

    async def GetWebhookSecret(
        self, request: members_pb2.GetWebhookSecretRequest, ctx: CallContext
    ) -> members_pb2.GetWebhookSecretResponse:
        principal = ctx.require_principal()
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(t.orgs.c.webhook_secret, t.orgs.c.webhook_secret_created_at).where(
                        t.orgs.c.id == principal.org_id
                    )
                )
            ).one()
        ctx.audit.resource = f"org:{principal.org_id}"
        if row.webhook_secret is None:
            return members_pb2.GetWebhookSecretResponse(webhook_secret=await self._rotate(principal.org_id))
        return members_pb2.GetWebhookSecretResponse(
            webhook_secret=members_pb2.WebhookSecret(
                secret=self.sealer.open(row.webhook_secret),
                created_at=clock.to_timestamp(row.webhook_secret_created_at),
            )
        )

    async def RotateWebhookSecret(
        self, request: members_pb2.RotateWebhookSecretRequest, ctx: CallContext
    ) -> members_pb2.RotateWebhookSecretResponse:
        principal = ctx.require_principal()
        secret = await self._rotate(principal.org_id)
        ctx.audit.resource = f"org:{principal.org_id}"
        ctx.audit.after = members_pb2.WebhookSecret(secret=secret.secret)
        return members_pb2.RotateWebhookSecretResponse(webhook_secret=secret)

    async def _rotate(self, org_id: int) -> members_pb2.WebhookSecret:
        secret, now = new_webhook_secret(), clock.now()
        async with self.db.write() as conn:
            await conn.execute(
                update(t.orgs)
                .where(t.orgs.c.id == org_id)
                .values(webhook_secret=self.sealer.seal(secret), webhook_secret_created_at=now)
            )
        return members_pb2.WebhookSecret(secret=secret, created_at=clock.to_timestamp(now))
