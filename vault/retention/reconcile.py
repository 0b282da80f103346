"""``restore reconcile``: re-apply every erasure and disposal after a restore from a backup.

A database restored from a backup older than some erasures and disposals has those recordings
back as live rows, with their call ids and (while the KEK that wrapped it is not yet retired)
a usable wrapped DEK. The signed records in the store (:mod:`vault.retention.records`) say what
happened since. :func:`reconcile`:

1. (no transaction) lists every version of every record in the store and verifies each one under
   the trusted audit key (pinned or the provider's, never a copy from the store or the DB). A
   record that is unsigned, tampered with, or of the wrong type is reported and not applied;
2. (one transaction per batch) for each recording a verified record names that is still live:
   ends its active purposes, moves it ``stored|integrity_failed -> disposing`` through the
   lifecycle (which destroys the wrapped DEK and clears the call id and plaintext hash),
   clears the same fields on failed rows, and completes a still-open erasure request with its
   signed receipt (clearing its call id). One ``restore.reconcile`` event names the records
   applied and the counts; the lifecycle's own events name each recording (opaque ids only);
3. (no transaction) finishes the disposal (:func:`vault.retention.disposal.finish`: every object
   version removed, ``disposing -> disposed``).

Idempotent: a second run finds nothing live to change and writes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault import audit, lifecycle
from vault.audit import signed_rows, signing
from vault.context import Context
from vault.models import ErasureRequest, ErasureStatus, Recording, RecordingPurpose, RecordingStatus
from vault.retention import disposal, erasure, records
from vault.retention.expiry import end_purposes
from vault.tags import AuditAction

__all__ = ["RECONCILE_ACTOR", "ReconcileResult", "reconcile"]

S = RecordingStatus
RECONCILE_ACTOR = "system:restore-reconcile"
REASON = "restore reconcile"
BATCH = 500
MAX_LISTED = 1000


@dataclass(frozen=True, slots=True)
class Record:
    """A verified record: what it is, its id, and per recording the disposal reason."""

    kind: str
    id: str
    recordings: dict[uuid.UUID, str]
    document: str
    signature: str

    @property
    def label(self) -> str:
        return f"{self.kind} {self.id}"


@dataclass(slots=True)
class ReconcileResult:
    verified: int = 0
    refused: list[str] = field(default_factory=list)  # "key@version: reason", for the operator
    recordings: int = 0  # recordings shredded, or whose erased fields were cleared, in this run
    requests: int = 0  # erasure requests completed from their receipt in this run

    @property
    def ok(self) -> bool:
        return not self.refused

    def summary(self) -> str:
        return (
            f"{self.verified} signed record(s) verified, {len(self.refused)} refused; "
            f"{self.recordings} recording(s) re-erased or re-disposed, "
            f"{self.requests} erasure request(s) completed from their receipts"
        )


def reconcile(ctx: Context, *, now: datetime) -> ReconcileResult:
    """Re-apply every verified record to the database; see the module's docstring."""
    public_key = signed_rows.trusted_public_key(ctx)
    found, refused = _load(ctx, public_key)
    result = ReconcileResult(verified=len(found), refused=refused)
    reasons: dict[uuid.UUID, tuple[str, Record]] = {}
    for record in found:
        for rid, reason in record.recordings.items():
            reasons.setdefault(rid, (reason, record))
    receipts = [r for r in found if r.kind == records.ERASURE]
    ids = sorted(reasons)
    to_finish: list[uuid.UUID] = []
    applied: set[str] = set()
    for start in range(0, max(len(ids), 1), BATCH):
        batch = ids[start : start + BATCH]
        last = start + BATCH >= len(ids)
        with ctx.db.transaction() as session:
            changed = _apply(session, batch, reasons, now, lock=ctx.db.is_postgres)
            done = _complete_requests(session, receipts) if last else []
            to_finish.extend(_disposing(session, batch))
            applied.update(reasons[rid][1].label for rid in changed)
            applied.update(r.label for r in done)
            result.recordings += len(changed)
            result.requests += len(done)
            if last and (applied or refused):
                audit.record(
                    session, action=AuditAction.restore_reconcile, actor=RECONCILE_ACTOR,
                    now=now, details={
                        "records_verified": result.verified, "records_refused": len(refused),
                        # Each recording's own event names its record; this list is bounded.
                        "records_applied": sorted(applied)[:MAX_LISTED],
                        "records_applied_total": len(applied), "recordings": result.recordings,
                        "erasure_requests": result.requests,
                    },
                )  # fmt: skip
    if to_finish:
        disposal.finish(ctx, now=now, only=to_finish, limit=len(to_finish))
        records.publish_pending(ctx, now=now)  # the re-disposal is a record of its own
    return result


# --- reading the store ----------------------------------------------------------------------------


