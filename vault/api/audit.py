"""/v1/audit: the event chain and its verification (auditor, security)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from vault.api.deps import SessionDep, require
from vault.authz import Actor, Permission
from vault.models import AuditEventPublic
from vault.services import audit

router = APIRouter(prefix="/v1/audit", tags=["audit"])

AuditReader = Annotated[Actor, Depends(require(Permission.audit_read))]


@router.get("", response_model=list[AuditEventPublic])
def list_events(
    session: SessionDep,
    _: AuditReader,
    after_seq: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEventPublic]:
    return [
        audit.to_public(ev) for ev in audit.list_events(session, after_seq=after_seq, limit=limit)
    ]


@router.get("/verify")
def verify(session: SessionDep, _: AuditReader) -> dict[str, Any]:
    result = audit.verify(session)
    return {
        "ok": result.ok,
        "checked": result.checked,
        "head_seq": result.head_seq,
        "head_hash": result.head_hash,
        "first_bad_seq": result.first_bad_seq,
        "reason": result.reason,
    }
