"""The orphan sweeper: reclaim what failed or crashed ingests and disposals left behind.

Idempotent, and no transaction is open while the store is called:

1. ``pending`` rows not touched for ``older_than`` move to ``failed`` through the lifecycle (the
   wrapped DEK destroyed in the same statement), so an upload still running loses its own
   ``pending -> stored`` compare-and-set and cleans up after itself;
2. ``failed`` rows whose objects were not removed yet (``disposed_at`` NULL): every object
   version is removed, then ``disposed_at`` is stamped (audited as ``recording.sweep``);
3. ``disposing`` rows whose DEK is destroyed and that nobody touched for ``older_than`` (a crash
   mid-disposal) are finished by :func:`vault.retention.disposal.finish`, the one owner of
   ``disposing -> disposed``;
4. multipart uploads older than ``older_than`` that a server killed mid-upload left behind
   (invisible, but stored and billed) are aborted, unless a ``pending`` row still owns the key.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import col, select

from vault import audit, lifecycle
from vault.context import Context
from vault.errors import StorageError, StoreUnavailableError
from vault.models import Recording, RecordingStatus
from vault.retention import disposal
from vault.storage import BlobStore
from vault.tags import AuditAction

__all__ = ["SWEEP_ACTOR", "sweep_orphans"]

log = logging.getLogger(__name__)

S = RecordingStatus
SWEEP_ACTOR = "system:sweep-orphans"
SWEEP_BATCH = 500
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_RECORDING_KEY = re.compile(rf"{_UUID}/{_UUID}")


def sweep_orphans(
    ctx: Context, *, older_than: timedelta, now: datetime, batch: int = SWEEP_BATCH
) -> int:
    """Run the three steps of the module docstring; returns the number of rows acted on."""
    cutoff = now - older_than
    stale = col(Recording.updated_at) < cutoff
    with ctx.db.reading() as session:
        pending = list(
            session.exec(
                select(Recording.id)
                .where(Recording.status == S.pending, stale)
                .order_by(col(Recording.updated_at))
                .limit(batch)
            )
        )
    acted: set[uuid.UUID] = set()
    if pending:
        with ctx.db.transaction() as session:
            moved = lifecycle.transition_many(
                session, pending, from_=S.pending, to=S.failed, actor=SWEEP_ACTOR, now=now,
                details={"reason": "swept"}, where=[stale],
            )  # fmt: skip
        acted.update(m.id for m in moved)
    try:
        acted.update(_remove_failed_objects(ctx, now=now, batch=batch))
        acted.update(disposal.finish(ctx, now=now, limit=batch, older_than=cutoff))
        aborted = sum(
            _abort_abandoned_uploads(ctx, ctx.store_for(region), cutoff=cutoff)
            for region in ctx.regions()
        )
    except StoreUnavailableError:
        log.warning("sweep: object store unavailable; retrying next run", exc_info=True)
        return len(acted)
    return len(acted) + aborted


def _abort_abandoned_uploads(ctx: Context, store: BlobStore, *, cutoff: datetime) -> int:
    """Step 4, in one region's store. Recording objects are ``{tenant id}/{recording id}``;
    audit exports live apart."""
    stale = [
        (key, upload_id)
        for key, upload_id, initiated in store.incomplete_uploads()
        if initiated < cutoff and _RECORDING_KEY.fullmatch(key)
    ]
    if not stale:
        return 0
    with ctx.db.reading() as session:
        owned = set(
            session.exec(
                select(Recording.object_key).where(
                    col(Recording.object_key).in_([key for key, _ in stale]),
                    Recording.status == S.pending,
                )
            ).all()
        )
    aborted = 0
    for key, upload_id in stale:
        if key not in owned:
            store.abort_upload(key, upload_id)
            aborted += 1
    if aborted:
        log.info("sweep: aborted %d abandoned multipart upload(s)", aborted)
    return aborted


def _remove_failed_objects(ctx: Context, *, now: datetime, batch: int) -> list[uuid.UUID]:
    """Step 2: the objects of failed ingests, then ``disposed_at`` on their rows."""
    with ctx.db.reading() as session:
        rows = session.exec(
            select(Recording.id, Recording.object_key, Recording.region)
            .where(Recording.status == S.failed, col(Recording.disposed_at).is_(None))
            .order_by(col(Recording.updated_at))
            .limit(batch)
        ).all()
    done = []
    for rid, key, region in rows:
        try:
            removed = ctx.store_for(region).delete_all_versions(key)
        except StoreUnavailableError:
            raise
        except StorageError:  # e.g. Object Lock on a version: leave it, retry next run
            log.warning("sweep: could not remove the objects of %s", rid, exc_info=True)
            continue
        with ctx.db.transaction() as session:
            stamped = session.execute(
                sa.update(Recording)
                .where(
                    col(Recording.id) == rid,
                    Recording.status == S.failed,
                    col(Recording.disposed_at).is_(None),
                )
                .values(wrapped_dek=None, disposed_at=now, updated_at=now)
                .returning(col(Recording.tenant_id))
            ).first()
            if stamped is None:
                continue  # another sweeper was first
            audit.record(
                session, action=AuditAction.recording_sweep, actor=SWEEP_ACTOR, now=now,
                tenant_id=stamped[0], target=str(rid),
                details={"status": "failed", "objects_removed": removed},
            )  # fmt: skip
        done.append(rid)
    return done
