"""S3 Object Lock mirroring of legal holds for objects stored after a hold, and its repair path.

Defence in depth only: the database's memberships decide. Every store call runs with no
transaction open.
"""

from __future__ import annotations

import uuid

from sqlmodel import col, select

from vault.context import Context
from vault.models import Recording
from vault.residency import recording_in
from vault.retention.holds import FLAGGABLE, active_holds, held_condition, set_flags

__all__ = ["mirror_new_recording", "sync_object_locks"]


def mirror_new_recording(ctx: Context, recording_id: uuid.UUID) -> int:
    """After ingest stored the object: set the S3 flag if an open hold already covers it."""
    with ctx.db.reading() as session:
        rec = session.get(Recording, recording_id)
        if rec is None or rec.status not in FLAGGABLE or not active_holds(session, rec.id):
            return 0
        key = rec.object_key
    return set_flags(ctx.store_for(rec.region), [key], on=True)


def sync_object_locks(ctx: Context, *, batch: int = 500) -> int:
    """Re-apply the S3 flag to every object an active hold covers; idempotent repair path.

    Cheap to skip where the store has no Object Lock. Returns the number of versions flagged.
    """
    return sum(_sync_region(ctx, region, batch=batch) for region in ctx.regions())


def _sync_region(ctx: Context, region: str | None, *, batch: int) -> int:
    store = ctx.store_for(region)
    if not store.supports_object_lock():
        return 0
    changed, last = 0, None
    while True:
        with ctx.db.reading() as session:
            query = (
                select(Recording.id, Recording.object_key)
                .where(
                    col(Recording.status).in_(FLAGGABLE),
                    held_condition(Recording.id),
                    recording_in(region),
                )
                .order_by(col(Recording.id))
                .limit(batch)
            )
            if last is not None:
                query = query.where(col(Recording.id) > last)
            rows = session.exec(query).all()
        changed += set_flags(store, [key for _, key in rows], on=True)
        if len(rows) < batch:
            return changed
        last = rows[-1][0]
