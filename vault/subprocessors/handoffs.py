"""The ``transcription-handoffs`` job: the only way a recording reaches a sub-processor.

For every listed sub-processor, each original recording of an opted-in tenant on which the
sub-processor's purpose (``transcription``) is active, unrestricted and not under erasure, gets
one hand-off (:mod:`.rules`; a tenant whose hand-off would be an unauthorised transfer gets
none). Three steps, so that no transaction is open while media is re-encrypted:

1. **claim** (one transaction): the recording row locked ``FOR UPDATE SKIP LOCKED`` and a
   ``pending`` hand-off inserted (unique per recording and sub-processor, so two workers, or two
   runs, make one hand-off). A pending claim whose lease ran out (a crashed worker) is retaken;
   an export its predecessor may have made is revoked first.
2. **produce** (no transaction): :func:`vault.exports.produce` re-encrypts the media to the
   sub-processor's ``age`` key; the token is sealed to the same key (an age file only the
   sub-processor opens), so the vault never stores it readable.
3. **issue** (one transaction): the rules checked again under the hand-off's lock; if one no
   longer holds the export is revoked (``handoff.cancel``), else ``handoff.issue`` (and
   ``handoff.transfer`` with both regions when it crosses regions).

The same job ends a returned transcript's purpose once its parent's has ended early (the
transcript "expires with the parent's purpose"; a parent that simply expires takes it at the
same instant, as the transcript was given the parent's expiry).
"""

from __future__ import annotations

import base64
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from crypto.age import encrypt_stream, parse_recipient
from vault import audit, exports
from vault.authz import Actor
from vault.context import Context
from vault.errors import (
    DatabaseUnavailableError,
    KeyProviderUnavailableError,
    StorageError,
    VaultError,
)
from vault.leases import claim as claim_rows
from vault.models import (
    ExportKind,
    Handoff,
    HandoffStatus,
    Recording,
    RecordingPurpose,
    Subprocessor,
    Tenant,
)
from vault.retention.expiry import end_purposes
from vault.subprocessors import rules
from vault.tags import AuditAction
from vault.tenants import policy as tenant_policy

__all__ = [
    "HANDOFF_ACTOR", "HandoffRun", "follow_parents", "forget_expired_tokens", "revoke_open", "run",
    "seal_token",
]  # fmt: skip

log = logging.getLogger(__name__)

HANDOFF_ACTOR = Actor.operator("transcription-handoffs")
LEASE = timedelta(minutes=15)  # a pending claim older than this belongs to a dead worker
S = HandoffStatus


@dataclass
class HandoffRun:
    issued: int = 0
    failed: int = 0
    cancelled: int = 0
    transfer_refused: int = 0  # (tenant, sub-processor) pairs held back: transfer not listed
    transcripts_ended: int = 0
    tokens_forgotten: int = 0


@dataclass(frozen=True, slots=True)
class _Claimed:
    handoff_id: uuid.UUID
    recording_id: uuid.UUID
    subprocessor_id: uuid.UUID
    age_recipient: str


def run(ctx: Context, *, now: datetime, limit: int = 10) -> HandoffRun:
    """One pass: transcripts follow their parents, then up to ``limit`` hand-offs."""
    out = HandoffRun(transcripts_ended=follow_parents(ctx, now=now),
                     tokens_forgotten=forget_expired_tokens(ctx, now=now))  # fmt: skip
    with ctx.db.reading() as session:
        out.transfer_refused = sum(len(_tenants(session, sp)[1]) for sp in _listed(session))
    for _ in range(limit):
        with ctx.db.transaction() as session:
            claimed = _claim(session, now)
        if claimed is None:
            break
        status = _issue(ctx, claimed, now)
        out.issued += status == S.issued
        out.failed += status == S.failed
        out.cancelled += status == S.cancelled
    return out


# --- 1. claim -------------------------------------------------------------------------------------


def _listed(session: Session) -> list[Subprocessor]:
    return list(session.exec(
        select(Subprocessor).where(col(Subprocessor.removed_at).is_(None))
        .order_by(col(Subprocessor.added_at), col(Subprocessor.id))
    ).all())  # fmt: skip


