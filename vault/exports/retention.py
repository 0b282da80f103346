"""When exports end: revocation (by the owning domain, or because their recording is being
disposed of), and the deletion of their objects (the ``purge-exports`` job, and disposal).

An export never outlives its recording: the disposal claim revokes its exports in the same
transaction that moves the recording to ``disposing`` (so no download can start afterwards), and
disposal's finish deletes their objects with the media. Everything else (expired, completed,
revoked) is deleted by the job within a job period. Deleting is idempotent (every version of the
key), and the row's ``deleted_at`` is set by compare-and-set, so two workers write one event.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault import audit
from vault.context import Context
from vault.errors import StorageError, StoreUnavailableError
from vault.models import Export
from vault.tags import AuditAction

__all__ = ["purge", "revoke", "revoke_for_recordings"]

log = logging.getLogger(__name__)
_BATCH = 100


def _open() -> sa.ColumnElement[bool]:
    return sa.and_(col(Export.revoked_at).is_(None), col(Export.deleted_at).is_(None))


def _revoke_where(
    session: Session, where: sa.ColumnElement[bool], *, reason: str, actor: str, now: datetime
) -> int:
    rows = session.exec(select(Export).where(where, _open())).all()
    for row in rows:
        row.revoked_at, row.revoke_reason = now, reason
        session.add(row)
        audit.record(
            session, action=AuditAction.export_revoke, actor=actor, now=now,
            tenant_id=row.tenant_id, target=str(row.id),
            details={"kind": row.kind, "subject": str(row.subject_id), "reason": reason},
        )  # fmt: skip
    return len(rows)


def revoke(
    session: Session,
    *,
    subject_id: uuid.UUID | None = None,
    export_ids: Sequence[uuid.UUID] = (),
    reason: str,
    actor: str,
    now: datetime,
) -> int:
    """Withdraw the open exports of a subject (a disclosure, a hand-off), or these exports."""
    if subject_id is None and not export_ids:
        return 0
    where = (
        col(Export.subject_id) == subject_id
        if subject_id is not None
        else col(Export.id).in_(list(export_ids))
    )
    return _revoke_where(session, where, reason=reason, actor=actor, now=now)


def revoke_for_recordings(
    session: Session, *, recording_ids: Sequence[uuid.UUID], now: datetime
) -> int:
    """Called in the disposal claim: the recordings are going, so are their exports."""
    if not recording_ids:
        return 0
    where = col(Export.recording_id).in_(list(recording_ids))
    return _revoke_where(session, where, reason="recording-disposed", actor="system:dispose",
                         now=now)  # fmt: skip


def purge(ctx: Context, *, now: datetime, recording_ids: Sequence[uuid.UUID] | None = None) -> int:
    """Delete the objects of ended exports (all of them, or those of ``recording_ids``)."""
    ended = sa.or_(
        col(Export.revoked_at).is_not(None),
        col(Export.completed_at).is_not(None),
        col(Export.expires_at) <= now,
    )
    deleted = 0
    failed: set[uuid.UUID] = set()
    while True:
        query = select(Export.id, Export.region, Export.object_key).where(
            col(Export.deleted_at).is_(None), ended
        )
        if recording_ids is not None:
            query = query.where(col(Export.recording_id).in_(list(recording_ids)))
        if failed:
            query = query.where(col(Export.id).not_in(failed))
        with ctx.db.reading() as session:
            rows = session.exec(query.order_by(col(Export.expires_at)).limit(_BATCH)).all()
        if not rows:
            return deleted
        removed: list[uuid.UUID] = []
        for export_id, region, key in rows:  # no transaction open during the store's calls
            try:
                ctx.store_for(region).delete_all_versions(key)
                removed.append(export_id)
            except StoreUnavailableError:
                log.warning("purge-exports: object store unavailable; retrying next run")
                deleted += _mark_deleted(ctx, removed, now)
                return deleted
            except StorageError:
                log.warning("purge-exports: cannot delete export %s", export_id, exc_info=True)
                failed.add(export_id)
        deleted += _mark_deleted(ctx, removed, now)


def _mark_deleted(ctx: Context, ids: list[uuid.UUID], now: datetime) -> int:
    if not ids:
        return 0
    with ctx.db.transaction() as session:
        rows = session.exec(
            select(Export).where(col(Export.id).in_(ids), col(Export.deleted_at).is_(None))
        ).all()
        for row in rows:
            row.deleted_at = now
            session.add(row)
            audit.record(
                session, action=AuditAction.export_delete, actor="system:purge-exports",
                now=now, tenant_id=row.tenant_id, target=str(row.id),
                details={"kind": row.kind, "subject": str(row.subject_id)},
            )  # fmt: skip
    return len(rows)
