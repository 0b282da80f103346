"""The KEK lifecycle: rotation when due, rewrap of every held DEK, retirement, the shared lock
and the lease; on SQLite + local keyring, PostgreSQL + SeaweedFS, and OpenBao Transit."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlmodel import select

from crypto.errors import KeyProviderError as ProviderError
from crypto.keys.transit import TransitKeyProvider
from tests.conftest import Bao
from tests.jobs.helpers import (
    assert_chain_ok,
    decrypt,
    events,
    ingest,
    make_tenant,
    object_bytes,
    row,
    set_columns,
)
from tests.support.clock import FakeClock
from vault import kek as keys
from vault import kek_versions, leases, lifecycle
from vault.context import Context
from vault.errors import ConflictError, KeyDestroyedError, KeyProviderUnavailableError
from vault.keys import Keys
from vault.models import KekVersion, Recording, RecordingStatus

S = RecordingStatus


def versions(ctx: Context) -> dict[int, bool]:
    """KEK version -> retired, as the DB records them."""
    with ctx.db.session() as s:
        return {k.version: k.retired_at is not None for k in s.exec(select(KekVersion)).all()}


def test_rotates_only_when_due_and_a_restart_neither_skips_nor_repeats(
    ctx: Context, clock: FakeClock
) -> None:
    tenant = make_tenant(ctx)
    recs = [ingest(ctx, tenant, os.urandom(n)) for n in (10, 3000)]
    assert {r.kek_version for r in recs} == {1}

    first = keys.kek_cycle(ctx, now=clock(), holder="w1")
    assert (first.rotated_to, first.rewrapped, first.retired, first.newest) == (None, 0, [], 1)
    clock.advance(days=6.9)
    assert keys.kek_cycle(ctx, now=clock(), holder="w1").rotated_to is None

    clock.advance(days=0.2)  # v1 is now older than kek_rotation_days = 7
    due = keys.kek_cycle(ctx, now=clock(), holder="w1")
    assert (due.rotated_to, due.rewrapped, due.retired, due.newest) == (2, 2, [1], 2)
    # A restart (another worker, same moment): nothing left to do, no second rotation.
    again = keys.kek_cycle(ctx, now=clock(), holder="w2")
    assert (again.rotated_to, again.adopted, again.rewrapped, again.retired) == (None, [], 0, [])
    clock.advance(days=6)
    assert keys.kek_cycle(ctx, now=clock(), holder="w2").rotated_to is None

    # --force rotates now, whatever the age; the run after it does not rotate again.
    forced = keys.kek_cycle(ctx, now=clock(), force=True, holder="w1")
    assert (forced.rotated_to, forced.rewrapped, forced.retired) == (3, 2, [2])
    assert keys.kek_cycle(ctx, now=clock(), holder="w2").rotated_to is None
    assert ctx.keys.current_version() == 3 and ctx.keys.live_versions() == [3]
    assert versions(ctx) == {1: True, 2: True, 3: False}
    rotations = [e.canonical for e in events(ctx, "kek.rotate")]
    assert len(rotations) == 2 and '"version":2' in rotations[0] and '"version":3' in rotations[1]
    assert len(events(ctx, "kek.retire")) == 2
    for rec in recs:
        assert row(ctx, rec.id).kek_version == 3
    assert_chain_ok(ctx)


def _every_status_rewrapped_and_backups_shredded(ctx: Context, clock: FakeClock) -> None:
    tenant = make_tenant(ctx)
    plain = [os.urandom(n) for n in (1, 100, 5000, 70_000, 2000)]
    recs = [ingest(ctx, tenant, p) for p in plain]
    statuses = [S.pending, S.failed, S.integrity_failed, S.disposing, S.stored]
    for rec, status in zip(recs, statuses, strict=True):
        set_columns(ctx, rec.id, status=status)  # the wrapped DEK stays in the row
    # A disposed recording: its row lost the DEK, but a DB backup still holds a copy.
    gone = ingest(ctx, tenant, b"shredded")
    set_columns(ctx, gone.id, wrapped_dek=None, status=S.disposed)
    backups = {r.id: r.wrapped_dek for r in (*recs, gone)}
    media = {r.id: (r.version_id, object_bytes(ctx, r)) for r in recs}
    for rec in (*recs, gone):  # before the cycle the copies still open
        ctx.keys.unwrap_dek(
            backups[rec.id] or "", tenant_id=rec.tenant_id, recording_id=rec.id
        )

    result = keys.kek_cycle(ctx, now=clock(), force=True, holder="test")
    assert (result.rotated_to, result.rewrapped, result.rewrap_failed) == (2, 5, 0)
    assert result.retired == [1]

    for rec, data, status in zip(recs, plain, statuses, strict=True):
        now = row(ctx, rec.id)
        assert now.status == status and now.kek_version == 2
        assert now.wrapped_dek != backups[rec.id]
        # Media untouched: same version, same bytes, and the rewrapped DEK opens it.
        assert (now.version_id, object_bytes(ctx, now)) == media[rec.id]
        assert decrypt(ctx, now) == data
    for rec in (*recs, gone):  # after it, every copy of an old wrap is useless
        with pytest.raises(KeyDestroyedError):
            decrypt(ctx, rec, wrapped_dek=backups[rec.id])
    rewraps = events(ctx, "kek.rewrap")
    assert sum(e.canonical.count('"count":5') for e in rewraps) == 1
    assert all("wrapped" not in e.canonical for e in rewraps)  # counts only, no key material
    assert versions(ctx) == {1: True, 2: False}
    assert_chain_ok(ctx)


def test_every_row_is_rewrapped_whatever_its_status_and_old_copies_stop_opening(
    ctx: Context, clock: FakeClock
) -> None:
    _every_status_rewrapped_and_backups_shredded(ctx, clock)


def test_kek_cycle_on_openbao_transit(
    make_ctx: Callable[..., Context], bao: Bao, clock: FakeClock
) -> None:
    ctx = make_ctx(db="sqlite", store="local", clock=clock)
    ctx.keys = Keys(TransitKeyProvider(bao.url, bao.token, key_prefix=f"t{uuid.uuid4().hex[:12]}"))
    _every_status_rewrapped_and_backups_shredded(ctx, clock)
    assert ctx.keys.live_versions() == [2]
    again = keys.kek_cycle(ctx, now=clock(), holder="other")
    assert (again.rotated_to, again.rewrapped, again.retired) == (None, 0, [])


def test_a_provider_rotation_the_db_missed_is_adopted_not_repeated(
    ctx: Context, clock: FakeClock
) -> None:
    tenant = make_tenant(ctx)
    rec = ingest(ctx, tenant, b"abc")
    ctx.keys.rotate()  # as if the worker died between the provider's rotation and the DB row

    result = keys.kek_cycle(ctx, now=clock(), force=True, holder="restarted")
    assert (result.rotated_to, result.adopted, result.rewrapped, result.retired) == (
        None, [2], 1, [1],
    )  # fmt: skip
    assert ctx.keys.current_version() == 2
    assert len(events(ctx, "kek.rotate")) == 1
    assert row(ctx, rec.id).kek_version == 2

    # An ingest that finds the provider ahead of the DB records (and audits) that version, and
    # wraps with it; the cycle then treats it as the due rotation.
    ctx.keys.rotate()
    newer = ingest(ctx, tenant, b"def")
    assert newer.kek_version == 3 and versions(ctx) == {1: True, 2: False, 3: False}
    assert len(events(ctx, "kek.rotate")) == 2
    result = keys.kek_cycle(ctx, now=clock(), holder="w")
    assert (result.rotated_to, result.rewrapped, result.retired) == (None, 1, [2])
    assert decrypt(ctx, row(ctx, rec.id)) == b"abc"
    assert_chain_ok(ctx)


def test_a_wrap_whose_version_was_retired_before_its_row_committed_is_wrapped_again(
    ctx: Context, clock: FakeClock
) -> None:
    """No transaction is held across the provider call: a DEK wrapped under v1, whose version
    is retired (destroyed) before the row commits, is found out by the commit's check under the
    shared KEK lock and wrapped again under the live version; the row never holds a wrap that
    no longer opens."""
    tenant = make_tenant(ctx)
    rid, dek = uuid.uuid4(), os.urandom(32)
    early = ctx.keys.wrap_dek(dek, tenant_id=tenant.id, recording_id=rid)
    assert early.kek_version == 1
    clock.advance(days=8)
    result = keys.kek_cycle(ctx, now=clock(), holder="w")  # rotates to v2, destroys v1
    assert (result.rotated_to, result.retired) == (2, [1])

    def write(session: Any, wrapped: Any) -> int:
        now = clock()
        recording = Recording(
            id=rid, tenant_id=tenant.id, content_type="video/webm",
            object_key=f"{tenant.id}/{rid}", wrapped_dek=ctx.keys.encode(wrapped),
            kek_version=wrapped.kek_version, recorded_at=now, ingested_at=now, updated_at=now,
        )  # fmt: skip
        lifecycle.create(session, recording)
        return int(wrapped.kek_version)

    version = kek_versions.store_new_dek(
        ctx, dek=dek, tenant_id=tenant.id, recording_id=rid, write=write, wrapped=early
    )
    assert version == 2 and row(ctx, rid).kek_version == 2
    stored = row(ctx, rid).wrapped_dek or ""
    assert ctx.keys.unwrap_dek(stored, tenant_id=tenant.id, recording_id=rid) == dek
    with pytest.raises(KeyDestroyedError):
        ctx.keys.unwrap_dek(ctx.keys.encode(early), tenant_id=tenant.id, recording_id=rid)
    assert_chain_ok(ctx)


def test_retirement_marks_versions_before_destroying_them(
    ctx: Context, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retirement marks a version ``retiring`` (committed) before the provider destroys it,
    outside any transaction. If the destruction fails, the version stays marked (no new wrap may
    commit under it) and the next run destroys and records it, once."""
    tenant = make_tenant(ctx)
    rec = ingest(ctx, tenant, b"x")
    keys.rotate(ctx, now=clock())

    def down(version: int) -> None:
        raise ProviderError("provider down")

    monkeypatch.setattr(ctx.keys.provider, "retire", down)
    with pytest.raises(KeyProviderUnavailableError):
        keys.kek_cycle(ctx, now=clock(), holder="w")  # rewraps to v2, marks v1, cannot destroy
    with ctx.db.session() as s:
        v1 = s.get(KekVersion, 1)
        assert v1 is not None and v1.retiring_at is not None and v1.retired_at is None
    assert 1 in ctx.keys.live_versions() and row(ctx, rec.id).kek_version == 2
    monkeypatch.undo()

    assert keys.retire_unused(ctx, now=clock()) == [1]
    assert 1 not in ctx.keys.live_versions()
    assert versions(ctx) == {1: True, 2: False}
    assert len(events(ctx, "kek.retire")) == 1
    assert keys.retire_unused(ctx, now=clock()) == []
    assert decrypt(ctx, row(ctx, rec.id)) == b"x"