def _claim(session: Session, now: datetime) -> _Claimed | None:
    stale = session.exec(
        claim_rows(session, select(Handoff).where(
            Handoff.status == S.pending.value, col(Handoff.lease_until) <= now
        ).order_by(col(Handoff.created_at)).limit(1))
    ).first()  # fmt: skip
    if stale is not None:
        # Its worker died, perhaps after producing: that export's token is lost with it.
        exports.revoke(session, subject_id=stale.id, reason="handoff-retaken",
                       actor=HANDOFF_ACTOR.audit_name, now=now)  # fmt: skip
        sp = session.get(Subprocessor, stale.subprocessor_id)
        assert sp is not None
        why = rules.refusal(session, stale, sp, now)
        if why is None:
            stale.lease_until = now + LEASE
            session.add(stale)
            return _Claimed(stale.id, stale.recording_id, sp.id, sp.age_recipient)
        _finish(session, stale, S.cancelled, AuditAction.handoff_cancel, why, now)
    for sp in _listed(session):
        tenants, _ = _tenants(session, sp)
        if not tenants:
            continue
        done = sa.exists().where(
            Handoff.recording_id == Recording.id, Handoff.subprocessor_id == sp.id
        )
        rec = session.exec(
            claim_rows(session, select(Recording)
                .join(Tenant, col(Tenant.id) == col(Recording.tenant_id))
                .where(col(Recording.tenant_id).in_(tenants), *rules.eligible(sp.purpose, now),
                       ~done)
                .order_by(col(Recording.ingested_at), col(Recording.id)).limit(1),
                of=Recording)
        ).first()  # fmt: skip
        if rec is None:
            continue
        tenant = session.get(Tenant, rec.tenant_id)
        assert tenant is not None
        transfer = rules.transfer_for(session, tenant, sp)
        row = Handoff(
            subprocessor_id=sp.id, recording_id=rec.id, tenant_id=rec.tenant_id,
            status=S.pending.value, created_at=now, lease_until=now + LEASE,
            **({"source_region": transfer.source, "destination_region": transfer.destination,
                "transfer_mechanism": transfer.permission.mechanism if transfer.permission
                else None} if transfer.crosses else {}),
        )  # fmt: skip
        session.add(row)
        session.flush()
        return _Claimed(row.id, rec.id, sp.id, sp.age_recipient)
    return None


def _tenants(session: Session, sp: Subprocessor) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """The opted-in tenants whose hand-off to ``sp`` is no transfer or an authorised one, and
    those held back because it would be an unauthorised transfer."""
    opted = tenant_policy.opted_in_tenants(session, sp.name)
    if not opted:
        return [], []
    rows = session.exec(select(Tenant).where(col(Tenant.id).in_(opted))).all()
    allowed, refused = [], []
    for t in sorted(rows, key=lambda t: str(t.id)):
        (allowed if rules.transfer_for(session, t, sp).allowed else refused).append(t.id)
    return allowed, refused


# --- 2. produce, 3. issue -------------------------------------------------------------------------


def seal_token(token: str, age_recipient: str) -> str:
    """The token as an age file to the sub-processor's key (base64): only it can read it."""
    sealed = b"".join(encrypt_stream([token.encode("ascii")], parse_recipient(age_recipient)))
    return base64.b64encode(sealed).decode("ascii")


def _issue(ctx: Context, claimed: _Claimed, now: datetime) -> HandoffStatus:
    expires_at = now + timedelta(minutes=ctx.settings.handoff_minutes)
    try:
        produced = exports.produce(
            ctx, kind=ExportKind.handoff, subject_id=claimed.handoff_id,
            recording_id=claimed.recording_id, recipient=parse_recipient(claimed.age_recipient),
            expires_at=expires_at, now=now, actor=HANDOFF_ACTOR.audit_name,
        )  # fmt: skip
    except VaultError as exc:
        log.warning("hand-off %s: the export failed (%s)", claimed.handoff_id, exc.code)
        if isinstance(exc, StorageError | KeyProviderUnavailableError | DatabaseUnavailableError):
            return S.failed  # passing: the claim stays pending and is retaken after its lease
        with ctx.db.transaction() as session:
            row = _locked(session, claimed.handoff_id)
            if row is not None and row.status == S.pending:
                _finish(session, row, S.failed, AuditAction.handoff_fail, exc.code, now)
        return S.failed
    sealed = seal_token(produced.token, claimed.age_recipient)
    with ctx.db.transaction() as session:
        row = _locked(session, claimed.handoff_id)
        sp = session.get(Subprocessor, claimed.subprocessor_id)
        assert sp is not None
        why = "retaken" if row is None or row.status != S.pending else rules.refusal(
            session, row, sp, now
        )  # fmt: skip
        if why is not None:
            exports.revoke(session, export_ids=[produced.export_id], reason=f"handoff-{why}",
                           actor=HANDOFF_ACTOR.audit_name, now=now)  # fmt: skip
            if row is not None and row.status == S.pending:
                _finish(session, row, S.cancelled, AuditAction.handoff_cancel, why, now)
            return S.cancelled
        assert row is not None
        row.status, row.export_id, row.sealed_token = S.issued.value, produced.export_id, sealed
        row.issued_at, row.expires_at, row.lease_until = now, expires_at, None
        session.add(row)
        details = {
            "handoff_id": str(row.id),
            "subprocessor_id": str(sp.id),
            "export_id": str(produced.export_id),
            "bytes": produced.size,
            "export_sha256": produced.sha256,
            "expires_at": audit.format_ts(expires_at),
            "recipient_fingerprint": parse_recipient(sp.age_recipient).fingerprint,
        }
        _event(session, row, AuditAction.handoff_issue, details, now)
        transfer = rules.transfer_for(session, _tenant(session, row), sp)
        if transfer.crosses:
            _event(session, row, AuditAction.handoff_transfer,
                   {"handoff_id": str(row.id), **transfer.audit_details()}, now)  # fmt: skip
    return S.issued


