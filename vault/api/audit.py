"""/v1/audit: the event chain, its signed checkpoints and their verification (auditor, security).

Reads go through :mod:`vault.audit.reads` (authorization and the scope filter)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from vault.api.deps import CtxDep, CurrentActor, ReadSessionDep
from vault.audit import reads
from vault.models import AuditCheckpointPublic, AuditEventPublic
from vault.validation import BIGINT_MAX

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", response_model=list[AuditEventPublic])
def list_events(
    ctx: CtxDep,
    session: ReadSessionDep,
    actor: CurrentActor,
    after_seq: Annotated[int, Query(ge=0, le=BIGINT_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEventPublic]:
    return reads.list_events(
        session, actor=actor, after_seq=after_seq, limit=limit, now=ctx.now()
    )


@router.get("/checkpoints", response_model=list[AuditCheckpointPublic])
def list_checkpoints(
    ctx: CtxDep,
    session: ReadSessionDep,
    actor: CurrentActor,
    after_id: Annotated[int, Query(ge=0, le=BIGINT_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditCheckpointPublic]:
    return reads.list_checkpoints(
        session, actor=actor, after_id=after_id, limit=limit, now=ctx.now()
    )


@router.get("/verify")
def verify(ctx: CtxDep, session: ReadSessionDep, actor: CurrentActor) -> dict[str, Any]:
    return reads.verify(ctx, session, actor=actor, now=ctx.now())
