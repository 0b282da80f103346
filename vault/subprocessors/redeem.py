"""The sub-processor's side of a hand-off: its list, the token once, the download, the transcript.

Every call is :func:`vault.authz.authorize` with ``handoff:redeem`` over the hand-off, whose
holder is its sub-processor: another sub-processor's key (or anyone else's) is told there is no
such hand-off, and the denial is audited. The token is never in a URL: the claim answers it once,
sealed to the sub-processor's ``age`` key, and the download takes it in ``X-Handoff-Token``.

Before a download or a transcript, the rules (:mod:`.rules`) are checked again: a hand-off whose
recording is now restricted, whose purpose ended, whose tenant opted out (or whose transfer is no
longer listed) is withdrawn there and then (its export revoked, ``handoff.withdraw``, 410).

The transcript comes back as an encrypted derivative of the recording (``parent_id``), stored
through ingest by the system (the sub-processor cannot ingest anything else), whose only purpose
is the sub-processor's and which expires with the parent's: the parent's expiry at the time, and
the job ends it early if the parent's purpose ends early. Erasure of the parent covers it, as it
covers every derivative.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from vault import audit, authz, exports
from vault.audit.chain import optional_ts
from vault.authz import Actor, Permission
from vault.context import Context
from vault.errors import HandoffStateError, HandoffWithdrawnError, NotFoundError
from vault.models import (
    Export,
    ExportPublic,
    Handoff,
    HandoffClaim,
    HandoffPublic,
    HandoffStatus,
    Recording,
    RecordingPurpose,
    Subprocessor,
    Tenant,
)
from vault.recordings.ingest import Derivation, ingest
from vault.subprocessors import rules
from vault.tags import AuditAction

__all__ = [
    "TRANSCRIBER", "claim_token", "list_own", "open_download", "store_transcript",
    "subject_access_section",
]  # fmt: skip

# Stores the transcript: the sub-processor's own key holds no ingest right, so the system ingests
# on its behalf, once everything about the hand-off has been checked here.
TRANSCRIBER = Actor.operator("transcription")


def _state(row: Handoff, export: ExportPublic | None, now: datetime) -> str:
    if row.status != HandoffStatus.issued or export is None:
        return row.status
    if export.completed_at is not None:
        return "completed"
    if export.revoked_at is not None or export.deleted_at is not None:
        return "revoked"
    return "expired" if export.expires_at <= now else "open"


def _export(session: Session, row: Handoff) -> ExportPublic | None:
    found = session.get(Export, row.export_id) if row.export_id is not None else None
    return ExportPublic.model_validate(found, from_attributes=True) if found else None


def to_public(session: Session, row: Handoff, sp: Subprocessor, now: datetime) -> HandoffPublic:
    export = _export(session, row)
    return HandoffPublic(
        id=row.id, subprocessor=sp.name, recording_id=row.recording_id,
        state=_state(row, export, now), issued_at=row.issued_at, expires_at=row.expires_at,
        token_claimed=row.claimed_at is not None, size=export.size if export else None,
        sha256=export.sha256 if export else None, transcript_id=row.transcript_id,
    )  # fmt: skip


def subject_access_section(
    session: Session, recording_ids: Sequence[uuid.UUID], now: datetime
) -> list[dict[str, Any]]:
    """The hand-offs that made any of ``recording_ids`` available to a sub-processor, for subject
    access: only issued ones (a pending, failed or cancelled hand-off gave it nothing). The
    sub-processor as the public list shows it (name, purpose, region), when and until when,
    whether it downloaded the media, and the transfer if the hand-off crossed regions."""
    if not recording_ids:
        return []
    rows = session.exec(
        select(Handoff, Subprocessor)
        .join(Subprocessor, col(Subprocessor.id) == col(Handoff.subprocessor_id))
        .where(
            col(Handoff.recording_id).in_(list(recording_ids)),
            Handoff.status == HandoffStatus.issued.value,
        )
        .order_by(col(Handoff.issued_at), col(Handoff.id))
    ).all()
    out = []
    for row, sp in rows:
        export = _export(session, row)
        crossed = row.destination_region is not None
        out.append(
            {"handoff_id": str(row.id), "recording_id": str(row.recording_id),
             "subprocessor": sp.name, "purpose": sp.purpose, "region": sp.region,
             "issued_at": optional_ts(row.issued_at), "expires_at": optional_ts(row.expires_at),
             "state": _state(row, export, now),
             "downloaded_at": optional_ts(export.completed_at) if export else None,
             "transfer": {"from": row.source_region, "to": row.destination_region,
                          "mechanism": row.transfer_mechanism} if crossed else None}
        )  # fmt: skip
    return out


def list_own(session: Session, *, actor: Actor, now: datetime) -> list[HandoffPublic]:
    """The caller's issued hand-offs, newest first (a sub-processor sees only its own)."""
    authz.authorize(session, actor, Permission.handoff_redeem, now=now)
    if actor.subprocessor_id is None:
        return []
    sp = session.get(Subprocessor, actor.subprocessor_id)
    assert sp is not None
    rows = session.exec(
        select(Handoff)
        .where(Handoff.subprocessor_id == sp.id, Handoff.status == HandoffStatus.issued.value)
        .order_by(col(Handoff.issued_at).desc(), col(Handoff.id))
    ).all()
    return [to_public(session, r, sp, now) for r in rows]


