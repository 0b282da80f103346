"""Restriction of processing: the privacy notice's "restriction of use" on one recording.

Why a row and not a lifecycle status: a restriction limits *use*, never deletion, so retention,
erasure and legal holds keep running on a restricted recording exactly as before, and the
lifecycle's state machine (which those own) is untouched. What it limits is access, decided in
one place (:func:`vault.models.restriction_allows`, applied by the access checks):

- no new access request, and no approval of a pending one (409 ``recording-restricted``);
- every running grant covering it is revoked (audited, with the restriction's reason), and a
  stream still running stops at its next re-check (the streaming bound), because the re-check
  itself refuses non-break-glass grants on a restricted recording whatever issued them;
- security break-glass stays possible, flagged (``restricted: true`` on the grant, in its audit
  event and in its after-review).

Concurrency: placing locks the recording row and its purpose rows ``FOR UPDATE``; the access
checks take the purpose rows ``FOR SHARE`` before they look for a restriction, so a request or
approval racing a placement either sees it or committed first (and its grant is then revoked
here). A partial unique index keeps one active restriction per recording.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlmodel import Session, col, select

from vault import audit, authz
from vault.access import requests as access
from vault.access.rules import check_reason
from vault.authz import Actor, Permission
from vault.errors import ConflictError
from vault.models import (
    Recording,
    RecordingPurpose,
    RecordingStatus,
    Restriction,
    RestrictionPublic,
)
from vault.tags import AuditAction

__all__ = ["lift_restriction", "place_restriction", "to_public"]

GONE = {RecordingStatus.disposing.value, RecordingStatus.disposed.value}


def _recording(
    session: Session, actor: Actor, recording_id: uuid.UUID, reason: str, now: datetime
) -> tuple[Recording, str]:
    """Authority, the reason, then the recording: locked, so placements and lifts of one
    recording serialise; out of scope answers 404 like a missing one."""
    authz.authorize(session, actor, Permission.restriction_manage, now=now)
    reason = check_reason(reason)
    rec = authz.get_visible(
        session, actor, Recording, recording_id, permission=Permission.restriction_manage,
        now=now, what="recording", lock=True,
    )  # fmt: skip
    return rec, reason


def _active(session: Session, recording_id: uuid.UUID) -> Restriction | None:
    stmt = (
        select(Restriction)
        .where(Restriction.recording_id == recording_id, col(Restriction.lifted_at).is_(None))
        .with_for_update()
    )
    return session.exec(stmt).first()


def to_public(row: Restriction, *, grants_revoked: int = 0) -> RestrictionPublic:
    return RestrictionPublic(
        id=row.id, recording_id=row.recording_id, reason=row.reason, placed_at=row.placed_at,
        lifted_at=row.lifted_at, lift_reason=row.lift_reason, grants_revoked=grants_revoked,
    )  # fmt: skip


def place_restriction(
    session: Session, *, actor: Actor, recording_id: uuid.UUID, reason: str, now: datetime
) -> RestrictionPublic:
    """Restrict the recording and end its running grants, in the caller's unit of work."""
    rec, reason = _recording(session, actor, recording_id, reason, now)
    if rec.status in GONE:
        raise ConflictError(f"recording {rec.id} is {rec.status}; there is nothing to restrict")
    # FOR UPDATE on the purposes: requests and approvals (FOR SHARE on them) wait for us.
    session.exec(
        select(RecordingPurpose).where(RecordingPurpose.recording_id == rec.id).with_for_update()
    ).all()
    if _active(session, rec.id) is not None:
        raise ConflictError(f"recording {rec.id} is already restricted")
    row = Restriction(
        recording_id=rec.id, tenant_id=rec.tenant_id, reason=reason,
        placed_by=actor.audit_name, placed_at=now,
    )  # fmt: skip
    session.add(row)
    session.flush()
    revoked = access.revoke_covering(
        session, actor=actor, recording_id=rec.id, reason=f"restriction of processing: {reason}",
        now=now,
    )  # fmt: skip
    audit.record(
        session, action=AuditAction.restriction_place, actor=actor.audit_name, now=now,
        tenant_id=rec.tenant_id, target=str(rec.id),
        details={"restriction_id": str(row.id), "reason": reason, "grants_revoked": revoked},
    )  # fmt: skip
    return to_public(row, grants_revoked=revoked)


def lift_restriction(
    session: Session, *, actor: Actor, recording_id: uuid.UUID, reason: str, now: datetime
) -> RestrictionPublic:
    """Lift the active restriction: new requests may be made again (revoked grants stay so)."""
    rec, reason = _recording(session, actor, recording_id, reason, now)
    row = _active(session, rec.id)
    if row is None:
        raise ConflictError(f"recording {rec.id} is not restricted")
    row.lifted_at, row.lifted_by, row.lift_reason = now, actor.audit_name, reason
    session.add(row)
    session.flush()
    audit.record(
        session, action=AuditAction.restriction_lift, actor=actor.audit_name, now=now,
        tenant_id=rec.tenant_id, target=str(rec.id),
        details={"restriction_id": str(row.id), "reason": reason,
                 "placed_at": audit.format_ts(row.placed_at)},
    )  # fmt: skip
    return to_public(row)
