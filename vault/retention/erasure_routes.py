"""/v1/erasure-requests: accept a deletion request (202 with ``due_at``), then show progress
and, once complete, the signed receipt; list them by due date (privacy)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from vault.api.deps import CtxDep, CurrentActor, ReadSessionDep, SessionDep
from vault.models import ErasureRequestCreate, ErasureRequestPublic, ErasureStatus
from vault.retention import erasure

router = APIRouter(prefix="/v1/erasure-requests", tags=["erasure"])


@router.post("", status_code=202, response_model=ErasureRequestPublic)
def create_request(
    ctx: CtxDep, session: SessionDep, actor: CurrentActor, body: ErasureRequestCreate
) -> ErasureRequestPublic:
    req = erasure.create_request(
        session, actor=actor, policy=ctx.policy, tenant=body.tenant, call_id=body.call_id,
        recording_ids=body.recording_ids, reason=body.reason, now=ctx.now(),
    )  # fmt: skip
    return erasure.to_public(session, req)


@router.get("", response_model=list[ErasureRequestPublic])
def list_requests(
    ctx: CtxDep, session: ReadSessionDep, actor: CurrentActor, status: ErasureStatus | None = None
) -> list[ErasureRequestPublic]:
    return erasure.list_requests(session, actor=actor, status=status, now=ctx.now())


@router.get("/{request_id}", response_model=ErasureRequestPublic)
def get_request(
    ctx: CtxDep, session: ReadSessionDep, actor: CurrentActor, request_id: uuid.UUID
) -> ErasureRequestPublic:
    return erasure.get_request(session, actor=actor, request_id=request_id, now=ctx.now())
