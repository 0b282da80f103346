"""Disposal of recordings by crypto-shredding.

A recording is *due* once none of its purposes is active (each expired or ended). Disposal of a
due recording has two steps, each idempotent, so a crash between them loses nothing:

1. **Claim** (:func:`claim`, one transaction): list candidates, lock them (``FOR UPDATE SKIP
   LOCKED`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already makes us the single writer),
   re-check the memberships of active holds *after* the locks, and move ``stored|integrity_failed
   -> disposing`` through the lifecycle only where no hold is active. That transition destroys
   the wrapped DEK and turns the row into a tombstone, audited as ``dek.destroy``. Under READ
   COMMITTED each statement sees what was committed before it started, so a hold committed after
   the listing is seen by the re-check and wins.
2. **Finish** (:func:`finish`, the one owner of ``disposing -> disposed``): with no transaction
   open, remove every object version of rows already ``disposing`` with their DEK gone (overlapped
   in a small thread pool); then one short transaction moves them to ``disposed``, audited as
   ``media.destroy``, with a signed disposal record for the store (:mod:`.records`: what a
   restore from an older backup re-applies). A ``disposing`` row with a NULL DEK is all a
   crash leaves behind; the next run finishes it, and the compare-and-set keeps the audit event
   single even when two workers remove the same (idempotent) objects.

The third step of crypto-shredding, retiring the KEK version that wrapped the DEK, belongs to the
kek-cycle job; :mod:`vault.retention.erasure` waits for it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault import audit, exports, lifecycle
from vault.context import Context
from vault.crashpoints import AFTER_DEK_DESTROYED, AFTER_PARTIAL_OBJECT_DELETE, crashpoint
from vault.errors import BlobLockedError, StorageError, StoreUnavailableError
from vault.leases import claim as claim_rows
from vault.models import (
    AuditEvent,
    ErasureItem,
    ErasureRequest,
    ErasureStatus,
    Recording,
    RecordingPurpose,
    RecordingStatus,
    awaiting_expiry_redaction,
)
from vault.retention import holds, records
from vault.storage import BlobStore
from vault.tags import AuditAction
from vault.txcount import carry

__all__ = [
    "DISPOSE_ACTOR", "RETENTION_REASON", "DisposeResult", "claim", "dispose",
    "dispose_recordings", "due_condition", "finish",
]  # fmt: skip

log = logging.getLogger(__name__)

S = RecordingStatus
DISPOSABLE = (S.stored, S.integrity_failed)
RETENTION_REASON = "retention expired"
DISPOSE_ACTOR = "system:dispose"
REMOVE_WORKERS = 8
BATCH = 100

Listed = Callable[[list[uuid.UUID]], None]


@dataclass(frozen=True, slots=True)
class DisposeResult:
    disposed: int  # rows that reached ``disposed`` in this run (leftovers of a crash included)
    deferred: int  # due rows left alone because an active legal hold covers them


def due_condition(now: datetime) -> sa.ColumnElement[bool]:
    """SQL: the recording has no active purpose at ``now``."""
    return ~sa.exists().where(
        RecordingPurpose.recording_id == Recording.id, RecordingPurpose.active_at(now)
    )


def dispose(
    ctx: Context, *, now: datetime, limit: int = 500, after_listing: Listed | None = None
) -> DisposeResult:
    """Dispose of up to ``limit`` due, unheld recordings, and finish interrupted disposals.

    ``after_listing`` is called between listing candidates and locking them (the window a hold
    placed concurrently must win); tests use it to place one there.
    """
    return _dispose(ctx, now=now, limit=limit, only=None, after_listing=after_listing)


def dispose_recordings(
    ctx: Context, recording_ids: Sequence[uuid.UUID], *, now: datetime
) -> DisposeResult:
    """The same, restricted to these recordings (erasure ends their purposes first)."""
    ids = sorted(set(recording_ids))
    if not ids:
        return DisposeResult(0, 0)
    return _dispose(ctx, now=now, limit=len(ids), only=ids, after_listing=None)


def _dispose(
    ctx: Context,
    *,
    now: datetime,
    limit: int,
    only: list[uuid.UUID] | None,
    after_listing: Listed | None,
) -> DisposeResult:
    disposed = len(finish(ctx, now=now, only=only, limit=limit))  # what a crash left behind
    claimed_total = 0
    while claimed_total < limit:
        n = min(BATCH, limit - claimed_total)
        claimed = claim(ctx, now=now, only=only, n=n, after_listing=after_listing)
        if not claimed:
            break
        crashpoint(AFTER_DEK_DESTROYED)  # committed: DEKs gone, objects still there
        disposed += len(finish(ctx, now=now, only=claimed, limit=len(claimed)))
        claimed_total += len(claimed)
    records.publish_pending(ctx, now=now)  # this run's records, and those that failed before
    return DisposeResult(disposed, _defer_held(ctx, now=now, only=only))


def claim(
    ctx: Context,
    *,
    now: datetime,
    only: list[uuid.UUID] | None,
    n: int,
    after_listing: Listed | None = None,
) -> list[uuid.UUID]:
    """Step 1 for up to ``n`` rows; returns the ids moved to ``disposing``."""
    disposable = col(Recording.status).in_(DISPOSABLE)
    unheld = ~holds.held_condition(Recording.id)
    with ctx.db.transaction() as session:
        query = select(Recording.id).where(disposable, due_condition(now), unheld)
        if only is not None:
            query = query.where(col(Recording.id).in_(only))
        else:
            # Retention waits for an on-expiry redaction under way (erasure never does).
            query = query.where(~awaiting_expiry_redaction(Recording.id))
        ids = list(
            session.exec(query.order_by(col(Recording.updated_at), col(Recording.id)).limit(n))
        )
        if not ids:
            return []
        if after_listing is not None:
            after_listing(ids)
        rows = session.exec(
            claim_rows(session, select(Recording).where(col(Recording.id).in_(ids), disposable))
            .order_by(col(Recording.id))
            .execution_options(populate_existing=True)
        ).all()
        # The re-check, after the locks: a new statement, so it sees holds committed meanwhile.
        held = holds.active_holds_of(session, [r.id for r in rows])
        reasons = _reasons(session, [r.id for r in rows])
        free = [r.id for r in rows if r.id not in held]
        by_reason: dict[str, list[uuid.UUID]] = {}
        for rid in free:
            by_reason.setdefault(reasons.get(rid, RETENTION_REASON), []).append(rid)
        claimed: list[uuid.UUID] = []
        for reason, group in sorted(by_reason.items()):
            moved = lifecycle.transition_many(
                session, group, from_=DISPOSABLE, to=S.disposing, actor=DISPOSE_ACTOR, now=now,
                details={"reason": reason}, values={"disposal_reason": reason}, where=[unheld],
            )  # fmt: skip
            claimed.extend(m.id for m in moved)
        _audit_deferrals(
            session, {r.id: (r.tenant_id, held[r.id]) for r in rows if r.id in held}, reasons, now
        )
        # No download of an export of these may start from now on (objects go in finish).
        exports.revoke_for_recordings(session, recording_ids=claimed, now=now)
        return sorted(claimed)


def finish(
    ctx: Context,
    *,
    now: datetime,
    limit: int,
    only: Sequence[uuid.UUID] | None = None,
    older_than: datetime | None = None,
) -> list[uuid.UUID]:
    """Step 2: remove the objects of ``disposing`` rows whose DEK is gone, then mark them
    ``disposed``; returns the ids that reached ``disposed``. ``older_than`` leaves alone rows a
    live disposal touched since then (the sweeper's view)."""
    done: list[uuid.UUID] = []
    skip: set[uuid.UUID] = set()
    while len(done) < limit:
        query = select(Recording.id, Recording.object_key, Recording.region).where(
            Recording.status == S.disposing, col(Recording.wrapped_dek).is_(None)
        )
        if only is not None:
            query = query.where(col(Recording.id).in_(list(only)))
        if older_than is not None:
            query = query.where(col(Recording.updated_at) < older_than)
        if skip:
            query = query.where(col(Recording.id).not_in(skip))
        size = min(BATCH, limit - len(done))
        with ctx.db.reading() as session:
            rows = session.exec(
                query.order_by(col(Recording.updated_at), col(Recording.id)).limit(size)
            ).all()
        removed, unavailable = _remove_all(ctx, rows, skip)
        if removed:
            with ctx.db.transaction() as session:
                moved = lifecycle.transition_many(
                    session, list(removed), from_=S.disposing, to=S.disposed, actor=DISPOSE_ACTOR,
                    now=now, details=lambda m, r=removed: {"objects_removed": r[m.id]},
                )  # fmt: skip
                # Kept in the store too: a restore from an older backup re-applies it.
                records.add_disposal_record(session, [m.id for m in moved], now=now)
            done.extend(m.id for m in moved)
            exports.purge(ctx, now=now, recording_ids=list(removed))
        if unavailable:
            log.warning("dispose: object store unavailable; retrying next run")
            return done
        if len(rows) < size:
            return done
        skip.update(rid for rid, _, _ in rows)
    return done


def _remove_all(
    ctx: Context, rows: Sequence[Any], failed: set[uuid.UUID]
) -> tuple[dict[uuid.UUID, int], bool]:
    """Remove the objects of ``rows`` (id, key, region), each from its region's store (round
    trips: overlapped, no transaction open); ({id: versions removed}, whether a store was
    unavailable). Rows that cannot be removed (e.g. COMPLIANCE retention set from outside) are
    added to ``failed``."""
    removed: dict[uuid.UUID, int] = {}
    unavailable = False
    with ThreadPoolExecutor(max_workers=REMOVE_WORKERS) as pool:
        futures = [
            (rid, pool.submit(carry(_remove_media), ctx.store_for(region), key))
            for rid, key, region in rows
        ]
        for rid, future in futures:
            try:
                removed[rid] = future.result()
            except StoreUnavailableError:
                unavailable = True
            except StorageError:
                log.warning("dispose: cannot remove the objects of %s", rid, exc_info=True)
                failed.add(rid)
    return removed, unavailable


def _remove_media(store: BlobStore, key: str) -> int:
    """Remove every version of ``key``; a stale S3 legal-hold flag does not stop disposal.

    Callers have checked the DB's holds (the authority); the DEK is already destroyed, so a
    flag left by a failed release or a rolled-back hold protects nothing and is cleared.
    """

    def partial() -> None:
        crashpoint(AFTER_PARTIAL_OBJECT_DELETE)

    try:
        return store.delete_all_versions(key, between_versions=partial)
    except BlobLockedError:
        store.set_legal_hold(key, on=False)
        return store.delete_all_versions(key, between_versions=partial)


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