def test_the_lease_admits_one_worker(ctx: Context, clock: FakeClock) -> None:
    assert leases.acquire_lease(ctx.db, keys.KEK_LEASE, holder="other", now=clock())
    skipped = keys.kek_cycle(ctx, now=clock(), force=True, holder="me")
    assert not skipped.acquired and "lease" in skipped.summary()
    assert ctx.keys.current_version() == 1
    with pytest.raises(ConflictError, match="kek-cycle is running"):
        keys.rotate(ctx, now=clock())
    clock.advance(minutes=11)  # the lease expired
    assert keys.kek_cycle(ctx, now=clock(), force=True, holder="me").rotated_to == 2

    # A holder on this host whose process has died is taken over at once.
    dead = subprocess.Popen(["true"])
    dead.wait()
    mine = leases.process_holder().split(":")
    ghost = ":".join([*mine[:2], str(dead.pid), "deadbeef"])
    assert leases.acquire_lease(ctx.db, keys.KEK_LEASE, holder=ghost, now=clock())
    assert leases.acquire_lease(ctx.db, keys.KEK_LEASE, holder=leases.process_holder(), now=clock())
    # ... but a live holder keeps it until it expires.
    assert not leases.acquire_lease(ctx.db, keys.KEK_LEASE, holder="x:y:1:z", now=clock())


def test_keys_rotate_and_retire_by_hand(ctx: Context, clock: FakeClock) -> None:
    tenant = make_tenant(ctx)
    rec = ingest(ctx, tenant, b"by hand")
    assert keys.rotate(ctx, now=clock()) == 2
    assert keys.retire_unused(ctx, now=clock()) == []  # v1 still wraps a live DEK
    keys.kek_cycle(ctx, now=clock(), holder="w")
    assert row(ctx, rec.id).kek_version == 2 and versions(ctx) == {1: True, 2: False}
    assert keys.retire_unused(ctx, now=clock()) == []  # idempotent
