"""Purpose expiry: mark purposes past ``expires_at`` as ended, audited; idempotent."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import col, select

from vault import audit
from vault.context import Context
from vault.leases import claim
from vault.models import Recording, RecordingPurpose
from vault.tags import AuditAction

__all__ = ["EXPIRE_ACTOR", "expire_purposes"]

EXPIRE_ACTOR = "system:expire-purposes"


def expire_purposes(ctx: Context, *, now: datetime, batch: int = 1000) -> int:
    """Mark purposes past ``expires_at`` as ended (``ended_at = expires_at``); idempotent."""
    total = 0
    while True:
        with ctx.db.transaction() as session:
            query = (
                select(RecordingPurpose, Recording.tenant_id)
                .join(Recording, col(Recording.id) == col(RecordingPurpose.recording_id))
                .where(
                    col(RecordingPurpose.ended_at).is_(None),
                    col(RecordingPurpose.expires_at) <= now,
                )
                .order_by(col(RecordingPurpose.expires_at), col(RecordingPurpose.recording_id))
                .limit(batch)
            )
            rows = session.exec(claim(session, query, of=RecordingPurpose)).all()
            for purpose, _ in rows:
                purpose.ended_at = purpose.expires_at
                purpose.ended_reason = "expired"
                session.add(purpose)
            session.flush()  # every row lock is ours before the audit lock is taken
            for purpose, tenant_id in rows:
                audit.record(
                    session,
                    action=AuditAction.purpose_expire,
                    actor=EXPIRE_ACTOR,
                    now=now,
                    tenant_id=tenant_id,
                    target=str(purpose.recording_id),
                    purpose=purpose.purpose,
                    details={"expires_at": audit.format_ts(purpose.expires_at)},
                )
        total += len(rows)
        if len(rows) < batch:
            return total


