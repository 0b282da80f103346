"""The Merkle log over the audit events: the sequencer, the stored hashes, roots and proofs.

Writers append events with no lock (:func:`vault.audit.chain.record`). The *sequencer* is the
log's single writer: it locks the one ``audit_tree`` row (``FOR UPDATE``, or ``SKIP LOCKED`` for
the frequent job so that two workers never queue; on SQLite the transaction's ``BEGIN
IMMEDIATE`` already makes it the only writer), takes committed unsequenced events in seq order,
gives them the next leaf indices, stores the hashes of the complete subtrees they complete
(:mod:`.merkle`, numbered as Go's sumdb ``tlog`` does) and adds each tenant's new leaves to its
count. An event committed late (a lower seq than one already sequenced) simply becomes a later
leaf, as in Certificate Transparency: leaf order is the order the log took them in.

A root at any size, an inclusion proof and a consistency proof each read O(log n) stored hashes
in one query. Legacy chained events are sequenced first (they have the lowest seqs).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault.audit import merkle
from vault.db import Database, is_postgres
from vault.errors import (
    IntegrityError,
    LeafNotInTreeError,
    TreeRangeError,
    TreeSizeUnknownError,
)
from vault.models import (
    AuditCheckpoint,
    AuditEvent,
    AuditTree,
    AuditTreeHead,
    AuditTreeNode,
    AuditTreeTenant,
)

log = logging.getLogger("callvault.audit")

#: The tenant key under which events without a tenant are counted (never a UUID).
NO_TENANT = "none"
SEQUENCE_BATCH = 1000


def tenant_key(tenant_id: Any) -> str:
    return NO_TENANT if tenant_id is None else str(tenant_id)


def leaf_of(canonical: str) -> bytes:
    """The leaf hash of an event: its exact canonical text, UTF-8."""
    return merkle.leaf_hash(canonical.encode("utf-8"))


# --- stored hashes ---------------------------------------------------------------------------


def reader(session: Session) -> merkle.Reader:
    def read(indices: Sequence[int]) -> list[bytes]:
        if not indices:
            return []
        rows = session.exec(
            select(AuditTreeNode.idx, AuditTreeNode.hash).where(
                col(AuditTreeNode.idx).in_(list(indices))
            )
        ).all()
        found = {int(i): bytes(h) for i, h in rows}
        missing = [i for i in indices if i not in found]
        if missing:
            raise IntegrityError(f"stored audit tree hash {missing[0]} is missing")
        return [found[i] for i in indices]

    return read


def state(session: Session, *, lock: bool = False, skip_locked: bool = False) -> AuditTree | None:
    """The tree row; with ``lock`` the caller becomes the sequencer until its transaction ends
    (None with ``skip_locked`` when another one is)."""
    query = select(AuditTree).where(AuditTree.id == 1)
    if lock and is_postgres(session):
        query = query.with_for_update(skip_locked=skip_locked)
    row = session.exec(query).first()
    if row is None and not skip_locked:
        raise IntegrityError("the audit_tree row is missing: run `callvault migrate`")
    return row


def size(session: Session) -> int:
    tree = state(session)
    assert tree is not None
    return tree.size


# --- the sequencer ---------------------------------------------------------------------------


def sequence_batch(session: Session, *, limit: int = SEQUENCE_BATCH, wait: bool = True) -> int:
    """Sequence up to ``limit`` committed events in the caller's transaction; how many.

    Without ``wait`` it returns 0 at once when another sequencer holds the tree."""
    tree = state(session, lock=True, skip_locked=not wait)
    if tree is None:
        return 0
    rows = session.exec(
        select(AuditEvent.seq, AuditEvent.tenant_id, AuditEvent.canonical)
        .where(col(AuditEvent.leaf_index).is_(None))
        .order_by(col(AuditEvent.seq))
        .limit(limit)
    ).all()
    if not rows:
        return 0
    start = tree.size
    stack = merkle.Stack(start, reader(session)(merkle.Stack.indices(start)))
    first_idx = merkle.stored_hash_count(start)
    created: list[bytes] = []
    counts: Counter[str] = Counter()
    for _seq, tenant, canonical in rows:
        created += stack.append(leaf_of(canonical))
        counts[tenant_key(tenant)] += 1
    session.execute(
        sa.insert(AuditTreeNode),
        [{"idx": first_idx + i, "hash": h} for i, h in enumerate(created)],
    )
    session.execute(
        sa.update(AuditEvent),
        [{"seq": seq, "leaf_index": start + i} for i, (seq, _, _) in enumerate(rows)],
    )
    for key, n in counts.items():
        done = session.execute(
            sa.update(AuditTreeTenant)
            .where(col(AuditTreeTenant.tenant_key) == key)
            .values(leaves=AuditTreeTenant.leaves + n)
        )
        if done.rowcount == 0:  # type: ignore[attr-defined]
            session.add(AuditTreeTenant(tenant_key=key, leaves=n))
    tree.size = start + len(rows)
    session.add(tree)
    session.flush()
    return len(rows)


def sequence(db: Database, *, batch: int = SEQUENCE_BATCH, wait: bool = False) -> int:
    """Sequence every committed event, one short transaction per batch; how many."""
    total = 0
    while True:
        with db.transaction() as session:
            n = sequence_batch(session, limit=batch, wait=wait)
        total += n
        if n < batch:
            return total


def tenant_leaves(session: Session) -> dict[str, int]:
    rows = session.exec(select(AuditTreeTenant.tenant_key, AuditTreeTenant.leaves)).all()
    return {str(k): int(n) for k, n in rows if n}


# --- roots and proofs ------------------------------------------------------------------------


def _check_size(session: Session, tree_size: int) -> None:
    if tree_size < 0:
        raise TreeRangeError("tree_size must be >= 0")
    current = size(session)
    if tree_size > current:
        raise TreeSizeUnknownError(f"the audit log has {current} leaves, not {tree_size}")


def root_at(session: Session, tree_size: int) -> bytes:
    _check_size(session, tree_size)
    return merkle.root(tree_size, reader(session))


def inclusion(session: Session, *, leaf_index: int | None, tree_size: int) -> list[bytes]:
    """The inclusion path of leaf ``leaf_index`` in the tree of ``tree_size`` leaves."""
    _check_size(session, tree_size)
    if leaf_index is None or leaf_index >= tree_size:
        raise LeafNotInTreeError()
    return merkle.inclusion_proof(leaf_index, tree_size, reader(session))


def consistency(session: Session, *, first: int, second: int) -> list[bytes]:
    if not 0 <= first <= second:
        raise TreeRangeError("from must be >= 0 and not after to")
    _check_size(session, second)
    return merkle.consistency_proof(first, second, reader(session))


# --- health ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditStats:
    """What the metrics export: ``callvault_audit_tree_size``, ``..._unsequenced_events``,
    ``..._unsequenced_oldest_seconds`` and ``..._checkpoint_age_seconds``."""

    events: int
    tree_size: int
    unsequenced: int
    oldest_unsequenced_age_seconds: float | None
    last_head_age_seconds: float | None


def stats(session: Session, *, now: datetime) -> AuditStats:
    """Cheap: the tree row, the partial index over unsequenced events, the newest head."""
    tree = state(session)
    assert tree is not None
    unsequenced, oldest = session.exec(
        select(sa.func.count(), sa.func.min(AuditEvent.ts)).where(
            col(AuditEvent.leaf_index).is_(None)
        )
    ).one()
    last = session.exec(
        select(sa.func.max(AuditTreeHead.created_at)).where(
            col(AuditTreeHead.signature).is_not(None)
        )
    ).one()
    if last is None:  # before the first tree head: the newest legacy checkpoint, if any
        last = session.exec(
            select(sa.func.max(AuditCheckpoint.created_at)).where(
                col(AuditCheckpoint.signature).is_not(None)
            )
        ).one()
    return AuditStats(
        events=tree.size + int(unsequenced),
        tree_size=tree.size,
        unsequenced=int(unsequenced),
        oldest_unsequenced_age_seconds=_age(now, oldest),
        last_head_age_seconds=_age(now, last),
    )


def _age(now: datetime, then: Any) -> float | None:
    if then is None:
        return None
    if isinstance(then, str):  # SQLite aggregates come back as text, not through the column type
        then = datetime.fromisoformat(then)
    if then.tzinfo is None:
        then = then.replace(tzinfo=now.tzinfo)
    return max(0.0, (now - then).total_seconds())


def alarm_if_late(stats_now: AuditStats, *, bound_seconds: float) -> bool:
    """Log an error (once per call) when an event waited past the bound; True if so."""
    age = stats_now.oldest_unsequenced_age_seconds
    if age is None or age <= bound_seconds:
        return False
    log.error(
        "audit events left unsequenced past the bound: %d waiting, the oldest for %.0f s "
        "(bound %.0f s); is the audit-sequence job running?",
        stats_now.unsequenced, age, bound_seconds,
    )  # fmt: skip
    return True
