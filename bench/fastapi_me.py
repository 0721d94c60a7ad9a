"""The comparison handler: GET /me written the usual FastAPI way (a Depends
for auth, pydantic response models) doing the same database reads as
observe's GetMe (the same token lookup, user/org and usage queries)."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel

from core.accounts import plans
from core.accounts.service import read_me
from core.errors import ObserveError
from core.rpc.auth import Authenticator
from core.rpc.context import CallContext, Principal
from core.storage.db import Database

db = Database(os.environ["BENCH_DATABASE_URL"])
authenticator = Authenticator(db=db)
plan_book = plans.PlanBook(plans.parse_plans(None))
app = FastAPI()


class User(BaseModel):
    id: int
    email: str
    name: str


class Org(BaseModel):
    id: int
    name: str


class Limits(BaseModel):
    monitors: int | None
    monthlyChecks: int | None  # noqa: N815 (JSON field names)
    monthlyLogBytes: int | None  # noqa: N815


class Plan(BaseModel):
    name: str
    limits: Limits


class Usage(BaseModel):
    monitors: int
    monthlyChecks: int  # noqa: N815
    monthlyLogBytes: int  # noqa: N815


class Me(BaseModel):
    user: User
    org: Org
    role: str
    plan: Plan
    usage: Usage


async def principal(authorization: Annotated[str | None, Header()] = None) -> Principal:
    try:
        return await authenticator.authenticate(CallContext(transport="rest", authorization=authorization))
    except ObserveError as err:
        raise HTTPException(status_code=err.http_status, detail={"error": err.message, "code": err.name}) from None


@app.get("/api/v1/me", response_model=Me)
async def me(caller: Annotated[Principal, Depends(principal)]) -> Me:
    row = await read_me(db, caller.user_id, caller.org_id)
    used = plans.usage_from(row)
    limits = plan_book.limits(row.plan)
    return Me(
        user=User(id=caller.user_id, email=row.email, name=row.name),
        org=Org(id=caller.org_id, name=row.org_name),
        role=caller.role_name,
        plan=Plan(
            name=row.plan,
            limits=Limits(
                monitors=limits.monitors,
                monthlyChecks=limits.monthly_checks,
                monthlyLogBytes=limits.monthly_log_bytes,
            ),
        ),
        usage=Usage(monitors=used.monitors, monthlyChecks=used.monthly_checks, monthlyLogBytes=used.monthly_log_bytes),
    )
