"""/v1/legal-holds: place, release and list legal holds (privacy, security)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from vault.api.deps import CtxDep, CurrentActor, ReadSessionDep, SessionDep
from vault.models import LegalHoldCreate, LegalHoldPublic, LegalHoldRelease
from vault.retention import holds

router = APIRouter(prefix="/v1/legal-holds", tags=["legal-holds"])


@router.post("", status_code=201, response_model=LegalHoldPublic)
def create_hold(
    ctx: CtxDep, session: SessionDep, actor: CurrentActor, body: LegalHoldCreate
) -> LegalHoldPublic:
    hold = holds.create_hold(
        session, actor=actor, store=ctx.store_for, case_ref=body.case_ref, reason=body.reason,
        recording_ids=body.recording_ids, tenant=body.tenant, call_id=body.call_id,
        recorded_from=body.recorded_from, recorded_to=body.recorded_to, now=ctx.now(),
    )  # fmt: skip
    return holds.to_public(session, hold)


@router.post("/{hold_id}/release", response_model=LegalHoldPublic)
def release_hold(
    ctx: CtxDep,
    session: SessionDep,
    actor: CurrentActor,
    hold_id: uuid.UUID,
    body: LegalHoldRelease,
) -> LegalHoldPublic:
    hold = holds.release_hold(
        session,
        actor=actor,
        store=ctx.store_for,
        hold_id=hold_id,
        reason=body.reason,
        now=ctx.now(),
    )
    return holds.to_public(session, hold)


@router.get("", response_model=list[LegalHoldPublic])
def list_holds(
    ctx: CtxDep, session: ReadSessionDep, actor: CurrentActor, active: bool | None = None
) -> list[LegalHoldPublic]:
    return holds.list_holds(session, actor=actor, active=active, now=ctx.now())


@router.get("/{hold_id}", response_model=LegalHoldPublic)
def get_hold(
    ctx: CtxDep, session: ReadSessionDep, actor: CurrentActor, hold_id: uuid.UUID
) -> LegalHoldPublic:
    return holds.get_hold(session, actor=actor, hold_id=hold_id, now=ctx.now())
