"""/v1/subject-access and /v1/recordings/{id}/restriction (privacy)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter

from vault.api.deps import CtxDep, CurrentActor, SessionDep
from vault.models import RestrictionCreate, RestrictionPublic, SubjectAccessCreate
from vault.privacy import restriction
from vault.privacy.subject_access import subject_access

router = APIRouter(tags=["privacy"])


@router.post("/v1/subject-access")
def answer_subject_access(
    ctx: CtxDep, session: SessionDep, actor: CurrentActor, body: SubjectAccessCreate
) -> dict[str, Any]:
    return subject_access(
        session, actor=actor, tenant=body.tenant, call_ids=body.call_ids,
        request_id=uuid.uuid4(), now=ctx.now(),
    )  # fmt: skip


@router.post("/v1/recordings/{recording_id}/restriction", status_code=201,
             response_model=RestrictionPublic)  # fmt: skip
def place_restriction(
    ctx: CtxDep,
    session: SessionDep,
    actor: CurrentActor,
    recording_id: uuid.UUID,
    body: RestrictionCreate,
) -> RestrictionPublic:
    return restriction.place_restriction(
        session, actor=actor, recording_id=recording_id, reason=body.reason, now=ctx.now()
    )


@router.post("/v1/recordings/{recording_id}/restriction/lift", response_model=RestrictionPublic)
def lift_restriction(
    ctx: CtxDep,
    session: SessionDep,
    actor: CurrentActor,
    recording_id: uuid.UUID,
    body: RestrictionCreate,
) -> RestrictionPublic:
    return restriction.lift_restriction(
        session, actor=actor, recording_id=recording_id, reason=body.reason, now=ctx.now()
    )
