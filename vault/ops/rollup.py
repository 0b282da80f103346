"""Playback bytes, rolled up from the audit log so that the read path stays as it is.

Every read already commits a ``recording.read`` event with its plaintext byte range before the
first byte leaves; nothing is added to that hot path. The ``metrics-rollup`` job adds the ranges
of events past a watermark (the next leaf index of the Merkle log to count) to a running total
in ``metric_rollup``, in batches, each batch one transaction that moves the watermark and the
total together: a crash loses nothing and counts nothing twice. The row is locked (``FOR UPDATE
SKIP LOCKED`` on PostgreSQL), so two workers never count the same batch; the one that finds it
locked leaves.

The total counts the bytes a read was *authorised and audited* for (the requested range), not
bytes that reached the client: a client that hangs up early is counted in full. Appends take no
lock, so events may commit out of seq order; the roll-up follows the log's leaf order instead
(contiguous, assigned by the one sequencer to committed events), so no event lands behind the
watermark. An event is counted once it is sequenced (within one ``audit-sequence`` interval).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from vault.audit.tree import sequence
from vault.context import Context
from vault.leases import claim, dialect
from vault.models import AuditEvent, MetricRollup
from vault.tags import AuditAction

__all__ = ["PLAYBACK", "RollupResult", "read_bytes", "roll_up_playback"]

log = logging.getLogger(__name__)

PLAYBACK = "playback_bytes"
BATCH = 2000
_T = MetricRollup.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class RollupResult:
    events: int = 0
    bytes: int = 0
    skipped: bool = False  # another worker holds the row


def read_bytes(canonical: str) -> int:
    """The plaintext bytes of one read event (its ``[start, end)`` range); 0 if unreadable."""
    try:
        start, end = json.loads(canonical)["details"]["range"]
        return max(0, int(end) - int(start))
    except (ValueError, KeyError, TypeError):
        log.warning("a recording.read event without a readable range was counted as 0 bytes")
        return 0


def _batch(session: Session, *, now: datetime, batch: int) -> tuple[int, int] | None:
    """One batch: (events, bytes) counted, or None when another worker holds the row."""
    session.exec(
        dialect(session).insert(_T).values(name=PLAYBACK, watermark=0, value=0, events=0,
                                           updated_at=now).on_conflict_do_nothing()
    )  # fmt: skip
    row = session.exec(claim(session, select(MetricRollup).where(MetricRollup.name == PLAYBACK)))
    rollup = row.first()
    if rollup is None:
        return None
    rows = session.exec(
        select(AuditEvent.leaf_index, AuditEvent.canonical)
        .where(col(AuditEvent.leaf_index) >= rollup.watermark,
               AuditEvent.action == AuditAction.recording_read.value)
        .order_by(col(AuditEvent.leaf_index))
        .limit(batch)
    ).all()  # fmt: skip
    if not rows:
        return 0, 0
    counted = sum(read_bytes(canonical) for _, canonical in rows)
    rollup.watermark = int(rows[-1][0]) + 1  # the next leaf index to look at
    rollup.value += counted
    rollup.events += len(rows)
    rollup.updated_at = now
    session.add(rollup)
    return len(rows), counted


def roll_up_playback(ctx: Context, *, now: datetime, batch: int = BATCH) -> RollupResult:
    # Count up to what is committed now, not up to the last audit-sequence run (SKIP LOCKED:
    # when another worker is sequencing, what it takes in is counted next time).
    sequence(ctx.db)
    events = total = 0
    while True:
        with ctx.db.transaction() as session:
            done = _batch(session, now=now, batch=batch)
        if done is None:
            return RollupResult(events, total, skipped=True)
        events, total = events + done[0], total + done[1]
        if done[0] < batch:
            return RollupResult(events, total)
