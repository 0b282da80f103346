"""Real worker processes on PostgreSQL + SeaweedFS: two at once never act twice, and a worker
killed (SIGKILL) at a named crash point is finished by the next run without double actions."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from tests.jobs.helpers import (
    assert_chain_ok,
    cli_env,
    decrypt,
    events,
    ingest,
    make_tenant,
    row,
    run_cli,
    start_cli,
)
from vault.context import Context
from vault.crashpoints import (
    AFTER_DEK_DESTROYED,
    AFTER_KEK_ROTATE,
    AFTER_PARTIAL_OBJECT_DELETE,
    AFTER_REWRAP,
)
from vault.crashpoints import ENV as CRASH_ENV
from vault.models import KekVersion, Recording, RecordingStatus, utcnow
from vault.storage import S3BlobStore

S = RecordingStatus
SHORT_DAYS = 0.00001  # 0.864 s
POLICY = f"""
kek_rotation_days = 7
[purposes.troubleshooting]
retention_days = {SHORT_DAYS}
max_access_minutes = 60
approvals = 1
approver_roles = ["approver"]
on_expiry = "delete"

[purposes.fraud]
retention_days = 30
max_access_minutes = 60
approvals = 1
approver_roles = ["security"]
on_expiry = "delete"
"""


@pytest.fixture
def short_ctx(make_ctx: Callable[..., Context], tmp_path: Path) -> Context:
    """PostgreSQL + SeaweedFS on the real clock, where `troubleshooting` lasts 0.864 s."""
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    return make_ctx(db="postgres", store="s3", policy_file=policy)


def wait_until_expired(recs: list[Recording]) -> None:
    due = max(r.ingested_at for r in recs) + timedelta(days=SHORT_DAYS)
    time.sleep(max(0.0, (due - utcnow()).total_seconds()) + 0.2)


def versions_of(ctx: Context, key: str) -> list[str]:
    store = ctx.store
    assert isinstance(store, S3BlobStore)
    objects = store.client.list_objects(store.bucket, prefix=key, include_version=True)
    return [str(o.version_id) for o in objects if o.object_name == key]


def assert_disposed_once(ctx: Context, recs: list[Recording]) -> None:
    for rec in recs:
        target = str(rec.id)
        assert len(events(ctx, "dek.destroy", target)) == 1, rec.id
        assert len(events(ctx, "media.destroy", target)) == 1, rec.id
        now = row(ctx, rec.id)
        assert (now.status, now.wrapped_dek, now.call_id) == (S.disposed, None, None)
        assert versions_of(ctx, rec.object_key) == []


def assert_intact(ctx: Context, rec: Recording, data: bytes) -> None:
    now = row(ctx, rec.id)
    assert now.status == S.stored and now.wrapped_dek is not None
    assert decrypt(ctx, now) == data


def test_two_worker_processes_dispose_each_recording_exactly_once(
    short_ctx: Context, tmp_path: Path
) -> None:
    ctx = short_ctx
    tenant = make_tenant(ctx)
    recs = [ingest(ctx, tenant, os.urandom(64)) for _ in range(20)]
    keep = ingest(ctx, tenant, b"kept for fraud", purposes=("fraud",))
    wait_until_expired(recs)

    env = cli_env(ctx.settings)
    workers = [start_cli(["jobs", "run", "dispose"], env, tmp_path) for _ in range(2)]
    for proc in workers:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out.startswith("dispose: ")
    assert_disposed_once(ctx, recs)
    assert len(events(ctx, "dek.destroy")) == 20 and len(events(ctx, "media.destroy")) == 20
    assert_intact(ctx, keep, b"kept for fraud")
    assert_chain_ok(ctx)


@pytest.mark.parametrize("point", [AFTER_DEK_DESTROYED, AFTER_PARTIAL_OBJECT_DELETE])
def test_disposal_killed_at_a_crash_point_is_finished_by_the_next_run(
    short_ctx: Context, tmp_path: Path, point: str
) -> None:
    ctx = short_ctx
    tenant = make_tenant(ctx)
    recs = [ingest(ctx, tenant, os.urandom(100)) for _ in range(3)]
    keep = ingest(ctx, tenant, b"must stay", purposes=("fraud", "troubleshooting"))
    for rec in recs:  # two object versions each, so a removal can stop halfway
        ctx.store.put_bytes(rec.object_key, b"an older copy left in the bucket")
    wait_until_expired(recs)

    env = cli_env(ctx.settings)
    crashed = run_cli(["jobs", "run", "dispose"], {**env, CRASH_ENV: point}, tmp_path)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    left = [len(versions_of(ctx, r.object_key)) for r in recs]
    destroyed = [row(ctx, r.id).wrapped_dek is None for r in recs]
    assert all(destroyed)  # step 1 committed for every claimed row before the crash
    if point == AFTER_PARTIAL_OBJECT_DELETE:
        assert 1 in left  # one recording lost one of its two versions, then the process died
    else:
        assert left == [2, 2, 2]

    again = run_cli(["jobs", "run", "dispose"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert_disposed_once(ctx, recs)
    assert_intact(ctx, keep, b"must stay")
    assert_chain_ok(ctx)


@pytest.mark.parametrize("point", [AFTER_KEK_ROTATE, AFTER_REWRAP])
def test_kek_cycle_killed_at_a_crash_point_is_finished_by_the_next_run(
    make_ctx: Callable[..., Context], tmp_path: Path, point: str
) -> None:
    ctx = make_ctx(db="postgres", store="s3")
    tenant = make_tenant(ctx)
    data = [os.urandom(n) for n in (10, 1000, 50_000)]
    recs = [ingest(ctx, tenant, d) for d in data]

    env = cli_env(ctx.settings)
    crashed = run_cli(["jobs", "run", "kek-cycle", "--force"], {**env, CRASH_ENV: point}, tmp_path)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    with ctx.db.session() as s:
        assert {k.version: k.retired_at for k in s.exec(select(KekVersion)).all()} == {
            1: None,
            2: None,
        }
    expected_before = 1 if point == AFTER_KEK_ROTATE else 2
    assert {row(ctx, r.id).kek_version for r in recs} == {expected_before}

    # The next run (not forced) finds the rotation done, finishes it, and does not rotate again;
    # it takes over the dead worker's lease at once.
    again = run_cli(["jobs", "run", "kek-cycle"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "no rotation due" in again.stdout and "retired: v1" in again.stdout
    assert len(events(ctx, "kek.rotate")) == 1 and len(events(ctx, "kek.retire")) == 1
    assert ctx.keys.live_versions() == [2]
    for rec, plain in zip(recs, data, strict=True):
        now = row(ctx, rec.id)
        assert now.kek_version == 2 and decrypt(ctx, now) == plain
    assert_chain_ok(ctx)
