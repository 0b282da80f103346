"""The audit log's size and freshness, for ``/metrics``: the one place that reads them.

The Merkle log (issue #13) will provide ``vault.audit.stats(session, *, now)`` with these same
fields; until then this computes what the hash chain has, with the chain's meaning of each:

- ``events``: the chain's length (its newest seq; seqs have no gaps);
- ``tree_size``: the head seq covered by the newest *signed* checkpoint;
- ``unsequenced``: events past that head, i.e. not yet under a signed checkpoint;
- ``oldest_unsequenced_age_seconds``: the age of the oldest of those (0 when there is none);
- ``last_head_age_seconds``: the age of the newest signed checkpoint (None before the first).

Every query is a primary-key or indexed lookup: cheap at any size of the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault.models import AuditCheckpoint, AuditEvent

__all__ = ["AuditStats", "stats"]


@dataclass(frozen=True, slots=True)
class AuditStats:
    events: int
    tree_size: int
    unsequenced: int
    oldest_unsequenced_age_seconds: float
    last_head_age_seconds: float | None


def stats(session: Session, *, now: datetime) -> AuditStats:
    events = int(session.exec(select(sa.func.coalesce(sa.func.max(AuditEvent.seq), 0))).one())
    head = session.exec(
        select(AuditCheckpoint.head_seq, AuditCheckpoint.created_at)
        .where(col(AuditCheckpoint.signature).is_not(None))
        .order_by(col(AuditCheckpoint.head_seq).desc())
        .limit(1)
    ).first()
    tree_size = int(head[0]) if head else 0
    oldest = 0.0
    if events > tree_size:
        first = session.exec(select(AuditEvent.ts).where(AuditEvent.seq == tree_size + 1)).first()
        oldest = max(0.0, (now - first).total_seconds()) if first is not None else 0.0
    return AuditStats(
        events=events,
        tree_size=tree_size,
        unsequenced=max(0, events - tree_size),
        oldest_unsequenced_age_seconds=oldest,
        last_head_age_seconds=max(0.0, (now - head[1]).total_seconds()) if head else None,
    )