def _own(
    session: Session, actor: Actor, handoff_id: uuid.UUID, now: datetime, *, lock: bool = False
) -> tuple[Handoff, Subprocessor]:
    authz.authorize(session, actor, Permission.handoff_redeem, now=now)
    row = session.get(Handoff, handoff_id, with_for_update=lock or None)
    if row is None:
        raise NotFoundError(f"no hand-off {handoff_id}")
    authz.authorize(
        session, actor, Permission.handoff_redeem,
        authz.objects([], row.id, holder_id=row.subprocessor_id), now=now,
    )  # fmt: skip
    if row.status != HandoffStatus.issued:
        raise NotFoundError(f"no hand-off {handoff_id}")  # not (yet) made available
    sp = session.get(Subprocessor, row.subprocessor_id)
    assert sp is not None
    return row, sp


def claim_token(
    session: Session, *, actor: Actor, handoff_id: uuid.UUID, now: datetime
) -> HandoffClaim:
    """The token, once, sealed to the sub-processor's age key; then forgotten."""
    row, _ = _own(session, actor, handoff_id, now, lock=True)
    if row.sealed_token is None:
        raise HandoffStateError("the token of this hand-off was already claimed (or revoked)")
    export = _export(session, row)
    assert export is not None and row.expires_at is not None
    out = HandoffClaim(id=row.id, sealed_token=row.sealed_token, expires_at=row.expires_at,
                       size=export.size, sha256=export.sha256)  # fmt: skip
    row.sealed_token, row.claimed_at = None, now
    session.add(row)
    audit.record(
        session, action=AuditAction.handoff_claim, actor=actor.audit_name, now=now,
        tenant_id=row.tenant_id, target=str(row.recording_id),
        details={"handoff_id": str(row.id), "export_id": str(row.export_id)},
    )  # fmt: skip
    return out


def _check_rules(ctx: Context, row: Handoff, sp: Subprocessor, actor: Actor, now: datetime) -> None:
    """Withdraw (and raise 410) if a rule no longer allows the hand-off."""
    with ctx.db.reading() as session:
        why = rules.refusal(session, row, sp, now)
    if why is None:
        return
    with ctx.db.transaction() as session:
        revoked = exports.revoke(session, subject_id=row.id, reason=f"handoff-{why}",
                                 actor=actor.audit_name, now=now)  # fmt: skip
        if revoked:
            audit.record(
                session, action=AuditAction.handoff_withdraw, actor=actor.audit_name, now=now,
                tenant_id=row.tenant_id, target=str(row.recording_id),
                details={"handoff_id": str(row.id), "reason": why},
            )  # fmt: skip
    raise HandoffWithdrawnError(f"the hand-off was withdrawn: {why}", reason=why)


def open_download(ctx: Context, *, actor: Actor, handoff_id: uuid.UUID, now: datetime) -> uuid.UUID:
    """The export to serve for this hand-off (its token is checked by the export)."""
    with ctx.db.reading() as session:
        row, sp = _own(session, actor, handoff_id, now)
        session.expunge_all()
    _check_rules(ctx, row, sp, actor, now)
    assert row.export_id is not None
    return row.export_id


def store_transcript(
    ctx: Context,
    *,
    actor: Actor,
    handoff_id: uuid.UUID,
    content_type: str,
    chunks: Iterable[bytes],
    max_bytes: int,
    now: datetime,
) -> HandoffPublic:
    """Store the transcript of a completed hand-off as a derivative of its recording (once)."""
    with ctx.db.reading() as session:
        row, sp = _own(session, actor, handoff_id, now)
        if row.transcript_id is not None:
            raise HandoffStateError("this hand-off's transcript was already stored")
        export = _export(session, row)
        if export is None or export.completed_at is None:
            raise HandoffStateError("the hand-off's media was not downloaded (completed) yet")
        tenant = session.get(Tenant, row.tenant_id)
        parent = session.get(Recording, row.recording_id)
        purpose = session.get(RecordingPurpose, (row.recording_id, sp.purpose))
        assert tenant is not None and parent is not None
        session.expunge_all()
    _check_rules(ctx, row, sp, actor, now)
    assert purpose is not None  # the rules found it active

    def record(session: Session, derivative_id: uuid.UUID) -> None:
        # Under the hand-off's lock, in the transaction that stores the derivative: one
        # transcript per hand-off, and only while the rules still hold.
        locked = session.get(Handoff, handoff_id, with_for_update=True, populate_existing=True)
        assert locked is not None
        if locked.transcript_id is not None:
            raise HandoffStateError("this hand-off's transcript was already stored")
        why = rules.refusal(session, locked, sp, now)
        if why is not None:
            raise HandoffWithdrawnError(f"the hand-off was withdrawn: {why}", reason=why)
        locked.transcript_id = derivative_id
        session.add(locked)
        audit.record(
            session, action=AuditAction.handoff_transcript, actor=actor.audit_name, now=now,
            tenant_id=locked.tenant_id, target=str(locked.recording_id),
            details={"handoff_id": str(locked.id), "derivative_id": str(derivative_id)},
        )  # fmt: skip

    ingest(
        ctx, actor=TRANSCRIBER, tenant=tenant.name, purposes=[sp.purpose],
        call_id=None,  # a derivative never names the call: only its lineage does
        recorded_at=parent.recorded_at, content_type=content_type, chunks=chunks,
        max_bytes=max_bytes,
        derivation=Derivation(parent_id=parent.id, expires={sp.purpose: purpose.expires_at},
                              record=record),
    )  # fmt: skip
    with ctx.db.reading() as session:
        stored = session.get(Handoff, handoff_id)
        assert stored is not None
        return to_public(session, stored, sp, now)
