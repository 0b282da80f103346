"""Retention on both backends: purpose expiry, crypto-shredding into tombstones, crash leftovers,
and a hypothesis property test of the retention invariants (issue #5).

The helpers here are shared with test_holds.py and test_erasure.py.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import col, select

from tests.support.clock import FakeClock
from tests.vault.test_recordings import (
    CALL_ID,
    actor_for,
    all_objects,
    assert_chain_ok,
    decrypt,
    do_ingest,
    events,
    make_tenant,
)
from vault import kek as keys
from vault.access import grants
from vault.api.problems import status_of
from vault.authz import Actor
from vault.context import Context
from vault.errors import GoneError
from vault.identity import authentication, principals
from vault.identity.owners import owner_of
from vault.models import (
    AuditEvent,
    ErasureItem,
    ErasureRequest,
    HoldMembership,
    LegalHold,
    Recording,
    RecordingPurpose,
    RecordingStatus,
    Role,
    Tenant,
)
from vault.recordings import metadata as recordings
from vault.retention import disposal as retention
from vault.retention import erasure, expiry, holds
from vault.storage import S3BlobStore

S = RecordingStatus
DAY = timedelta(days=1)

# --- shared helpers -------------------------------------------------------------------------------


def privacy(tenant: Tenant | None = None) -> Actor:
    """A privacy officer: all tenants, or scoped to one."""
    return Actor(
        id=uuid.uuid4(), name=f"privacy-{uuid.uuid4().hex[:6]}", role=Role.privacy,
        owner="dpo@example.com", all_tenants=tenant is None,
        tenant_ids=frozenset({tenant.id}) if tenant else frozenset(),
    )  # fmt: skip


def principal(ctx: Context, tenant: Tenant | None, role: Role) -> Actor:
    """A real principal row (grants and reviews reference it), as the API would see it."""
    name = f"{role}-{uuid.uuid4().hex[:8]}"
    owner = owner_of(ctx.keys, f"{name}@example.com")
    with ctx.db.transaction() as s:
        _, key = principals.add_principal(
            s, actor=Actor.operator(), name=name, role=role, owner=owner,
            tenants=[tenant.name] if tenant else [], all_tenants=tenant is None, now=ctx.now(),
        )  # fmt: skip
        return authentication.authenticate(s, api_key=key, now=ctx.now())


def ingest(
    ctx: Context, tenant: Tenant, *, purposes: tuple[str, ...] = ("troubleshooting",), **kw: Any
) -> Recording:
    kw.setdefault("call_id", CALL_ID)
    return do_ingest(
        ctx, actor_for(tenant), tenant.name, [b"tiny body ", uuid.uuid4().bytes],
        purposes=list(purposes), **kw,
    )  # fmt: skip


def row(ctx: Context, rid: uuid.UUID) -> Recording:
    with ctx.db.session() as s:
        rec = s.get(Recording, rid)
        assert rec is not None
        return rec


def hold(ctx: Context, actor: Actor | None = None, **selector: Any) -> LegalHold:
    with ctx.db.transaction() as s:
        return holds.create_hold(
            s, actor=actor or privacy(), store=ctx.store, case_ref="CASE-1",
            reason="litigation", now=ctx.now(), **selector,
        )  # fmt: skip


def release(ctx: Context, hold_id: uuid.UUID) -> LegalHold:
    with ctx.db.transaction() as s:
        return holds.release_hold(
            s, actor=privacy(), store=ctx.store, hold_id=hold_id, reason="case closed",
            now=ctx.now(),
        )  # fmt: skip


def kek_cycle(ctx: Context, now: datetime, *, force: bool = False) -> bool:
    """The real kek-cycle job: rotate when due (or forced), rewrap every DEK, retire old
    versions. True when it rotated."""
    result = keys.kek_cycle(ctx, now=now, force=force, holder="test-retention")
    assert result.acquired
    return result.rotated_to is not None


def run_jobs(ctx: Context, now: datetime) -> None:
    """One worker period, in the order `jobs run all` would use."""
    expiry.expire_purposes(ctx, now=now)
    erasure.process(ctx, now=now)
    retention.dispose(ctx, now=now)
    kek_cycle(ctx, now)
    erasure.process(ctx, now=now)


def audit_texts(ctx: Context) -> list[str]:
    with ctx.db.session() as s:
        return list(s.exec(select(AuditEvent.canonical)).all())


def media_objects(store: Any) -> list[Any]:
    """Every object but the signed retention records, which stay (COMPLIANCE retention)."""
    root = getattr(store, "root", None)

    def key(o: Any) -> str:
        return str(o.relative_to(root)) if root is not None else str(o.object_name)

    return [o for o in all_objects(store) if not key(o).startswith("retention/")]


def versions(ctx: Context, key: str) -> list[Any]:
    assert isinstance(ctx.store, S3BlobStore)
    return [
        o
        for o in ctx.store.client.list_objects(ctx.store.bucket, prefix=key, include_version=True)
        if o.object_name == key
    ]


# --- purpose expiry -------------------------------------------------------------------------------


def test_expire_purposes_then_dispose_only_when_none_is_active(
    ctx: Context, clock: FakeClock
) -> None:
    tenant = make_tenant(ctx)
    rec = ingest(ctx, tenant, purposes=("troubleshooting", "fraud"))  # 30 and 90 days
    clock.advance(days=31)
    assert expiry.expire_purposes(ctx, now=clock()) == 1
    assert expiry.expire_purposes(ctx, now=clock()) == 0  # idempotent
    with ctx.db.session() as s:
        p = s.get(RecordingPurpose, (rec.id, "troubleshooting"))
        assert p is not None and p.ended_at == p.expires_at and p.ended_reason == "expired"
    assert retention.dispose(ctx, now=clock()) == retention.DisposeResult(0, 0)
    assert row(ctx, rec.id).status == S.stored

    clock.advance(days=60)
    assert retention.dispose(ctx, now=clock()) == retention.DisposeResult(1, 0)
    assert expiry.expire_purposes(ctx, now=clock()) == 1  # still marked, after disposal too
    assert [e.purpose for e in events(ctx, "purpose.expire")] == ["troubleshooting", "fraud"]
    assert_chain_ok(ctx)


# --- crypto-shredding -----------------------------------------------------------------------------


def test_disposal_leaves_a_tombstone_and_gone_content(ctx: Context, clock: FakeClock) -> None:
    tenant = make_tenant(ctx)
    rec = ingest(ctx, tenant)
    keep = ingest(ctx, tenant, purposes=("fraud",))
    engineer = principal(ctx, tenant, Role.engineer)
    with ctx.db.transaction() as s:
        grant = grants.issue_grant(
            s, principal_id=engineer.id, owner=engineer.owner, purpose="troubleshooting",
            recording_ids=[rec.id], not_before=clock(), expires_at=clock() + 40 * DAY,
        )  # fmt: skip
        grants.authorize_read(
            s, actor=engineer, recording_id=rec.id, grant_id=grant.id, now=clock()
        )
    before = row(ctx, rec.id)

    clock.advance(days=30)  # expires_at == now: no longer active
    result = retention.dispose(ctx, now=clock())
    assert result == retention.DisposeResult(disposed=1, deferred=0)
    tomb = row(ctx, rec.id)
    assert tomb.status == S.disposed and tomb.disposal_reason == "retention expired"
    assert tomb.call_id is None and tomb.sha256 is None and tomb.wrapped_dek is None
    assert tomb.ciphertext_sha256 == before.ciphertext_sha256 and tomb.ciphertext_sha256
    assert tomb.dek_destroyed_at == tomb.disposed_at == clock()
    assert (tomb.tenant_id, tomb.recorded_at, tomb.ingested_at, tomb.kek_version) == (
        before.tenant_id, before.recorded_at, before.ingested_at, before.kek_version,
    )  # fmt: skip
    assert not ctx.store.exists(before.object_key)
    media = media_objects(ctx.store)
    assert all(keep.object_key in str(getattr(o, "object_name", o)) for o in media)
    assert decrypt(ctx, row(ctx, keep.id)).startswith(b"tiny body ")

    with ctx.db.session() as s:
        with pytest.raises(GoneError) as gone:
            grants.authorize_read(s, actor=engineer, recording_id=rec.id, grant_id=grant.id,
                                  now=clock())  # fmt: skip
        assert status_of(gone.value) == 410
        assert not grants.still_valid(s, grant_id=grant.id, recording_id=rec.id, now=clock())
        meta = recordings.get_recording(s, actor=engineer, recording_id=rec.id, now=clock())
    assert meta.status == S.disposed and meta.call_id is None and meta.sha256 is None
    assert meta.ciphertext_sha256 == before.ciphertext_sha256
    assert meta.disposal_reason == "retention expired" and meta.disposed_at == clock()

    assert retention.dispose(ctx, now=clock()) == retention.DisposeResult(0, 0)
    assert [e.target for e in events(ctx, "dek.destroy")] == [str(rec.id)]
    assert [e.target for e in events(ctx, "media.destroy")] == [str(rec.id)]
    assert not any(CALL_ID in t for t in audit_texts(ctx))
    assert_chain_ok(ctx)


def test_a_crash_after_the_dek_is_destroyed_is_finished_once(
    ctx: Context, clock: FakeClock
) -> None:
    tenant = make_tenant(ctx)
    recs = [ingest(ctx, tenant) for _ in range(3)]
    clock.advance(days=31)
    # Step 1 alone, as if the worker died right after its commit.
    claimed = retention.claim(ctx, now=clock(), only=None, n=2)
    assert len(claimed) == 2
    for rid in claimed:
        half = row(ctx, rid)
        assert half.status == S.disposing and half.wrapped_dek is None and half.call_id is None
        assert ctx.store.exists(half.object_key)  # unreadable: its DEK is gone
    clock.advance(minutes=1)
    assert retention.dispose(ctx, now=clock()) == retention.DisposeResult(3, 0)
    assert {row(ctx, r.id).status for r in recs} == {S.disposed}
    assert media_objects(ctx.store) == []
    assert len(events(ctx, "dek.destroy")) == 3 and len(events(ctx, "media.destroy")) == 3
    assert retention.dispose(ctx, now=clock()) == retention.DisposeResult(0, 0)
    assert_chain_ok(ctx)


def test_partial_version_removal_and_stale_flags_are_finished(
    make_ctx: Callable[..., Context], clock: FakeClock
) -> None:
    ctx = make_ctx(db="postgres", store="s3", clock=clock)
    assert isinstance(ctx.store, S3BlobStore)
    tenant = make_tenant(ctx)
    rec, flagged = ingest(ctx, tenant), ingest(ctx, tenant)
    # A second version of the same key (an overwrite from outside callvault).
    ctx.store.client.put_object(ctx.store.bucket, rec.object_key, _bytes(b"junk"), 4)
    assert len(versions(ctx, rec.object_key)) == 2
    # A stale Object Lock flag with no hold behind it (a release whose S3 call failed).
    assert ctx.store.set_legal_hold(flagged.object_key, on=True) == 1
    clock.advance(days=31)
    assert set(retention.claim(ctx, now=clock(), only=None, n=10)) == {rec.id, flagged.id}
    first = versions(ctx, rec.object_key)[0]  # a crash after part of the versions went
    ctx.store.client.remove_object(ctx.store.bucket, rec.object_key, version_id=first.version_id)

    assert retention.dispose(ctx, now=clock()) == retention.DisposeResult(2, 0)
    assert versions(ctx, rec.object_key) == [] and versions(ctx, flagged.object_key) == []
    assert row(ctx, rec.id).status == row(ctx, flagged.id).status == S.disposed
    assert_chain_ok(ctx)


def _bytes(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


# --- the property test ----------------------------------------------------------------------------

FAST_POLICY = """
erasure_deadline_days = 5
kek_rotation_days = 1
[purposes.troubleshooting]
retention_days = 2
max_access_minutes = 60
approvals = 1
approver_roles = ["approver"]
on_expiry = "delete"
[purposes.transcription]
retention_days = 0.5
max_access_minutes = 60
approvals = 1
approver_roles = ["approver"]
on_expiry = "delete"
[purposes.fraud]
retention_days = 4
max_access_minutes = 60
approvals = 1
approver_roles = ["security"]
on_expiry = "delete"
"""

PURPOSES = ("troubleshooting", "transcription", "fraud")
INGEST = st.tuples(
    st.just("ingest"), st.sets(st.sampled_from(PURPOSES), min_size=1), st.integers(0, 2)
)
OPS = st.lists(
    st.one_of(
        INGEST,
        INGEST,  # twice: histories need recordings more than anything else
        st.tuples(st.just("hold"), st.sampled_from(["ids", "call", "tenant"]), st.integers(0, 9)),
        st.tuples(st.just("release"), st.integers(0, 9)),
        st.tuples(st.just("erase"), st.sampled_from(["call", "ids"]), st.integers(0, 9)),
        st.tuples(st.just("advance"), st.integers(1, 36)),  # hours; the worker runs after each
        st.tuples(st.just("jobs")),
    ),
    min_size=6,
    max_size=16,
)  # fmt: skip


def _check_invariants(ctx: Context, tenant: Tenant, now: datetime) -> None:
    with ctx.db.session() as s:
        recs = s.exec(select(Recording).where(Recording.tenant_id == tenant.id)).all()
        ids = [r.id for r in recs]
        purposes: dict[uuid.UUID, list[RecordingPurpose]] = {rid: [] for rid in ids}
        for p in s.exec(
            select(RecordingPurpose).where(col(RecordingPurpose.recording_id).in_(ids))
        ):
            purposes[p.recording_id].append(p)
        spans: dict[uuid.UUID, list[tuple[datetime, datetime | None]]] = {rid: [] for rid in ids}
        for m, h in s.exec(
            select(HoldMembership, LegalHold)
            .join(LegalHold, col(LegalHold.id) == col(HoldMembership.hold_id))
            .where(col(HoldMembership.recording_id).in_(ids))
        ):
            spans[m.recording_id].append((m.created_at, h.released_at))
        erased = set(
            s.exec(select(ErasureItem.recording_id).where(col(ErasureItem.recording_id).in_(ids)))
        )
        active = holds.active_holds_of(s, ids)
        for rec in recs:
            ps = purposes[rec.id]
            for p in ps:  # only expiry or an erasure ends a purpose here
                assert (
                    p.ended_at is None
                    or p.ended_at == p.expires_at
                    or (p.ended_reason or "").startswith("erasure ")
                )
            if rec.dek_destroyed_at is not None:
                t = rec.dek_destroyed_at
                # never while a hold was active
                assert not any(c <= t and (r is None or r > t) for c, r in spans[rec.id]), rec.id
                # never before every purpose had ended or expired (erasure ends them)
                assert all(min(p.expires_at, p.ended_at or p.expires_at) <= t for p in ps)
                assert rec.status == S.disposed  # nothing is left half-way
                assert rec.call_id is None and rec.sha256 is None
            else:
                due = not any(p.active_at(now) for p in ps)
                # every unheld recording due at this run was disposed by it
                assert not (due and rec.id not in active), rec.id
                assert rec.id not in erased or rec.id in active
        for req in s.exec(
            select(ErasureRequest).where(
                sa.exists().where(
                    ErasureItem.request_id == ErasureRequest.id,
                    col(ErasureItem.recording_id).in_(ids),
                )
            )
        ):
            items = s.exec(select(ErasureItem).where(ErasureItem.request_id == req.id)).all()
            if any(i.deferred_by for i in items):
                continue  # a hold deferred it: no deadline while held
            if req.status == "complete":
                assert req.completed_at is not None and req.completed_at <= req.due_at
                assert req.call_id is None
            else:
                assert now < req.due_at, (req.status, req.due_at, now)


def test_retention_invariants_hold_for_random_histories(
    make_ctx: Callable[..., Context], backend: tuple[str, str], tmp_path: Path
) -> None:
    policy = tmp_path / "fast-policy.toml"
    policy.write_text(FAST_POLICY)
    clock = FakeClock()
    ctx = make_ctx(db=backend[0], store=backend[1], clock=clock, policy_file=policy)
    counter = itertools.count()
    kek_cycle(ctx, clock())

    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(ops=OPS)
    def run(ops: list[tuple[Any, ...]]) -> None:
        n = next(counter)
        tenant = make_tenant(ctx, f"t{n}")
        rec_ids: list[uuid.UUID] = []
        hold_ids: list[uuid.UUID] = []
        for op in ops:
            kind = op[0]
            if kind == "ingest":
                rec = ingest(ctx, tenant, purposes=tuple(sorted(op[1])), call_id=f"x{n}-c{op[2]}")
                rec_ids.append(rec.id)
            elif kind == "hold":
                if op[1] == "ids" and not rec_ids:
                    continue
                selector: dict[str, Any] = (
                    {"recording_ids": [rec_ids[op[2] % len(rec_ids)]]} if op[1] == "ids"
                    else {"tenant": tenant.name, "call_id": f"x{n}-c{op[2] % 3}"} if op[1] == "call"
                    else {"tenant": tenant.name}
                )  # fmt: skip
                hold_ids.append(hold(ctx, **selector).id)
            elif kind == "release":
                with ctx.db.session() as s:
                    open_ = [h for h in hold_ids if s.get(LegalHold, h).released_at is None]  # type: ignore[union-attr]
                if open_:
                    release(ctx, open_[op[1] % len(open_)])
            elif kind == "erase":
                if op[1] == "ids" and not rec_ids:
                    continue
                selector = (
                    {"recording_ids": [rec_ids[op[2] % len(rec_ids)]]} if op[1] == "ids"
                    else {"tenant": tenant.name, "call_id": f"x{n}-c{op[2] % 3}"}
                )  # fmt: skip
                with ctx.db.transaction() as s:
                    erasure.create_request(
                        s, actor=privacy(), policy=ctx.policy, reason="subject request",
                        now=clock(), **selector,
                    )  # fmt: skip
            else:
                if kind == "advance":
                    clock.advance(hours=op[1])
                run_jobs(ctx, clock())
                _check_invariants(ctx, tenant, clock())
        clock.advance(hours=1)
        run_jobs(ctx, clock())
        _check_invariants(ctx, tenant, clock())
        texts = audit_texts(ctx)
        assert not any(f"x{n}-c" in t for t in texts)  # no call id in the audit log, ever
        clock.advance(days=3)  # the next example starts on a fresh day

    run()
    assert_chain_ok(ctx)
