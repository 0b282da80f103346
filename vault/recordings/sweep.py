"""The orphan sweeper: reclaim what failed or crashed ingests and disposals left behind."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault import audit
from vault.context import Context
from vault.leases import claim
from vault.models import Recording, RecordingStatus
from vault.storage import StorageError, StorageUnavailableError
from vault.tags import AuditAction

__all__ = ["SWEEP_ACTOR", "sweep_orphans"]

log = logging.getLogger(__name__)

S = RecordingStatus
SWEEP_ACTOR = "system:sweep-orphans"
SWEEP_BATCH = 500


# --- the orphan sweeper ---------------------------------------------------------------------------


def sweep_orphans(
    ctx: Context, *, older_than: timedelta, now: datetime, batch: int = SWEEP_BATCH
) -> int:
    """Reclaim what failed or crashed ingests and disposals left behind; idempotent.

    1. ``pending`` rows not touched for ``older_than``: CAS to ``failed`` and destroy the wrapped
       DEK first, so an upload still running loses its own pending -> stored CAS and cleans up.
    2. ``failed`` rows whose objects were not yet removed (``disposed_at`` NULL): remove every
       object version, then stamp ``disposed_at``.
    3. ``disposing`` rows whose DEK is already destroyed (a crash mid-disposal), not touched for
       ``older_than``: remove every object version, then mark them ``disposed``.

    Returns the number of rows acted on.
    """
    cutoff = now - older_than
    acted: set[uuid.UUID] = set()

    with ctx.db.transaction() as session:
        stale = session.exec(
            claim(
                session,
                select(Recording)
                .where(Recording.status == S.pending, col(Recording.updated_at) < cutoff)
                .order_by(col(Recording.updated_at))
                .limit(batch),
            )
        ).all()
        for rec in stale:
            done = session.exec(
                sa.update(Recording)
                .where(Recording.id == rec.id, Recording.status == S.pending)  # type: ignore[arg-type]
                .values(status=S.failed, wrapped_dek=None, dek_destroyed_at=now, updated_at=now)
            )
            if done.rowcount == 1:
                acted.add(rec.id)
                _audit_sweep(session, rec, now, {"from": "pending", "to": "failed"})

    failed = [Recording.status == S.failed, col(Recording.disposed_at).is_(None)]
    disposing = [
        Recording.status == S.disposing,
        col(Recording.wrapped_dek).is_(None),
        col(Recording.updated_at) < cutoff,
    ]
    for conditions, finish in ((failed, _finish_failed), (disposing, _finish_disposing)):
        with ctx.db.session() as session:
            ids = session.exec(
                select(Recording.id)
                .where(*conditions)
                .order_by(col(Recording.updated_at))
                .limit(batch)
            ).all()
        for rid in ids:
            try:
                if _remove_objects(ctx, rid, conditions, finish, now):
                    acted.add(rid)
            except StorageUnavailableError:
                log.warning("sweep: object store unavailable; retrying next run", exc_info=True)
                return len(acted)
            except StorageError:  # e.g. Object Lock on a version: leave it, retry next run
                log.warning("sweep: could not remove the objects of %s", rid, exc_info=True)
    return len(acted)


_Finish = Callable[[Session, Recording, datetime, int], None]


def _remove_objects(
    ctx: Context, rid: uuid.UUID, conditions: list[Any], finish: _Finish, now: datetime
) -> bool:
    # One row per transaction, its lock held while its objects are deleted, so two sweepers
    # never work on the same row; the row changes only after the objects are gone.
    with ctx.db.transaction() as session:
        query = select(Recording).where(Recording.id == rid, *conditions)
        rec = session.exec(claim(session, query)).first()
        if rec is None:
            return False  # changed or claimed by someone else since the listing
        removed = ctx.store.delete_all_versions(rec.object_key)
        finish(session, rec, now, removed)
        return True


def _finish_failed(session: Session, rec: Recording, now: datetime, removed: int) -> None:
    rec.wrapped_dek = None
    rec.disposed_at = now  # on a failed row: its objects are gone
    rec.updated_at = now
    session.add(rec)
    _audit_sweep(session, rec, now, {"status": "failed", "objects_removed": removed})


def _finish_disposing(session: Session, rec: Recording, now: datetime, removed: int) -> None:
    rec.status = S.disposed
    rec.disposed_at = rec.disposed_at or now
    rec.updated_at = now
    # The tombstone keeps nothing that identifies the call or the media.
    rec.call_id = None
    rec.sha256 = None
    session.add(rec)
    _audit_sweep(
        session,
        rec,
        now,
        {
            "from": "disposing",
            "to": "disposed",
            "objects_removed": removed,
            "ciphertext_sha256": rec.ciphertext_sha256,
        },
    )


def _audit_sweep(session: Session, rec: Recording, now: datetime, details: dict[str, Any]) -> None:
    audit.record(
        session,
        action=AuditAction.recording_sweep,
        actor=SWEEP_ACTOR,
        now=now,
        tenant_id=rec.tenant_id,
        target=str(rec.id),
        details=details,
    )
