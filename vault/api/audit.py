"""/v1/audit: the event chain, its signed checkpoints and their verification (auditor, security)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from vault import audit
from vault.api.deps import CtxDep, ReadSessionDep, require
from vault.audit import checkpoints
from vault.authz import Actor, Permission
from vault.models import AuditCheckpointPublic, AuditEventPublic

router = APIRouter(prefix="/v1/audit", tags=["audit"])

AuditReader = Annotated[Actor, Depends(require(Permission.audit_read))]


@router.get("", response_model=list[AuditEventPublic])
def list_events(
    session: ReadSessionDep,
    _: AuditReader,
    after_seq: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEventPublic]:
    return [
        audit.to_public(ev) for ev in audit.list_events(session, after_seq=after_seq, limit=limit)
    ]


@router.get("/checkpoints", response_model=list[AuditCheckpointPublic])
def list_checkpoints(
    session: ReadSessionDep,
    _: AuditReader,
    after_id: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditCheckpointPublic]:
    return checkpoints.list_checkpoints(session, limit=limit, after_id=after_id)


@router.get("/verify")
def verify(ctx: CtxDep, session: ReadSessionDep, _: AuditReader) -> dict[str, Any]:
    # The trusted key comes from config or the provider, never from the DB or the exports.
    result = checkpoints.verify_all(session, public_key=checkpoints.trusted_public_key(ctx))
    chain = result.chain
    return {
        "ok": result.ok,
        "checked": chain.checked,
        "head_seq": chain.head_seq,
        "head_hash": chain.head_hash,
        "first_bad_seq": result.first_bad_seq,
        "reason": result.reason,
        "checkpoint_id": result.checkpoint_id,
        "checkpoints_checked": result.checkpoints_checked,
        "latest_checkpoint_seq": result.latest_checkpoint_seq,
    }
