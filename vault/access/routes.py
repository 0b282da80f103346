"""/v1/access-requests, /v1/grants and /v1/break-glass.

Routes parse and shape; every rule (roles, owners, approver roles, scope, state) is decided by the
services through :func:`vault.authz.authorize`, and the request's unit of work commits.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body
from sqlmodel import Field, Session, SQLModel

from vault.access import breakglass, grants, queries
from vault.access import requests as access
from vault.api.deps import CtxDep, CurrentActor, ReadSessionDep, SessionDep
from vault.authz import Actor
from vault.context import Context
from vault.models import (
    AccessRequestCreate,
    AccessRequestPublic,
    AccessRequestStatus,
    BreakGlassCreate,
    GrantPublic,
    ReviewCreate,
    ReviewDecision,
)
from vault.validation import MultilineText

router = APIRouter(tags=["access"])


class RevokeCreate(SQLModel):
    reason: MultilineText = Field(default="", max_length=2000)


ReviewBody = Annotated[ReviewCreate | None, Body()]
RevokeBody = Annotated[RevokeCreate | None, Body()]


# --- access requests ------------------------------------------------------------------------------


@router.post("/v1/access-requests", status_code=201, response_model=AccessRequestPublic)
def create_request(
    ctx: CtxDep, session: SessionDep, actor: CurrentActor, body: AccessRequestCreate
) -> AccessRequestPublic:
    now = ctx.now()
    req = access.create_request(
        session, actor=actor, policy=ctx.policy, recording_ids=body.recording_ids,
        purpose=body.purpose, reason=body.reason, ticket=body.ticket,
        duration_minutes=body.duration_minutes,
        request_ttl=timedelta(hours=ctx.settings.access_request_ttl_hours), now=now,
    )  # fmt: skip
    return queries.to_public_request(session, req, now)


@router.get("/v1/access-requests", response_model=list[AccessRequestPublic])
def list_requests(
    ctx: CtxDep,
    session: ReadSessionDep,
    actor: CurrentActor,
    status: AccessRequestStatus | None = None,
) -> list[AccessRequestPublic]:
    return queries.list_requests(session, actor=actor, status=status, now=ctx.now())


def _review(
    ctx: Context,
    session: Session,
    actor: Actor,
    request_id: uuid.UUID,
    decision: ReviewDecision,
    body: ReviewCreate | None,
) -> AccessRequestPublic:
    now = ctx.now()
    req = access.review(
        session, actor=actor, policy=ctx.policy, request_id=request_id, decision=decision,
        comment=(body or ReviewCreate()).comment, now=now,
    )  # fmt: skip
    return queries.to_public_request(session, req, now)


@router.post("/v1/access-requests/{request_id}/approve", response_model=AccessRequestPublic)
def approve(
    ctx: CtxDep,
    session: SessionDep,
    actor: CurrentActor,
    request_id: uuid.UUID,
    body: ReviewBody = None,
) -> AccessRequestPublic:
    return _review(ctx, session, actor, request_id, ReviewDecision.approve, body)


@router.post("/v1/access-requests/{request_id}/deny", response_model=AccessRequestPublic)
def deny(
    ctx: CtxDep,
    session: SessionDep,
    actor: CurrentActor,
    request_id: uuid.UUID,
    body: ReviewBody = None,
) -> AccessRequestPublic:
    return _review(ctx, session, actor, request_id, ReviewDecision.deny, body)


@router.post("/v1/access-requests/{request_id}/revoke", response_model=AccessRequestPublic)
def revoke_request(
    ctx: CtxDep,
    session: SessionDep,
    actor: CurrentActor,
    request_id: uuid.UUID,
    body: RevokeBody = None,
) -> AccessRequestPublic:
    now = ctx.now()
    req = access.revoke_request(
        session, actor=actor, request_id=request_id, reason=(body or RevokeCreate()).reason,
        now=now,
    )  # fmt: skip
    return queries.to_public_request(session, req, now)


# --- grants ---------------------------------------------------------------------------------------


@router.get("/v1/grants", response_model=list[GrantPublic])
def list_grants(
    ctx: CtxDep,
    session: ReadSessionDep,
    actor: CurrentActor,
    active: bool | None = None,
    needs_review: bool | None = None,
) -> list[GrantPublic]:
    return queries.list_grants(
        session, actor=actor, active=active, needs_review=needs_review, now=ctx.now()
    )


@router.post("/v1/grants/{grant_id}/revoke", response_model=GrantPublic)
def revoke_grant(
    ctx: CtxDep,
    session: SessionDep,
    actor: CurrentActor,
    grant_id: uuid.UUID,
    body: RevokeBody = None,
) -> GrantPublic:
    now = ctx.now()
    grant = access.revoke_grant(
        session, actor=actor, grant_id=grant_id, reason=(body or RevokeCreate()).reason, now=now
    )
    return grants.to_public(session, grant, now=now)


@router.post("/v1/break-glass", status_code=201, response_model=GrantPublic)
def break_glass(
    ctx: CtxDep,
    session: SessionDep,
    actor: CurrentActor,
    body: BreakGlassCreate,
) -> GrantPublic:
    now = ctx.now()
    grant = breakglass.break_glass(
        session, actor=actor, policy=ctx.policy, recording_ids=body.recording_ids,
        purpose=body.purpose, incident_ref=body.incident_ref, reason=body.reason,
        duration_minutes=body.duration_minutes, now=now,
    )  # fmt: skip
    return grants.to_public(session, grant, now=now)


@router.post("/v1/grants/{grant_id}/review", response_model=GrantPublic)
def review_break_glass(
    ctx: CtxDep,
    session: SessionDep,
    actor: CurrentActor,
    grant_id: uuid.UUID,
    body: ReviewBody = None,
) -> GrantPublic:
    now = ctx.now()
    grant = breakglass.review_break_glass(
        session, actor=actor, grant_id=grant_id, comment=(body or ReviewCreate()).comment, now=now
    )
    return grants.to_public(session, grant, now=now)
