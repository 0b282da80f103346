"""The integrity scrub, on both backends: intact objects pass, tampered ones raise an alarm."""

from __future__ import annotations

import hashlib
import os

from tests.jobs.helpers import (
    assert_chain_ok,
    events,
    ingest,
    make_tenant,
    object_bytes,
    row,
    set_columns,
)
from tests.support.clock import FakeClock
from vault.context import Context
from vault.models import RecordingStatus
from vault.recordings.scrub import scrub

S = RecordingStatus


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def test_scrub_detects_tampered_objects(ctx: Context, clock: FakeClock) -> None:
    tenant = make_tenant(ctx)
    big = ingest(ctx, tenant, os.urandom(2_200_000))  # three segments
    intact = ingest(ctx, tenant, os.urandom(500))
    swapped = ingest(ctx, tenant, os.urandom(500))
    forged = ingest(ctx, tenant, os.urandom(500))

    first = scrub(ctx, now=clock(), sample=10)
    assert (first.sampled, first.ok, first.failed, first.errors) == (4, 4, [], 0)
    assert scrub(ctx, now=clock(), sample=2).sampled == 2

    # Swapped content: the row now names an object whose bytes differ (hash check).
    body = object_bytes(ctx, swapped)
    version = ctx.store.put_bytes(swapped.object_key, flip(body, len(body) - 5))
    set_columns(ctx, swapped.id, version_id=version)
    # Forged: bytes *and* the row's hash changed together; the segment tag still fails.
    body = flip(object_bytes(ctx, forged), 200)
    version = ctx.store.put_bytes(forged.object_key, body)
    set_columns(
        ctx, forged.id, version_id=version, ciphertext_sha256=hashlib.sha256(body).hexdigest()
    )

    clock.advance(minutes=1)
    result = scrub(ctx, now=clock(), sample=10, rng=os.urandom)
    assert sorted(result.failed) == sorted([swapped.id, forged.id])
    assert (result.sampled, result.ok, result.errors) == (4, 2, 0)
    for rec in (swapped, forged):
        assert row(ctx, rec.id).status == S.integrity_failed
    for rec in (big, intact):
        assert row(ctx, rec.id).status == S.stored
    alarms = {e.target: e.canonical for e in events(ctx, "integrity.alarm")}
    assert "ciphertext-hash-mismatch" in alarms[str(swapped.id)]
    assert "segment-authentication-failed" in alarms[str(forged.id)]
    assert len(events(ctx, "integrity.scrub")) == 3

    # Flagged rows are not sampled again; the intact ones still pass.
    again = scrub(ctx, now=clock(), sample=10)
    assert (again.sampled, again.ok, again.failed) == (2, 2, [])
    assert_chain_ok(ctx)