def _locked(session: Session, handoff_id: uuid.UUID) -> Handoff | None:
    return session.get(Handoff, handoff_id, with_for_update=True, populate_existing=True)


def _tenant(session: Session, row: Handoff) -> Tenant:
    tenant = session.get(Tenant, row.tenant_id)
    assert tenant is not None
    return tenant


def _event(
    session: Session, row: Handoff, action: AuditAction, details: dict[str, object], now: datetime
) -> None:
    audit.record(
        session, action=action, actor=HANDOFF_ACTOR.audit_name, now=now, tenant_id=row.tenant_id,
        target=str(row.recording_id), details=details,
    )  # fmt: skip


def _finish(
    session: Session, row: Handoff, status: HandoffStatus, action: AuditAction, why: str,
    now: datetime,
) -> None:  # fmt: skip
    row.status, row.failure, row.lease_until = status.value, why[:64], None
    session.add(row)
    _event(session, row, action, {"handoff_id": str(row.id), "reason": why}, now)


# --- revocation, and transcripts that follow their parent -----------------------------------------


def revoke_open(session: Session, *, subprocessor_id: uuid.UUID, reason: str, now: datetime) -> int:
    """Revoke every open hand-off of a sub-processor (its removal): exports withdrawn, sealed
    tokens forgotten; pending claims are cancelled when they come to be issued."""
    rows = session.exec(
        select(Handoff).where(
            Handoff.subprocessor_id == subprocessor_id, Handoff.status == S.issued.value
        ).with_for_update()
    ).all()  # fmt: skip
    revoked = 0
    for row in rows:
        revoked += exports.revoke(session, subject_id=row.id, reason=reason,
                                  actor=HANDOFF_ACTOR.audit_name, now=now)  # fmt: skip
        row.sealed_token = None
        session.add(row)
    return revoked


def forget_expired_tokens(ctx: Context, *, now: datetime, batch: int = 500) -> int:
    """Drop the sealed token of hand-offs that expired unclaimed: it opens nothing any more,
    and the vault keeps no credential it does not need."""
    with ctx.db.transaction() as session:
        rows = session.exec(
            claim_rows(session, select(Handoff).where(
                col(Handoff.sealed_token).is_not(None), col(Handoff.expires_at) <= now
            ).order_by(col(Handoff.expires_at)).limit(batch))
        ).all()  # fmt: skip
        for row in rows:
            row.sealed_token = None
            session.add(row)
            _event(session, row, AuditAction.handoff_forget, {"handoff_id": str(row.id)},
                   now)  # fmt: skip
    return len(rows)


def follow_parents(ctx: Context, *, now: datetime, batch: int = 500) -> int:
    """End a transcript's purpose whose parent's same purpose is no longer active."""
    child, parent = aliased(RecordingPurpose), aliased(RecordingPurpose)
    parent_active = sa.exists().where(
        parent.recording_id == Handoff.recording_id, parent.purpose == child.purpose,
        parent.active_at(now),
    )  # fmt: skip
    with ctx.db.transaction() as session:
        rows = session.exec(
            claim_rows(session, select(child, Recording.tenant_id)
                .join(Handoff, col(Handoff.transcript_id) == child.recording_id)
                .join(Recording, col(Recording.id) == child.recording_id)
                .where(child.active_at(now), ~parent_active)
                .order_by(child.recording_id).limit(batch), of=child)
        ).all()  # fmt: skip
        end_purposes(
            session, rows, action=AuditAction.recording_purpose_end,
            actor=HANDOFF_ACTOR.audit_name, now=now, reason="the parent's purpose ended",
            details=lambda _p: {"reason": "the parent's purpose ended"},
        )  # fmt: skip
    return len(rows)
