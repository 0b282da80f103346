"""Disposal of recordings by crypto-shredding.

A recording is *due* once none of its purposes is active (each expired or ended). Disposal of a
due recording has two steps, each idempotent, so a crash between them loses nothing:

1. **Claim** (one transaction): list candidates, lock them (``FOR UPDATE SKIP LOCKED`` on
   PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already makes us the single writer), re-check the
   memberships of active holds *after* the locks, and compare-and-set ``stored|integrity_failed
   -> disposing`` only where no hold is active. The same statement destroys the wrapped DEK and
   turns the row into a tombstone (``call_id`` and plaintext ``sha256`` cleared; id, tenant,
   times, reason and ciphertext hash kept), audited as ``dek.destroy``. Under READ COMMITTED each
   statement sees what was committed before it started, so a hold committed after the listing is
   seen by the re-check and wins.
2. **Finish** (one transaction per batch, rows locked while their objects go): remove every
   object version, then ``disposing -> disposed``, audited as ``media.destroy``. A ``disposing``
   row with a NULL DEK is all a crash leaves behind; the next :func:`dispose` (or the sweeper)
   finishes it, and the compare-and-set keeps the audit event single.

The third step of crypto-shredding, retiring the KEK version that wrapped the DEK, belongs to the
kek-cycle job; :mod:`vault.retention.erasure` waits for it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import urllib3
from minio.error import MinioException, S3Error, ServerError
from sqlmodel import Session, col, select

from vault import audit
from vault.context import Context
from vault.crashpoints import AFTER_DEK_DESTROYED, AFTER_PARTIAL_OBJECT_DELETE, crashpoint
from vault.leases import claim
from vault.models import (
    AuditEvent,
    ErasureItem,
    ErasureRequest,
    ErasureStatus,
    Recording,
    RecordingPurpose,
    RecordingStatus,
)
from vault.retention import holds
from vault.storage import (
    BlobLockedError,
    BlobStore,
    S3BlobStore,
    StorageError,
    StorageUnavailableError,
)
from vault.tags import AuditAction

__all__ = [
    "DISPOSE_ACTOR", "RETENTION_REASON", "DisposeResult", "dispose", "dispose_recordings",
    "due_condition",
]  # fmt: skip

log = logging.getLogger(__name__)

S = RecordingStatus
DISPOSABLE = (S.stored, S.integrity_failed)
RETENTION_REASON = "retention expired"
DISPOSE_ACTOR = "system:dispose"
REMOVE_WORKERS = 8
BATCH = 100


@dataclass(frozen=True, slots=True)
class DisposeResult:
    disposed: int  # rows that reached ``disposed`` in this run (leftovers of a crash included)
    deferred: int  # due rows left alone because an active legal hold covers them


def due_condition(now: datetime) -> sa.ColumnElement[bool]:
    """SQL: the recording has no active purpose at ``now``."""
    return ~sa.exists().where(
        RecordingPurpose.recording_id == Recording.id,
        col(RecordingPurpose.ended_at).is_(None),
        col(RecordingPurpose.expires_at) > now,
    )


# --- disposal -------------------------------------------------------------------------------------


def dispose(ctx: Context, *, now: datetime, limit: int = 500) -> DisposeResult:
    """Dispose of up to ``limit`` due, unheld recordings, and finish interrupted disposals."""
    return _dispose(ctx, now=now, limit=limit, only=None)


def dispose_recordings(
    ctx: Context, recording_ids: Sequence[uuid.UUID], *, now: datetime
) -> DisposeResult:
    """The same, restricted to these recordings (erasure ends their purposes first)."""
    ids = sorted(set(recording_ids))
    if not ids:
        return DisposeResult(0, 0)
    return _dispose(ctx, now=now, limit=len(ids), only=ids)


def _dispose(
    ctx: Context, *, now: datetime, limit: int, only: list[uuid.UUID] | None
) -> DisposeResult:
    disposed = _finish(ctx, now=now, only=only, limit=limit)  # what a crash left behind
    claimed_total = 0
    while claimed_total < limit:
        claimed = _claim(ctx, now=now, only=only, n=min(BATCH, limit - claimed_total))
        if not claimed:
            break
        crashpoint(AFTER_DEK_DESTROYED)  # committed: DEKs gone, objects still there
        disposed += _finish(ctx, now=now, only=claimed, limit=len(claimed))
        claimed_total += len(claimed)
    return DisposeResult(disposed, _defer_held(ctx, now=now, only=only))


def _candidates_listed(ids: list[uuid.UUID]) -> None:
    """Test seam: called between listing candidates and locking them (the race window)."""


def _claim(ctx: Context, *, now: datetime, only: list[uuid.UUID] | None, n: int) -> list[uuid.UUID]:
    """Step 1 for up to ``n`` rows; returns the ids moved to ``disposing``."""
    disposable = col(Recording.status).in_(DISPOSABLE)
    with ctx.db.transaction() as session:
        query = select(Recording.id).where(
            disposable, due_condition(now), ~holds.held_condition(Recording.id)
        )
        if only is not None:
            query = query.where(col(Recording.id).in_(only))
        ids = list(
            session.exec(query.order_by(col(Recording.updated_at), col(Recording.id)).limit(n))
        )
        if not ids:
            return []
        _candidates_listed(ids)
        rows = session.exec(
            claim(session, select(Recording).where(col(Recording.id).in_(ids), disposable))
            .order_by(col(Recording.id))
            .execution_options(populate_existing=True)
        ).all()
        # The re-check, after the locks: a new statement, so it sees holds committed meanwhile.
        held = holds.active_holds_of(session, [r.id for r in rows])
        reasons = _reasons(session, [r.id for r in rows])
        free = [r for r in rows if r.id not in held]
        claimed = []
        for rec in free:
            done = session.exec(
                sa.update(Recording)
                .where(
                    col(Recording.id) == rec.id,
                    disposable,
                    ~holds.held_condition(Recording.id),
                )
                .values(
                    status=S.disposing,
                    wrapped_dek=None,
                    dek_destroyed_at=now,
                    disposal_reason=reasons.get(rec.id, RETENTION_REASON),
                    call_id=None,
                    sha256=None,
                    updated_at=now,
                )
            )
            if done.rowcount == 1:
                claimed.append(rec)
        for rec in claimed:  # audited after every row change: the audit lock comes last
            audit.record(
                session,
                action=AuditAction.dek_destroy,
                actor=DISPOSE_ACTOR,
                now=now,
                tenant_id=rec.tenant_id,
                target=str(rec.id),
                details={
                    "reason": reasons.get(rec.id, RETENTION_REASON),
                    "kek_version": rec.kek_version,
                    "ciphertext_sha256": rec.ciphertext_sha256,
                },
            )
        _audit_deferrals(
            session, {r.id: (r.tenant_id, held[r.id]) for r in rows if r.id in held}, reasons, now
        )
        return [r.id for r in claimed]


def _finish(ctx: Context, *, now: datetime, only: list[uuid.UUID] | None, limit: int) -> int:
    """Step 2: remove the objects of ``disposing`` rows whose DEK is gone, then mark them."""
    done, failed = 0, set()
    while done < limit:
        with ctx.db.transaction() as session:
            query = select(Recording).where(
                Recording.status == S.disposing, col(Recording.wrapped_dek).is_(None)
            )
            if only is not None:
                query = query.where(col(Recording.id).in_(only))
            if failed:
                query = query.where(col(Recording.id).not_in(failed))
            size = min(BATCH, limit - done)
            rows = session.exec(
                claim(
                    session,
                    query.order_by(col(Recording.updated_at), col(Recording.id)).limit(size),
                ).execution_options(populate_existing=True)
            ).all()
            removed: dict[uuid.UUID, int] = {}
            unavailable = False
            # Object removal is round trips to the store: overlap them. Every row is locked by
            # this transaction, and a removal is idempotent, so a failure just retries next run.
            with ThreadPoolExecutor(max_workers=REMOVE_WORKERS) as pool:
                futures = [
                    (rec, pool.submit(_remove_media, ctx.store, rec.object_key)) for rec in rows
                ]
                for rec, future in futures:
                    try:
                        removed[rec.id] = future.result()
                    except StorageUnavailableError:
                        unavailable = True
                    except StorageError:  # e.g. COMPLIANCE retention set from outside
                        log.warning(
                            "dispose: cannot remove the objects of %s", rec.id, exc_info=True
                        )
                        failed.add(rec.id)
            if unavailable:
                log.warning("dispose: object store unavailable; retrying next run")
            # The rows are locked by this transaction, so one statement moves them all.
            finished = [rec for rec in rows if rec.id in removed]
            if finished:
                session.exec(
                    sa.update(Recording)
                    .where(
                        col(Recording.id).in_([rec.id for rec in finished]),
                        Recording.status == S.disposing,
                    )
                    .values(
                        status=S.disposed, disposed_at=now, updated_at=now, call_id=None,
                        sha256=None,
                    )
                )  # fmt: skip
            for rec in finished:
                audit.record(
                    session,
                    action=AuditAction.media_destroy,
                    actor=DISPOSE_ACTOR,
                    now=now,
                    tenant_id=rec.tenant_id,
                    target=str(rec.id),
                    details={
                        "objects_removed": removed[rec.id],
                        "ciphertext_sha256": rec.ciphertext_sha256,
                    },
                )
            done += len(finished)
        if unavailable or len(rows) < size:
            return done
    return done


def _remove_media(store: BlobStore, key: str) -> int:
    """Remove every version of ``key``; a stale S3 legal-hold flag does not stop disposal.

    Callers have checked the DB's holds (the authority); the DEK is already destroyed, so a
    flag left by a failed release or a rolled-back hold protects nothing and is cleared.
    """
    try:
        return _remove_versions(store, key)
    except BlobLockedError:
        store.set_legal_hold(key, on=False)
        return _remove_versions(store, key)


def _remove_versions(store: BlobStore, key: str) -> int:
    if not isinstance(store, S3BlobStore):
        return store.delete_all_versions(key)
    # Version by version (the same S3 calls as the store makes), so that a crash point can sit
    # between two versions: a partial removal must be finished by the next run.
    versions = _s3(
        key,
        lambda: [
            obj.version_id
            for obj in store.client.list_objects(store.bucket, prefix=key, include_version=True)
            if obj.object_name == key and not obj.is_dir
        ],
    )
    removed, locked = 0, []
    for i, version in enumerate(versions):
        if i == 1:
            crashpoint(AFTER_PARTIAL_OBJECT_DELETE)
        try:
            _s3(key, lambda v=version: store.client.remove_object(store.bucket, key, version_id=v))
        except BlobLockedError:
            locked.append(str(version))
            continue
        except _Gone:
            continue
        removed += 1
    if locked:
        raise BlobLockedError(f"{len(locked)} version(s) of {key!r} are under Object Lock")
    return removed


class _Gone(Exception):
    """The version was removed concurrently: still gone, still idempotent."""


def _s3(key: str, call: Any) -> Any:
    try:
        return call()
    except S3Error as exc:
        if exc.code in {"NoSuchKey", "NoSuchVersion", "NoSuchObject"}:
            raise _Gone() from exc
        if exc.code == "AccessDenied":
            raise BlobLockedError(f"S3 refused to delete {key!r}") from exc
        raise StorageError(f"S3 refused {key!r}: {exc.code}") from exc
    except (ServerError, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
        raise StorageUnavailableError(f"S3 unavailable for {key!r}") from exc
    except MinioException as exc:
        raise StorageError(f"S3 client error for {key!r}: {exc}") from exc


# --- deferrals and reasons ------------------------------------------------------------------------


def _reasons(session: Session, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    """``erasure <id>`` for rows an open erasure request covers (the oldest request names it)."""
    if not ids:
        return {}
    rows = session.exec(
        select(ErasureItem.recording_id, ErasureRequest.id)
        .join(ErasureRequest, col(ErasureRequest.id) == col(ErasureItem.request_id))
        .where(
            col(ErasureItem.recording_id).in_(ids),
            ErasureRequest.status != ErasureStatus.complete,
        )
        .order_by(col(ErasureRequest.created_at).desc())
    ).all()
    return {rid: f"erasure {req}" for rid, req in rows}  # the last write, the oldest, wins


def _audit_deferrals(
    session: Session,
    held: dict[uuid.UUID, tuple[uuid.UUID, list[uuid.UUID]]],
    reasons: dict[uuid.UUID, str],
    now: datetime,
) -> None:
    """One ``disposal.deferred`` per (recording, hold), however many runs see it held."""
    if not held:
        return
    seen: set[tuple[str, str]] = set()
    targets = [str(rid) for rid in held]
    for target, canonical in session.exec(
        select(AuditEvent.target, AuditEvent.canonical).where(
            AuditEvent.action == AuditAction.disposal_deferred, col(AuditEvent.target).in_(targets)
        )
    ).all():
        hold_id = json.loads(canonical).get("details", {}).get("hold_id")
        seen.add((str(target), str(hold_id)))
    for rid in sorted(held):
        tenant_id, hold_ids = held[rid]
        for hid in hold_ids:
            if (str(rid), str(hid)) in seen:
                continue
            audit.record(
                session,
                action=AuditAction.disposal_deferred,
                actor=DISPOSE_ACTOR,
                now=now,
                tenant_id=tenant_id,
                target=str(rid),
                details={"hold_id": str(hid), "disposal": reasons.get(rid, RETENTION_REASON)},
            )


def _defer_held(
    ctx: Context, *, now: datetime, only: list[uuid.UUID] | None, page: int = 500
) -> int:
    """Count (and audit, once) the due recordings that active holds keep."""
    count, last = 0, None
    while True:
        with ctx.db.transaction() as session:
            query = select(Recording.id, Recording.tenant_id).where(
                col(Recording.status).in_(DISPOSABLE),
                due_condition(now),
                holds.held_condition(Recording.id),
            )
            if only is not None:
                query = query.where(col(Recording.id).in_(only))
            if last is not None:
                query = query.where(col(Recording.id) > last)
            rows = session.exec(query.order_by(col(Recording.id)).limit(page)).all()
            ids = [rid for rid, _ in rows]
            active = holds.active_holds_of(session, ids)
            tenants = dict(rows)
            _audit_deferrals(
                session,
                {rid: (tenants[rid], active[rid]) for rid in ids if rid in active},
                _reasons(session, ids),
                now,
            )
        count += len(rows)
        if len(rows) < page:
            return count
        last = rows[-1][0]
