"""Ending purposes: by expiry (the expire-purposes job), early (a privacy officer) or by erasure.

:func:`end_purposes` is the one way a purpose ends: it stamps the rows, flushes them (every row
lock is taken before the audit lock) and writes one event per purpose, in the caller's unit of
work.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from vault import audit
from vault.context import Context
from vault.leases import claim
from vault.models import Recording, RecordingPurpose
from vault.tags import AuditAction

__all__ = ["EXPIRE_ACTOR", "end_purposes", "expire_purposes"]

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
            end_purposes(
                session, rows, action=AuditAction.purpose_expire, actor=EXPIRE_ACTOR, now=now,
                reason="expired", at_expiry=True,
                details=lambda p: {"expires_at": audit.format_ts(p.expires_at)},
            )  # fmt: skip
        total += len(rows)
        if len(rows) < batch:
            return total


def end_purposes(
    session: Session,
    rows: Sequence[tuple[RecordingPurpose, uuid.UUID]],
    *,
    action: AuditAction,
    actor: str,
    now: datetime,
    reason: str | None,
    details: Callable[[RecordingPurpose], dict[str, Any]],
    at_expiry: bool = False,
) -> None:
    """End each ``(purpose, tenant id)`` (at ``now``, or at its own ``expires_at`` when it
    expired), with its audit event."""
    for purpose, _ in rows:
        purpose.ended_at = purpose.expires_at if at_expiry else now
        purpose.ended_reason = reason
        session.add(purpose)
    session.flush()  # every row lock is ours before the audit lock is taken
    for purpose, tenant_id in rows:
        audit.record(
            session, action=action, actor=actor, now=now, tenant_id=tenant_id,
            target=str(purpose.recording_id), purpose=purpose.purpose, details=details(purpose),
        )  # fmt: skip
