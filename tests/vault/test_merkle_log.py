"""The sequencer and the stored tree on SQLite and PostgreSQL: batches, per-tenant counts kept as
it goes, roots and proofs read from the database, one sequencer at a time, late commits, and the
alarm for events left unsequenced."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlmodel import col, select

from jobs import tasks
from tests.support.audit_log import append, sequence
from tests.support.clock import FakeClock
from vault import audit
from vault.audit import merkle, tree
from vault.context import Context
from vault.errors import LeafNotInTreeError, TreeRangeError, TreeSizeUnknownError
from vault.models import AuditEvent, AuditTreeNode
from vault.tags import AuditAction


def leaves(ctx: Context) -> list[bytes]:
    """Leaf hashes computed here from the canonical texts, in leaf order."""
    with ctx.db.reading() as s:
        texts = s.exec(
            select(AuditEvent.canonical)
            .where(col(AuditEvent.leaf_index).is_not(None))
            .order_by(col(AuditEvent.leaf_index))
        ).all()
    return [merkle.leaf_hash(t.encode()) for t in texts]


def test_batches_store_every_subtree_and_count_tenants(ctx: Context) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    append(ctx, 7, tenants=[a, b, None])
    with ctx.db.transaction() as s:
        assert tree.sequence_batch(s, limit=3) == 3
    append(ctx, 4, start=7, tenants=[a, b, None])
    assert tree.sequence(ctx.db, batch=2, wait=True) == 8  # several batches, in seq order
    hashes = leaves(ctx)
    stack = merkle.Stack()
    expected = [h for leaf in hashes for h in stack.append(leaf)]
    with ctx.db.reading() as s:
        stored = s.exec(select(AuditTreeNode.hash).order_by(col(AuditTreeNode.idx))).all()
        assert [bytes(h) for h in stored] == expected  # exactly tlog's stored hashes
        assert tree.size(s) == 11
        assert tree.tenant_leaves(s) == {str(a): 4, str(b): 4, "none": 3}
        for n in (1, 6, 11):
            assert tree.root_at(s, n) == merkle.root(n, lambda i: [expected[j] for j in i])
        path = tree.inclusion(s, leaf_index=4, tree_size=11)
        merkle.verify_inclusion(hashes[4], 4, 11, path, stack.root())
        proof = tree.consistency(s, first=6, second=11)
        merkle.verify_consistency(6, 11, proof, tree.root_at(s, 6), stack.root())
    assert sequence(ctx) == 0  # nothing left: a no-op


def test_proofs_refuse_sizes_and_leaves_the_tree_lacks(ctx: Context) -> None:
    append(ctx, 3)
    sequence(ctx)
    with ctx.db.reading() as s:
        with pytest.raises(TreeSizeUnknownError):
            tree.inclusion(s, leaf_index=0, tree_size=4)
        with pytest.raises(LeafNotInTreeError):
            tree.inclusion(s, leaf_index=2, tree_size=2)
        with pytest.raises(LeafNotInTreeError):
            tree.inclusion(s, leaf_index=None, tree_size=3)
        with pytest.raises(TreeRangeError):
            tree.consistency(s, first=3, second=2)
        assert tree.consistency(s, first=0, second=3) == []
        assert tree.root_at(s, 0) == merkle.EMPTY_ROOT


def test_one_sequencer_at_a_time_gives_contiguous_leaves(ctx: Context) -> None:
    append(ctx, 40)
    barrier = threading.Barrier(4)
    taken: list[int] = []

    def run() -> None:
        barrier.wait()
        taken.append(tree.sequence(ctx.db, batch=5))  # SKIP LOCKED: a busy tree is left alone

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sequence(ctx)  # whatever the skipped runs left
    assert sum(taken) <= 40
    with ctx.db.reading() as s:
        got = s.exec(select(AuditEvent.leaf_index).order_by(col(AuditEvent.seq))).all()
        assert list(got) == list(range(40)) and audit.verify(s).ok


def test_a_late_commit_becomes_a_later_leaf(make_ctx: Callable[..., Context]) -> None:
    """PostgreSQL hands out seqs without a lock, so a writer can commit after a higher seq was
    sequenced: its event simply takes the next leaf (as in CT, leaf order is the log's order)."""
    ctx = make_ctx(db="postgres", clock=FakeClock())
    slow = ctx.db.session()
    with slow.begin():
        early = audit.record(slow, action=AuditAction.recording_read, actor="slow", now=ctx.now())
        append(ctx, 2)  # seqs after early's, committed first
        assert sequence(ctx) == 2
    assert sequence(ctx) == 1
    with ctx.db.reading() as s:
        rows = {e.seq: e.leaf_index for e in audit.list_events(s)}
        assert rows[early.seq] == 2 and sorted(rows.values()) == [0, 1, 2]  # type: ignore[type-var]
        assert audit.verify(s).ok
    slow.close()


def test_stats_and_the_alarm_for_events_left_unsequenced(
    ctx: Context, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    now = clock()
    with ctx.db.reading() as s:
        empty = audit.stats(s, now=now)
    assert empty == audit.AuditStats(events=0, tree_size=0, unsequenced=0,
                                     oldest_unsequenced_age_seconds=None,
                                     last_head_age_seconds=None)  # fmt: skip
    append(ctx, 3, now=now - timedelta(seconds=600))
    with ctx.db.reading() as s:
        late = audit.stats(s, now=now)
    assert (late.events, late.tree_size, late.unsequenced) == (3, 0, 3)
    assert late.oldest_unsequenced_age_seconds == 600
    with caplog.at_level(logging.ERROR, logger="callvault.audit"):
        assert tree.alarm_if_late(late, bound_seconds=300)
    assert "unsequenced past the bound: 3 waiting, the oldest for 600 s" in caplog.text
    assert not tree.alarm_if_late(late, bound_seconds=900)

    summary = tasks.run("audit-sequence", ctx, now)  # the job sequences, then checks the bound
    assert summary == "3 audit event(s) sequenced"
    tasks.run("audit-checkpoint", ctx, now)
    with ctx.db.reading() as s:
        after = audit.stats(s, now=now + timedelta(seconds=30))
    assert (after.events, after.tree_size, after.unsequenced) == (3, 3, 0)
    assert after.oldest_unsequenced_age_seconds is None and after.last_head_age_seconds == 30


def test_the_job_raises_the_alarm_when_events_stay_behind(
    ctx: Context, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = ctx.now()
    append(ctx, 2, now=now - timedelta(minutes=10))
    monkeypatch.setattr(tree, "sequence", lambda *_, **__: 0)  # a sequencer that never gets in
    with caplog.at_level(logging.ERROR, logger="callvault.audit"):
        summary = tasks.run("audit-sequence", ctx, now)
    assert summary == "0 audit event(s) sequenced; ALARM: events past the bound"
    assert "2 waiting, the oldest for 600 s (bound 300 s)" in caplog.text


def test_a_downgrade_keeps_every_event_and_the_upgrade_takes_them_back_in(ctx: Context) -> None:
    from alembic import command

    import vault.db

    append(ctx, 3)
    sequence(ctx)
    append(ctx, 2)  # events of the Merkle era: no prev_hash
    cfg = vault.db._alembic_config(ctx.db.engine)
    command.downgrade(cfg, "0008-1")  # to just before the Merkle log, whatever follows it
    command.upgrade(cfg, "head")
    assert sequence(ctx) == 5  # the tree starts over from the events as they are
    with ctx.db.reading() as s:
        result = audit.verify(s)
    assert result.ok and result.checked == 5 and result.tree_size == 5, result.reason
