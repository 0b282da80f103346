"""The audit chain on SQLite and PostgreSQL: canonical bytes, verification, tampering, the
append-only trigger, concurrent appends, and the unauthenticated-denial limiter."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from tests.support.clock import FakeClock
from vault import audit
from vault.audit import chain, denials
from vault.context import Context
from vault.errors import InvalidInputError
from vault.tags import AuditAction, Outcome

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def append(ctx: Context, n: int, *, start: int = 0) -> None:
    for i in range(start, start + n):
        with ctx.db.transaction() as s:
            audit.record(
                s,
                action=AuditAction.recording_read,
                actor=f"principal-{i % 3}",
                now=T0 + timedelta(seconds=i),
                tenant_id=uuid.uuid4(),
                target=str(uuid.uuid4()),
                purpose="troubleshooting",
                details={"i": i, "range": [0, i * 10]},
            )


def verify(ctx: Context) -> audit.VerifyResult:
    with ctx.db.transaction() as s:
        return audit.verify(s)


def tamper(ctx: Context, *statements: str | tuple[str, dict[str, object]]) -> None:
    """Run SQL as an attacker with DB superuser powers: the append-only trigger is bypassed
    (replica mode on PostgreSQL, for this transaction only; dropped triggers on SQLite)."""
    with ctx.db.engine.begin() as conn:
        if ctx.db.is_postgres:
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        else:
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_event_no_update")
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_event_no_delete")
        for stmt in statements:
            sql, params = (stmt, {}) if isinstance(stmt, str) else stmt
            conn.execute(sa.text(sql), params)


# --- canonical form ------------------------------------------------------------------------------


def test_canonical_bytes_are_exactly_as_specified(ctx: Context) -> None:
    tenant, grant = uuid.uuid4(), uuid.uuid4()
    now = datetime(2026, 11, 25, 13, 0, 0, 5, tzinfo=timezone(timedelta(hours=1)))
    with ctx.db.transaction() as s:
        ev = audit.record(
            s,
            action=AuditAction.access_request,
            actor="p-1",
            now=now,
            tenant_id=tenant,
            target="r-1",
            purpose="fraud",
            grant_id=grant,
            details={"reason": "Überprüfung/調査", "b": 1, "a": [1.5, None, True]},
        )
    expected = (
        '{"action":"access.request","actor":"p-1","chain_id":"global",'
        '"details":{"a":[1.5,null,true],"b":1,"reason":"Überprüfung/調査"},'
        f'"grant_id":"{grant}","outcome":"ok","prev_hash":"{"0" * 64}","purpose":"fraud",'
        f'"seq":1,"target":"r-1","tenant_id":"{tenant}","ts":"2026-11-25T12:00:00.000005Z"}}'
    )
    assert ev.canonical == expected
    assert ev.hash == hashlib.sha256(expected.encode("utf-8")).hexdigest()
    with ctx.db.transaction() as s:
        stored = audit.list_events(s)[0]
        assert stored.canonical == expected  # stored verbatim, non-ASCII kept
        public = audit.to_public(stored)
    assert public.details == {"a": [1.5, None, True], "b": 1, "reason": "Überprüfung/調査"}
    assert public.ts == datetime(2026, 11, 25, 12, 0, 0, 5, tzinfo=UTC)


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
        assert audit.head(s) == (0, audit.GENESIS_HASH)


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


def test_chain_of_events_verifies_and_lists(ctx: Context) -> None:
    empty = verify(ctx)
    assert (empty.ok, empty.checked, empty.head_seq, empty.head_hash) == (
        True,
        0,
        0,
        audit.GENESIS_HASH,
    )
    append(ctx, 30)
    result = verify(ctx)
    assert result.ok and result.checked == 30 and result.head_seq == 30
    assert result.first_bad_seq is None and result.reason is None
    with ctx.db.transaction() as s:
        assert audit.head(s) == (30, result.head_hash)
        page = audit.list_events(s, after_seq=10, limit=5)
        assert [e.seq for e in page] == [11, 12, 13, 14, 15]
        assert page[0].prev_hash == audit.list_events(s, after_seq=9, limit=1)[0].hash


def test_verify_streams_across_batches(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chain, "VERIFY_BATCH", 4)
    append(ctx, 10)
    assert verify(ctx).checked == 10


def test_edited_column_is_named(ctx: Context) -> None:
    append(ctx, 8)
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


def test_edited_canonical_with_recomputed_hash_breaks_the_next_link(ctx: Context) -> None:
    append(ctx, 8)
    with ctx.db.transaction() as s:
        ev = audit.list_events(s, after_seq=5, limit=1)[0]
    forged = ev.canonical.replace('"i":5', '"i":50')
    tamper(
        ctx,
        (
            "UPDATE audit_event SET canonical = :c, hash = :h WHERE seq = 6",
            {"c": forged, "h": hashlib.sha256(forged.encode()).hexdigest()},
        ),
    )
    result = verify(ctx)
    assert result.first_bad_seq == 7 and "prev_hash" in (result.reason or "")


def test_unparseable_canonical_is_named(ctx: Context) -> None:
    append(ctx, 3)
    garbage = "not json {"
    tamper(
        ctx,
        (
            "UPDATE audit_event SET canonical = :c, hash = :h WHERE seq = 2",
            {"c": garbage, "h": hashlib.sha256(garbage.encode()).hexdigest()},
        ),
    )
    result = verify(ctx)
    assert result.first_bad_seq == 2 and "JSON" in (result.reason or "")
    with ctx.db.transaction() as s:  # listing still works on a tampered row
        assert audit.to_public(audit.list_events(s, after_seq=1, limit=1)[0]).details == {}


def test_deleted_middle_row_is_named(ctx: Context) -> None:
    append(ctx, 10)
    tamper(ctx, "DELETE FROM audit_event WHERE seq = 4")
    result = verify(ctx)
    assert result.first_bad_seq == 5 and "gap" in (result.reason or "")
    assert result.head_seq == 3


def test_deleted_first_rows_are_named(ctx: Context) -> None:
    append(ctx, 5)
    tamper(ctx, "DELETE FROM audit_event WHERE seq <= 2")
    result = verify(ctx)
    assert not result.ok and result.first_bad_seq == 1 and result.checked == 0


def test_truncated_tail_is_not_detected_without_checkpoints(ctx: Context) -> None:
    # The chain alone cannot tell a truncated tail from a shorter log. Signed checkpoints over
    # the head (issue 4) catch it: verify will then compare against the last signed head.
    append(ctx, 10)
    tamper(ctx, "DELETE FROM audit_event WHERE seq > 7")
    result = verify(ctx)
    assert result.ok and result.head_seq == 7 and result.checked == 7


def test_swapped_rows_are_named(ctx: Context) -> None:
    append(ctx, 8)
    tamper(
        ctx,
        "UPDATE audit_event SET seq = -3 WHERE seq = 3",
        "UPDATE audit_event SET seq = 3 WHERE seq = 6",
        "UPDATE audit_event SET seq = 6 WHERE seq = -3",
    )
    result = verify(ctx)
    assert result.first_bad_seq == 3 and "seq" in (result.reason or "")


def test_append_only_trigger_refuses_update_and_delete(ctx: Context) -> None:
    append(ctx, 3)
    for sql in (
        "UPDATE audit_event SET actor = 'mallory' WHERE seq = 2",
        "DELETE FROM audit_event WHERE seq = 2",
    ):
        with (
            pytest.raises(sa.exc.DBAPIError, match="append-only"),
            ctx.db.engine.begin() as conn,
        ):
            conn.exec_driver_sql(sql)
    assert verify(ctx).checked == 3


def test_rolled_back_event_leaves_no_trace(ctx: Context) -> None:
    append(ctx, 2)
    with pytest.raises(RuntimeError), ctx.db.transaction() as s:
        audit.record(s, action=AuditAction.grant_create, actor="a", now=T0)
        raise RuntimeError("the state change failed")
    append(ctx, 1, start=2)
    assert verify(ctx).checked == 3


def test_concurrent_appends_make_a_gap_free_chain(ctx: Context) -> None:
    threads, per_thread = 4, 25
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                with ctx.db.transaction() as s:
                    audit.record(
                        s,
                        action=AuditAction.recording_read,
                        actor=f"thread-{t}",
                        now=T0,
                        details={"i": i},
                    )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert not errors
    result = verify(ctx)
    assert result.ok and result.checked == threads * per_thread == result.head_seq
    with ctx.db.transaction() as s:
        events = audit.list_events(s, limit=1000)
    actors = [json.loads(e.canonical)["actor"] for e in events]
    assert all(actors.count(f"thread-{t}") == per_thread for t in range(threads))


def test_list_limits(ctx: Context) -> None:
    with ctx.db.transaction() as s:
        for kwargs in ({"limit": 0}, {"limit": 1001}, {"after_seq": -1}):
            with pytest.raises(InvalidInputError):
                audit.list_events(s, **kwargs)  # type: ignore[arg-type]


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
