"""The audit events on SQLite and PostgreSQL: canonical bytes, lock-free appends, verification of
events and of the Merkle tree over them, tampering, the append-only trigger, the legacy hash
chain, and the unauthenticated-denial limiter."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.audit_log import append, legacy_chain, legacy_event, sequence, tamper
from tests.support.clock import FakeClock
from vault import audit
from vault.audit import chain, denials, walk
from vault.context import Context
from vault.errors import InvalidInputError
from vault.tags import AuditAction, Outcome

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def verify(ctx: Context) -> audit.VerifyResult:
    with ctx.db.reading() as s:
        return audit.verify(s)


def leaf_indices(ctx: Context) -> dict[int, int | None]:
    with ctx.db.reading() as s:
        return {e.seq: e.leaf_index for e in audit.list_events(s, limit=1000)}


# --- canonical form ------------------------------------------------------------------------------


def test_canonical_bytes_are_exactly_as_specified(ctx: Context) -> None:
    tenant, grant = uuid.uuid4(), uuid.uuid4()
    now = datetime(2026, 11, 25, 13, 0, 0, 5, tzinfo=timezone(timedelta(hours=1)))
    with ctx.db.transaction() as s:
        ev = audit.record(
            s, action=AuditAction.access_request, actor="p-1", now=now, tenant_id=tenant,
            target="r-1", purpose="fraud", grant_id=grant,
            details={"reason": "Überprüfung/調査", "b": 1, "a": [1.5, None, True]},
        )  # fmt: skip
    # Sorted keys, no spaces, UTF-8 kept, UTC microseconds; no previous hash (not a chain).
    expected = (
        '{"action":"access.request","actor":"p-1","chain_id":"global",'
        '"details":{"a":[1.5,null,true],"b":1,"reason":"Überprüfung/調査"},'
        f'"grant_id":"{grant}","outcome":"ok","purpose":"fraud",'
        f'"seq":1,"target":"r-1","tenant_id":"{tenant}","ts":"2026-11-25T12:00:00.000005Z"}}'
    )
    assert ev.canonical == expected and ev.prev_hash is None and ev.leaf_index is None
    assert ev.hash == hashlib.sha256(expected.encode("utf-8")).hexdigest()
    with ctx.db.transaction() as s:
        stored = audit.list_events(s)[0]
        assert stored.canonical == expected  # stored verbatim, non-ASCII kept
        public = audit.to_public(stored)
    assert public.details == {"a": [1.5, None, True], "b": 1, "reason": "Überprüfung/調査"}
    assert public.ts == datetime(2026, 11, 25, 12, 0, 0, 5, tzinfo=UTC)
    assert public.canonical == expected and public.leaf_index is None
    sequence(ctx)
    with ctx.db.reading() as s:
        assert audit.to_public(audit.list_events(s)[0]).leaf_index == 0


@settings(max_examples=50, deadline=None)
@given(
    details=st.dictionaries(
        st.sampled_from(["seq", "target", "x", '"seq":0,', "ü"]),
        st.recursive(
            st.none() | st.integers() | st.text(max_size=8),
            lambda inner: st.dictionaries(st.sampled_from(["seq", "a"]), inner, max_size=2),
            max_leaves=4,
        ),
        max_size=3,
    ),
    target=st.none() | st.text(max_size=10),
    seq=st.integers(1, 2**62),
)
def test_the_seq_is_spliced_into_exactly_the_canonical_text(
    details: dict[str, object], target: str | None, seq: int
) -> None:
    """The database supplies the seq inside the INSERT; the text around it must be exactly the
    canonical form whatever the details hold (nested "seq" keys, quotes, non-ASCII)."""
    event = {"chain_id": "global", "ts": "t", "actor": None, "action": "a", "outcome": "ok",
             "tenant_id": None, "target": target, "purpose": None, "grant_id": None,
             "details": details}  # fmt: skip
    head, tail = chain._split(event)
    assert f"{head}{seq}{tail}" == audit.canonical_json({**event, "seq": seq})


def test_ts_format_on_whole_seconds() -> None:
    assert audit.format_ts(T0) == "2026-11-25T12:00:00.000000Z"
    with pytest.raises(ValueError):
        audit.format_ts(datetime(2026, 1, 1))  # naive on purpose


@pytest.mark.parametrize(
    "details",
    [
        {"call_id": "c-1"},
        {"sha256": "ab" * 32},
        {"plaintext_sha256": "ab" * 32},
        {"filename": "alice.mp4"},
        {"selector": {"tenant": "t", "Call_ID": "c-1"}},
        {"items": [{"ok": 1}, {"sha256": "x"}]},
        {"when": datetime(2026, 1, 1, tzinfo=UTC)},
        {"nan": float("nan")},
        {1: "non-string key"},
    ],
)
def test_forbidden_or_non_json_details_refused(ctx: Context, details: dict) -> None:
    with pytest.raises(ValueError), ctx.db.transaction() as s:
        audit.record(s, action=AuditAction.hold_create, actor="a", now=T0, details=details)
    with ctx.db.transaction() as s:
        assert audit.head(s) == (0, audit.GENESIS_HASH)  # nothing was written


def test_ciphertext_hash_allowed(ctx: Context) -> None:
    with ctx.db.transaction() as s:
        audit.record(
            s,
            action=AuditAction.dek_destroy,
            actor="system:jobs",
            now=T0,
            details={"ciphertext_sha256": "cd" * 32},
        )
    assert verify(ctx).ok


# --- verification and tampering ------------------------------------------------------------------


def test_events_verify_list_and_are_sequenced_in_seq_order(ctx: Context) -> None:
    empty = verify(ctx)
    assert (empty.ok, empty.checked, empty.head_seq, empty.tree_size) == (True, 0, 0, 0)
    append(ctx, 30, now=T0)
    result = verify(ctx)  # unsequenced events verify as events
    assert result.ok and result.checked == 30 and result.head_seq == 30 and result.tree_size == 0
    assert sequence(ctx) == 30
    result = verify(ctx)
    assert result.ok and result.tree_size == 30 and result.reason is None
    assert leaf_indices(ctx) == {seq: seq - 1 for seq in range(1, 31)}
    with ctx.db.transaction() as s:
        page = audit.list_events(s, after_seq=10, limit=5)
        assert [e.seq for e in page] == [11, 12, 13, 14, 15]


def test_verify_streams_across_batches(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(walk, "VERIFY_BATCH", 4)
    append(ctx, 10)
    sequence(ctx)
    result = verify(ctx)
    assert result.ok and result.checked == 10 and result.tree_size == 10


def test_edited_column_is_named(ctx: Context) -> None:
    append(ctx, 8)
    sequence(ctx)
    tamper(ctx, "UPDATE audit_event SET actor = 'mallory' WHERE seq = 5")
    result = verify(ctx)
    assert not result.ok and result.first_bad_seq == 5 and "actor" in (result.reason or "")
    assert result.checked == 4 and result.head_seq == 4


def test_edited_ts_column_is_named(ctx: Context) -> None:
    append(ctx, 4)
    with ctx.db.transaction() as s:
        ts = audit.list_events(s, after_seq=2, limit=1)[0].ts
    forged = (ts + timedelta(microseconds=1)).replace(
        tzinfo=None if not ctx.db.is_postgres else UTC
    )
    tamper(ctx, ("UPDATE audit_event SET ts = :ts WHERE seq = 3", {"ts": forged}))
    result = verify(ctx)
    assert result.first_bad_seq == 3 and "ts" in (result.reason or "")


def test_edited_canonical_is_named(ctx: Context) -> None:
    append(ctx, 8)
    tamper(
        ctx,
        "UPDATE audit_event SET canonical = replace(canonical, 'troubleshooting', 'fraud') "
        "WHERE seq = 6",
    )
    result = verify(ctx)
    assert result.first_bad_seq == 6 and "hash" in (result.reason or "")


def test_edited_canonical_with_recomputed_hash_differs_from_its_leaf(ctx: Context) -> None:
    append(ctx, 8)
    sequence(ctx)
    with ctx.db.transaction() as s:
        ev = audit.list_events(s, after_seq=5, limit=1)[0]
    forged = ev.canonical.replace('"i":5', '"i":50')
    tamper(ctx, ("UPDATE audit_event SET canonical = :c, hash = :h WHERE seq = 6",
                 {"c": forged, "h": hashlib.sha256(forged.encode()).hexdigest()}))  # fmt: skip
    result = verify(ctx)  # a sound event on its own, but not the one the tree took in
    assert result.first_bad_seq == 6 and "differs from leaf 5" in (result.reason or "")


def test_unparseable_canonical_is_named(ctx: Context) -> None:
    append(ctx, 3)
    garbage = "not json {"
    tamper(ctx, ("UPDATE audit_event SET canonical = :c, hash = :h WHERE seq = 2",
                 {"c": garbage, "h": hashlib.sha256(garbage.encode()).hexdigest()}))  # fmt: skip
    result = verify(ctx)
    assert result.first_bad_seq == 2 and "JSON" in (result.reason or "")
    with ctx.db.transaction() as s:  # listing still works on a tampered row
        assert audit.to_public(audit.list_events(s, after_seq=1, limit=1)[0]).details == {}


@pytest.mark.parametrize(("where", "bad"), [("seq = 4", 4), ("seq <= 2", 1), ("seq > 7", 8)])
def test_deleted_sequenced_rows_are_named(ctx: Context, where: str, bad: int) -> None:
    """Seqs may have gaps (rolled-back appends), so the tree is what misses a deleted event:
    in the middle, at the start, or a cut tail."""
    append(ctx, 10)
    sequence(ctx)
    tamper(ctx, f"DELETE FROM audit_event WHERE {where}")
    result = verify(ctx)
    assert not result.ok and result.first_bad_seq == bad and "deleted" in (result.reason or "")


def test_a_cut_tail_with_the_tree_cut_too_needs_a_signed_head(ctx: Context) -> None:
    # Events, stored hashes and size all cut back consistently: only a signed tree head over
    # the longer log (test_checkpoints.py) can tell.
    cut = [str(e.tenant_id) for e in append(ctx, 10)[7:]]  # each event has its own tenant
    sequence(ctx)
    tamper(
        ctx,
        "DELETE FROM audit_event WHERE seq > 7",
        "DELETE FROM audit_tree_node WHERE idx >= 11",  # stored_hash_count(7)
        "UPDATE audit_tree SET size = 7",
        *[("DELETE FROM audit_tree_tenant WHERE tenant_key = :k", {"k": k}) for k in cut],
    )
    result = verify(ctx)
    assert result.ok and result.head_seq == 7 and result.tree_size == 7, result.reason


def test_swapped_rows_are_named(ctx: Context) -> None:
    append(ctx, 8)
    sequence(ctx)
    tamper(
        ctx,
        "UPDATE audit_event SET seq = -3 WHERE seq = 3",
        "UPDATE audit_event SET seq = 3 WHERE seq = 6",
        "UPDATE audit_event SET seq = 6 WHERE seq = -3",
    )
    result = verify(ctx)
    assert result.first_bad_seq == 3 and "seq" in (result.reason or "")


def test_swapped_leaves_are_named(ctx: Context) -> None:
    append(ctx, 8)
    sequence(ctx)
    tamper(
        ctx,
        "UPDATE audit_event SET leaf_index = -1 WHERE seq = 3",
        "UPDATE audit_event SET leaf_index = 2 WHERE seq = 6",
        "UPDATE audit_event SET leaf_index = 5 WHERE seq = 3",
    )
    result = verify(ctx)
    assert result.first_bad_seq == 6 and "differs from leaf 2" in (result.reason or "")


def test_append_only_trigger_allows_only_setting_a_leaf_once(ctx: Context) -> None:
    append(ctx, 3)
    refused = [
        "UPDATE audit_event SET actor = 'mallory' WHERE seq = 2",
        "UPDATE audit_event SET leaf_index = 7, actor = 'mallory' WHERE seq = 2",
        "DELETE FROM audit_event WHERE seq = 2",
    ]
    for sql in refused:
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), ctx.db.engine.begin() as c:
            c.exec_driver_sql(sql)
    sequence(ctx)
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), ctx.db.engine.begin() as c:
        c.exec_driver_sql("UPDATE audit_event SET leaf_index = 9 WHERE seq = 2")  # once only
    result = verify(ctx)
    assert result.ok and result.checked == 3 and leaf_indices(ctx) == {1: 0, 2: 1, 3: 2}


def test_rolled_back_event_leaves_no_trace(ctx: Context) -> None:
    append(ctx, 2)
    with pytest.raises(RuntimeError), ctx.db.transaction() as s:
        audit.record(s, action=AuditAction.grant_create, actor="a", now=T0)
        raise RuntimeError("the state change failed")
    append(ctx, 1, start=2)
    sequence(ctx)
    result = verify(ctx)
    assert result.ok and result.checked == 3 and result.tree_size == 3


_ONLY_IF = sa.select(sa.literal(1)).where(sa.bindparam("flag", type_=sa.Boolean()))


@pytest.mark.parametrize("autocommit", [False, True])
def test_an_event_only_if_its_condition_holds(ctx: Context, autocommit: bool) -> None:
    """``only_if``: written while the select returns a row, else ConditionUnmet and nothing
    written; alone in its unit it is one statement, committed in autocommit on PostgreSQL."""
    from vault.db import single_statement_connection

    for flag in (True, False, True):
        try:
            with ctx.db.transaction() as s:
                if autocommit:
                    single_statement_connection(s)
                audit.record(
                    s, action=AuditAction.grant_create, actor="a", now=T0,
                    only_if=(_ONLY_IF, {"flag": flag}),
                )  # fmt: skip
        except audit.ConditionUnmet:
            assert not flag
        else:
            assert flag
    sequence(ctx)
    result = verify(ctx)
    assert result.ok and result.checked == 2


def test_concurrent_appends_take_no_lock_and_all_become_leaves(ctx: Context) -> None:
    threads, per_thread = 4, 25
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                with ctx.db.transaction() as s:
                    audit.record(s, action=AuditAction.recording_read, actor=f"thread-{t}",
                                 now=T0, details={"i": i})  # fmt: skip
                if i % 10 == 0:
                    sequence(ctx)  # the sequencer runs while writers write
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert not errors
    sequence(ctx)
    result = verify(ctx)
    assert result.ok and result.checked == threads * per_thread == result.tree_size
    leaves = leaf_indices(ctx)
    assert sorted(leaves.values()) == list(range(threads * per_thread))  # type: ignore[type-var]
    with ctx.db.transaction() as s:
        events = audit.list_events(s, limit=1000)
    actors = [json.loads(e.canonical)["actor"] for e in events]
    assert all(actors.count(f"thread-{t}") == per_thread for t in range(threads))


def test_list_limits(ctx: Context) -> None:
    with ctx.db.transaction() as s:
        for kwargs in ({"limit": 0}, {"limit": 1001}, {"after_seq": -1}):
            with pytest.raises(InvalidInputError):
                audit.list_events(s, **kwargs)  # type: ignore[arg-type]


# --- the legacy hash chain ---------------------------------------------------------------------


def test_legacy_chain_keeps_its_bytes_and_becomes_the_first_leaves(ctx: Context) -> None:
    chain = legacy_chain(ctx, 5)
    new = append(ctx, 3)
    assert [e.seq for e in new] == [6, 7, 8]  # the sequence continues past the chain
    sequence(ctx)
    result = verify(ctx)
    assert result.ok and result.checked == 8 and result.tree_size == 8
    assert result.legacy_head == (5, chain[-1].hash)
    assert leaf_indices(ctx) == {seq: seq - 1 for seq in range(1, 9)}
    with ctx.db.reading() as s:
        first = audit.list_events(s, limit=1)[0]
    assert first.canonical == chain[0].canonical and '"prev_hash":"' + "0" * 64 in first.canonical


@pytest.mark.parametrize(
    ("statements", "bad", "reason"),
    [
        (["DELETE FROM audit_event WHERE seq = 3"], 4, "seq gap"),
        (["DELETE FROM audit_event WHERE seq <= 2"], 1, "seq gap"),
        (["UPDATE audit_event SET seq = -2 WHERE seq = 2",
          "UPDATE audit_event SET seq = 2 WHERE seq = 4",
          "UPDATE audit_event SET seq = 4 WHERE seq = -2"], 2, "seq"),
        (["DELETE FROM audit_event WHERE seq = 5"], 5, "legacy chain ends at seq 4"),
    ],
)  # fmt: skip
def test_legacy_chain_tampering_is_named(
    ctx: Context, statements: list[str], bad: int, reason: str
) -> None:
    legacy_chain(ctx, 5)
    append(ctx, 2)  # unsequenced: only the chain itself (and its recorded head) can tell
    tamper(ctx, *statements)
    result = verify(ctx)
    assert not result.ok and result.first_bad_seq == bad and reason in (result.reason or "")


def test_legacy_edit_with_recomputed_hash_breaks_the_next_link(ctx: Context) -> None:
    chain = legacy_chain(ctx, 5)
    forged = chain[2].canonical.replace('"legacy":3', '"legacy":30')
    tamper(ctx, ("UPDATE audit_event SET canonical = :c, hash = :h WHERE seq = 3",
                 {"c": forged, "h": hashlib.sha256(forged.encode()).hexdigest()}))  # fmt: skip
    result = verify(ctx)
    assert result.first_bad_seq == 4 and "prev_hash" in (result.reason or "")


def test_a_chained_event_after_the_chain_ended_is_refused(ctx: Context) -> None:
    legacy_chain(ctx, 3)
    append(ctx, 2)
    with ctx.db.reading() as s:
        last = audit.list_events(s, order="desc", limit=1)[0]
    late = legacy_event(last.seq + 1, last.hash, T0)
    with ctx.db.transaction() as s:
        s.add(late)
    result = verify(ctx)
    assert result.first_bad_seq == late.seq and "after the chain ended" in (result.reason or "")


# --- unauthenticated denials ---------------------------------------------------------------------


def test_limiter_windows() -> None:
    lim = audit.DenialLimiter(burst=3, window=timedelta(minutes=1))
    verdicts = [lim.note("k", T0 + timedelta(seconds=i)) for i in range(10)]
    assert verdicts == [True] * 3 + [False] * 7
    assert lim.drain(T0 + timedelta(seconds=30)) == []  # still open
    assert lim.note("k", T0 + timedelta(seconds=61))  # a new window, a new burst
    assert lim.drain(T0 + timedelta(seconds=61)) == [
        ("k", 7, T0, T0 + timedelta(minutes=1)),
    ]
    lim.note("k", T0 + timedelta(seconds=62))
    lim.note("k", T0 + timedelta(seconds=63))
    lim.note("k", T0 + timedelta(seconds=64))  # the 4th in this window: suppressed
    now = T0 + timedelta(seconds=70)
    assert lim.drain(now, force=True) == [("k", 1, T0 + timedelta(seconds=61), now)]
    assert lim.drain(now, force=True) == []


def test_limiter_bounds_many_distinct_keys() -> None:
    lim = audit.DenialLimiter(burst=2, window=timedelta(minutes=1), max_keys=8, global_burst=5)
    allowed = sum(lim.note(f"key-{i}", T0) for i in range(10_000))
    assert allowed == 5
    drained = lim.drain(T0, force=True)
    assert len(drained) <= 8
    assert sum(count for _, count, _, _ in drained) == 10_000 - 5
    assert denials.OVERFLOW_KEY in {key for key, *_ in drained}


def test_denial_flood_writes_few_events(ctx: Context, clock: FakeClock) -> None:
    lim = audit.DenialLimiter(burst=5, window=timedelta(seconds=60))
    for i in range(1000):
        key = "missing" if i % 2 else "cvk_AAAAAAAAAAAA"
        audit.record_denial(ctx.db, lim, key=key, reason="invalid", now=clock.advance(seconds=0.05))
    # 50 s of flood: one window per key, still open.
    written = audit.flush_denials(ctx.db, lim, now=clock.advance(seconds=60))
    assert written == 2
    with ctx.db.transaction() as s:
        events = audit.list_events(s, limit=1000)
        result = audit.verify(s)
    assert result.ok
    assert len(events) <= 2 * 5 + 2
    individual = [e for e in events if e.action == AuditAction.auth_denied]
    aggregates = [
        audit.to_public(e) for e in events if e.action == AuditAction.auth_denied_aggregate
    ]
    assert len(individual) == 10 and all(e.outcome == Outcome.denied for e in individual)
    assert sum(a.details["count"] for a in aggregates) == 1000 - 10
    assert {a.details["key"] for a in aggregates} == {"missing", "cvk_AAAAAAAAAAAA"}
    assert all(a.details["window_end"].endswith("Z") for a in aggregates)


def test_denial_aggregates_written_when_the_next_window_opens(
    ctx: Context, clock: FakeClock
) -> None:
    lim = audit.DenialLimiter(burst=1, window=timedelta(seconds=10))
    for _ in range(20):
        audit.record_denial(
            ctx.db, lim, key="missing", reason="missing", now=clock.advance(seconds=0.1)
        )
    audit.record_denial(ctx.db, lim, key="missing", reason="missing", now=clock.advance(seconds=30))
    with ctx.db.transaction() as s:
        actions = [e.action for e in audit.list_events(s)]
    assert actions == ["auth.denied", "auth.denied", "auth.denied.aggregate"]