def _load(ctx: Context, public_key: bytes) -> tuple[list[Record], list[str]]:
    found: dict[tuple[str, str], Record] = {}
    refused: list[str] = []
    for kind, prefix in records.PREFIXES.items():
        for key, version in ctx.store.list_versions(prefix):
            where = key if version is None else f"{key}@{version}"
            data = ctx.store.read_range(
                key, version_id=version, offset=0, length=records.MAX_RECORD_BYTES + 1
            )
            try:
                document, signature = records.parse_export(data)
                doc = records.verify_record(kind, public_key, document, signature)
                record = _record(kind, doc, document, signature)
            except signing.SignedDocumentError as exc:
                refused.append(f"{where}: {exc.reason}")
                continue
            except (ValueError, KeyError, TypeError) as exc:
                refused.append(f"{where}: {exc if isinstance(exc, ValueError) else 'malformed'}")
                continue
            found.setdefault((kind, record.id), record)  # versions of one record agree
    return sorted(found.values(), key=lambda r: (r.kind, r.id)), refused


def _record(kind: str, doc: dict[str, Any], document: str, signature: str) -> Record:
    if kind == records.ERASURE:
        record_id = str(uuid.UUID(doc["request_id"]))
        reason = f"erasure {record_id}"
        recs = {uuid.UUID(i["recording_id"]): reason for i in doc["items"]}
    else:
        record_id = str(uuid.UUID(doc["record_id"]))
        recs = {
            uuid.UUID(i["recording_id"]): str(i["disposal_reason"] or disposal.RETENTION_REASON)
            for i in doc["items"]
        }
    return Record(kind, record_id, recs, document, signature)


# --- applying -------------------------------------------------------------------------------------


def _apply(
    session: Session,
    batch: list[uuid.UUID],
    reasons: dict[uuid.UUID, tuple[str, Record]],
    now: datetime,
    *,
    lock: bool,
) -> list[uuid.UUID]:
    """Shred what is live in this batch; returns the recordings changed."""
    if not batch:
        return []
    leftover = sa.or_(
        col(Recording.status).in_([S.pending, S.stored, S.integrity_failed]),
        col(Recording.call_id).is_not(None),
        col(Recording.sha256).is_not(None),
        col(Recording.wrapped_dek).is_not(None),
    )
    query = select(Recording.id, Recording.status).where(col(Recording.id).in_(batch), leftover)
    if lock:
        query = query.with_for_update()  # every row lock before the audit lock
    live = dict(session.exec(query.order_by(col(Recording.id))).all())
    if not live:
        return []
    ending = session.exec(
        select(RecordingPurpose, Recording.tenant_id)
        .join(Recording, col(Recording.id) == col(RecordingPurpose.recording_id))
        .where(col(RecordingPurpose.recording_id).in_(list(live)), RecordingPurpose.active_at(now))
        .order_by(col(RecordingPurpose.recording_id), col(RecordingPurpose.purpose))
    ).all()

    def details(rid: uuid.UUID) -> dict[str, str]:
        return {"reason": REASON, "record": reasons[rid][1].label}

    end_purposes(
        session, ending, action=AuditAction.recording_purpose_end, actor=RECONCILE_ACTOR, now=now,
        reason=REASON, details=lambda p: details(p.recording_id),
    )  # fmt: skip
    _fail_pending(session, [rid for rid, st in live.items() if st == S.pending], details, now)
    shred = [rid for rid, st in live.items() if st in (S.stored, S.integrity_failed)]
    by_reason: dict[str, list[uuid.UUID]] = {}
    for rid in shred:
        by_reason.setdefault(reasons[rid][0], []).append(rid)
    for reason, group in sorted(by_reason.items()):
        lifecycle.transition_many(
            session, group, from_=(S.stored, S.integrity_failed), to=S.disposing,
            actor=RECONCILE_ACTOR, now=now, details=lambda m: details(m.id),
            values={"disposal_reason": reason},
        )  # fmt: skip
    # What no edge clears (failed rows, a crash's leftovers): the erased fields go all the same.
    session.execute(
        sa.update(Recording)
        .where(col(Recording.id).in_(list(live)), col(Recording.status) != S.pending)
        .values(call_id=None, sha256=None)
        .execution_options(synchronize_session=False)
    )
    return sorted(live)


def _fail_pending(session: Session, ids: list[uuid.UUID], details: Any, now: datetime) -> None:
    if ids:
        lifecycle.transition_many(
            session, ids, from_=S.pending, to=S.failed, actor=RECONCILE_ACTOR, now=now,
            details=lambda m: details(m.id),
        )  # fmt: skip


def _disposing(session: Session, batch: Iterable[uuid.UUID]) -> list[uuid.UUID]:
    return list(
        session.exec(
            select(Recording.id).where(
                col(Recording.id).in_(list(batch)), Recording.status == S.disposing
            )
        ).all()
    )


def _complete_requests(session: Session, receipts: list[Record]) -> list[Record]:
    """Complete the erasure requests the restored database still has open."""
    ids = [uuid.UUID(r.id) for r in receipts]
    if not ids:
        return []
    open_ids = set(
        session.exec(
            select(ErasureRequest.id).where(
                col(ErasureRequest.id).in_(ids), ErasureRequest.status != ErasureStatus.complete
            )
        ).all()
    )
    done = []
    for r in receipts:
        rid = uuid.UUID(r.id)
        if rid in open_ids and erasure.complete_from_receipt(
            session, request_id=rid, canonical=r.document, signature=r.signature
        ):
            done.append(r)
    return done
