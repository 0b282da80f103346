"""/v1/legal-holds: place, release and list legal holds (privacy, security)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends

from vault.api.deps import CtxDep, SessionDep, require
from vault.authz import Actor, Permission
from vault.models import LegalHoldCreate, LegalHoldPublic, LegalHoldRelease
from vault.retention import holds

router = APIRouter(prefix="/v1/legal-holds", tags=["legal-holds"])

HoldManager = Annotated[Actor, Depends(require(Permission.hold_manage))]


@router.post("", status_code=201, response_model=LegalHoldPublic)
def create_hold(
    ctx: CtxDep, session: SessionDep, actor: HoldManager, body: LegalHoldCreate
) -> LegalHoldPublic:
    hold = holds.create_hold(
        session, actor=actor, store=ctx.store, case_ref=body.case_ref, reason=body.reason,
        recording_ids=body.recording_ids, tenant=body.tenant, call_id=body.call_id,
        recorded_from=body.recorded_from, recorded_to=body.recorded_to, now=ctx.now(),
    )  # fmt: skip
    out = holds.to_public(session, hold, actor=actor)
    session.commit()
    return out


@router.post("/{hold_id}/release", response_model=LegalHoldPublic)
def release_hold(
    ctx: CtxDep, session: SessionDep, actor: HoldManager, hold_id: uuid.UUID, body: LegalHoldRelease
) -> LegalHoldPublic:
    hold = holds.release_hold(
        session, actor=actor, store=ctx.store, hold_id=hold_id, reason=body.reason, now=ctx.now()
    )
    out = holds.to_public(session, hold, actor=actor)
    session.commit()
    return out


@router.get("", response_model=list[LegalHoldPublic])
def list_holds(
    session: SessionDep, actor: HoldManager, active: bool | None = None
) -> list[LegalHoldPublic]:
    return holds.list_holds(session, actor=actor, active=active)


@router.get("/{hold_id}", response_model=LegalHoldPublic)
def get_hold(session: SessionDep, actor: HoldManager, hold_id: uuid.UUID) -> LegalHoldPublic:
    return holds.get_hold(session, actor=actor, hold_id=hold_id)
