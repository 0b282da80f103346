"""/v1/recordings/{id}/redactions, /v1/redactions/{id} (privacy, admin) and
/v1/recordings/{id}/manifest (whoever may read the recording's metadata)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from vault.api.deps import CtxDep, CurrentActor, ReadSessionDep, SessionDep
from vault.models import ManifestPublic, RedactionCreate, RedactionPublic
from vault.redaction import queue, reads

router = APIRouter(tags=["redaction"])


@router.post(
    "/v1/recordings/{recording_id}/redactions", status_code=202, response_model=RedactionPublic
)
def request_redaction(
    ctx: CtxDep, session: SessionDep, actor: CurrentActor, recording_id: uuid.UUID,
    body: RedactionCreate,
) -> RedactionPublic:  # fmt: skip
    red = queue.request(
        session, actor=actor, policy=ctx.policy, recording_id=recording_id, profile=body.profile,
        purposes=body.purposes, now=ctx.now(),
    )  # fmt: skip
    return queue.to_public(red)


@router.get("/v1/redactions/{redaction_id}", response_model=RedactionPublic)
def get_redaction(
    ctx: CtxDep, session: ReadSessionDep, actor: CurrentActor, redaction_id: uuid.UUID
) -> RedactionPublic:
    return queue.to_public(
        queue.get(session, actor=actor, redaction_id=redaction_id, now=ctx.now())
    )


@router.get("/v1/recordings/{recording_id}/manifest", response_model=ManifestPublic)
def get_manifest(ctx: CtxDep, actor: CurrentActor, recording_id: uuid.UUID) -> ManifestPublic:
    return reads.manifest(ctx, actor=actor, recording_id=recording_id, now=ctx.now())
