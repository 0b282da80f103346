"""Legal holds on both backends: they block disposal, stack, catch later ingests, mirror to S3
Object Lock on every version, and win the race against a running disposal on PostgreSQL."""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import minio
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from minio.error import S3Error

from tests.support.clock import FakeClock
from tests.vault.test_recordings import (
    CALL_ID,
    actor_for,
    assert_chain_ok,
    events,
    make_tenant,
)
from tests.vault.test_retention import (
    audit_texts,
    hold,
    ingest,
    privacy,
    release,
    row,
    versions,
)
from vault.app import create_app
from vault.authz import Actor
from vault.context import Context
from vault.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from vault.identity import principals
from vault.identity.owners import owner_of
from vault.models import RecordingStatus, Role
from vault.recordings import metadata as recordings
from vault.retention import disposal as retention
from vault.retention import expiry, holds, holds_mirror
from vault.setup import initialise
from vault.storage import S3BlobStore

S = RecordingStatus
Result = retention.DisposeResult
_SECOND = timedelta(seconds=1)


def flags(ctx: Context, key: str) -> list[bool]:
    """The S3 legal-hold flag of every version ([] where the store has no versions)."""
    if not isinstance(ctx.store, S3BlobStore):
        return []
    client, bucket = ctx.store.client, ctx.store.bucket

    def flag(version_id: str | None) -> bool:
        try:
            return client.is_object_legal_hold_enabled(bucket, key, version_id=version_id)
        except S3Error as exc:
            if exc.code == "NoSuchObjectLegalHold":  # never set at all
                return False
            raise

    return [flag(v.version_id) for v in versions(ctx, key)]


def holds_of(ctx: Context, rid: uuid.UUID) -> list[uuid.UUID]:
    with ctx.db.session() as s:
        return recordings.get_recording(s, actor=privacy(), recording_id=rid, now=ctx.now()).holds


# --- rules ---------------------------------------------------------------------------------------


def test_hold_input_permission_and_scope(ctx: Context) -> None:
    acme, other = make_tenant(ctx, "acme"), make_tenant(ctx, "other")
    rec = ingest(ctx, acme)
    cases: list[tuple[type[Exception], Actor, dict[str, Any]]] = [
        (InvalidInputError, privacy(), {"case_ref": " ", "recording_ids": [rec.id]}),
        (InvalidInputError, privacy(), {"reason": "", "recording_ids": [rec.id]}),
        (InvalidInputError, privacy(), {}),  # no selector at all
        (PermissionDeniedError, actor_for(acme, Role.engineer), {"recording_ids": [rec.id]}),
        (PermissionDeniedError, privacy(other), {"tenant": "acme"}),
        (PermissionDeniedError, privacy(other), {"tenant": "nonexistent"}),
        (PermissionDeniedError, privacy(acme), {"call_id": CALL_ID}),  # spans every tenant
        (NotFoundError, privacy(other), {"recording_ids": [rec.id]}),
        (NotFoundError, privacy(), {"recording_ids": [uuid.uuid4()]}),
    ]
    for error, actor, kw in cases:
        args = {"case_ref": "CASE-7", "reason": "litigation", **kw}
        with ctx.db.transaction() as s, pytest.raises(error):
            holds.create_hold(s, actor=actor, store=ctx.store, now=ctx.now(), **args)
    assert events(ctx, "hold.create") == []

    h = hold(ctx, actor=privacy(acme), recording_ids=[rec.id])
    with ctx.db.transaction() as s, pytest.raises(NotFoundError):
        holds.release_hold(s, actor=privacy(other), store=ctx.store, hold_id=h.id, reason="x",
                           now=ctx.now())  # fmt: skip
    release(ctx, h.id)
    with pytest.raises(ConflictError):
        release(ctx, h.id)
    assert_chain_ok(ctx)


# --- holds block disposal ------------------------------------------------------------------------


def test_held_recording_is_never_disposed_until_released(ctx: Context, clock: FakeClock) -> None:
    tenant = make_tenant(ctx)
    held, free = ingest(ctx, tenant), ingest(ctx, tenant)
    h = hold(ctx, recording_ids=[held.id])
    assert holds_of(ctx, held.id) == [h.id] and holds_of(ctx, free.id) == []

    for _ in range(3):  # months go by: the hold keeps it, and the deferral is audited once
        clock.advance(days=31)
        expiry.expire_purposes(ctx, now=clock())
        result = retention.dispose(ctx, now=clock())
        assert row(ctx, held.id).status == S.stored and row(ctx, held.id).wrapped_dek
    assert row(ctx, free.id).status == S.disposed
    assert result == Result(disposed=0, deferred=1)
    deferred = events(ctx, "disposal.deferred")
    assert [(e.target, e.tenant_id) for e in deferred] == [(str(held.id), tenant.id)]
    assert h.id.hex in deferred[0].canonical.replace("-", "")

    release(ctx, h.id)
    assert holds_of(ctx, held.id) == []
    assert retention.dispose(ctx, now=clock()) == Result(disposed=1, deferred=0)
    assert row(ctx, held.id).status == S.disposed
    assert not any(CALL_ID in t for t in audit_texts(ctx))
    assert_chain_ok(ctx)


def test_holds_stack_and_the_s3_flag_follows_the_last_one(ctx: Context, clock: FakeClock) -> None:
    tenant = make_tenant(ctx)
    rec = ingest(ctx, tenant)
    s3 = isinstance(ctx.store, S3BlobStore)
    first = hold(ctx, recording_ids=[rec.id])
    clock.advance(minutes=1)
    second = hold(ctx, tenant=tenant.name, call_id=CALL_ID)
    assert holds_of(ctx, rec.id) == [first.id, second.id]
    assert flags(ctx, rec.object_key) == ([True] if s3 else [])
    clock.advance(days=40)
    assert retention.dispose(ctx, now=clock()) == Result(disposed=0, deferred=1)
    assert len(events(ctx, "disposal.deferred")) == 2  # once per hold

    release(ctx, first.id)
    assert holds_of(ctx, rec.id) == [second.id]
    assert flags(ctx, rec.object_key) == ([True] if s3 else [])  # the other hold still counts
    assert retention.dispose(ctx, now=clock()) == Result(disposed=0, deferred=1)

    release(ctx, second.id)
    assert flags(ctx, rec.object_key) == ([False] if s3 else [])
    assert retention.dispose(ctx, now=clock()) == Result(disposed=1, deferred=0)
    assert len(events(ctx, "disposal.deferred")) == 2  # and never again
    assert not any(CALL_ID in t for t in audit_texts(ctx))
    assert_chain_ok(ctx)


def test_later_ingests_matching_an_open_hold_are_held(ctx: Context, clock: FakeClock) -> None:
    tenant, other = make_tenant(ctx, "acme"), make_tenant(ctx, "other")
    by_call = hold(ctx, tenant=tenant.name, call_id="call-later")
    start = clock()
    by_range = hold(ctx, recorded_from=start, recorded_to=start + 3600 * _SECOND)
    clock.advance(hours=2)

    late = ingest(ctx, tenant, call_id="call-later")
    in_range = ingest(ctx, other, call_id="x", recorded_at=start + 600 * _SECOND)
    outside = ingest(ctx, other, call_id="x", recorded_at=start + 7200 * _SECOND)
    elsewhere = ingest(ctx, other, call_id="call-later", recorded_at=start - _SECOND)
    assert holds_of(ctx, late.id) == [by_call.id]
    assert holds_of(ctx, in_range.id) == [by_range.id]
    assert holds_of(ctx, outside.id) == holds_of(ctx, elsewhere.id) == []
    if isinstance(ctx.store, S3BlobStore):  # mirrored once the object exists
        assert flags(ctx, late.object_key) == flags(ctx, in_range.object_key) == [True]
        assert flags(ctx, outside.object_key) == [False]

    release(ctx, by_call.id)
    after = ingest(ctx, tenant, call_id="call-later")
    assert holds_of(ctx, after.id) == []
    clock.advance(days=31)
    result = retention.dispose(ctx, now=clock())
    assert result == Result(disposed=4, deferred=1)
    assert row(ctx, in_range.id).status == S.stored
    assert_chain_ok(ctx)


# --- S3 Object Lock ------------------------------------------------------------------------------


def test_object_lock_is_set_on_every_version_and_refuses_outsiders(
    make_ctx: Callable[..., Context], clock: FakeClock, s3_admin: minio.Minio
) -> None:
    ctx = make_ctx(db="sqlite", store="s3", clock=clock)
    assert isinstance(ctx.store, S3BlobStore)
    tenant = make_tenant(ctx)
    rec = ingest(ctx, tenant)
    bucket, key = ctx.store.bucket, rec.object_key
    s3_admin.put_object(bucket, key, io.BytesIO(b"overwrite"), 9)  # a second version
    h = hold(ctx, recording_ids=[rec.id])
    vs = versions(ctx, key)
    assert len(vs) == 2
    for v in vs:
        assert s3_admin.is_object_legal_hold_enabled(bucket, key, version_id=v.version_id)
        # Someone holding the S3 credential tries to delete behind callvault's back.
        with pytest.raises(S3Error) as refused:
            s3_admin.remove_object(bucket, key, version_id=v.version_id)
        assert refused.value.code == "AccessDenied"
    assert len(versions(ctx, key)) == 2
    # A flag lost behind callvault's back (or never set: the store was down) is re-applied.
    s3_admin.disable_object_legal_hold(bucket, key, version_id=vs[0].version_id)
    assert sorted(flags(ctx, key)) == [False, True]
    assert holds_mirror.sync_object_locks(ctx) == 2 and flags(ctx, key) == [True, True]

    release(ctx, h.id)
    assert flags(ctx, key) == [False, False]
    clock.advance(days=31)
    assert retention.dispose(ctx, now=clock()) == Result(disposed=1, deferred=0)
    assert versions(ctx, key) == []
    assert_chain_ok(ctx)


# --- the race ------------------------------------------------------------------------------------


def test_a_hold_placed_during_a_disposal_run_wins_on_postgres(
    make_ctx: Callable[..., Context], clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_ctx(db="postgres", store="local", clock=clock)
    with ctx.db.session() as s:
        level = s.exec(sa.text("SHOW transaction_isolation")).one()[0]  # type: ignore[call-overload]
    assert level == "read committed"
    tenant = make_tenant(ctx)
    first, second = ingest(ctx, tenant), ingest(ctx, tenant)
    clock.advance(days=31)

    # 1. The disposal has listed its candidates (no hold yet); the hold commits before the CAS.
    listed, go = threading.Event(), threading.Event()

    def pause(ids: list[uuid.UUID]) -> None:
        listed.set()
        assert go.wait(20)

    run = lambda: retention.dispose(ctx, now=clock(), limit=1, after_listing=pause)  # noqa: E731
    with _background(run) as outcome:
        assert listed.wait(20)
        h1 = hold(ctx, recording_ids=[first.id, second.id])
        go.set()
    assert outcome["value"] == Result(disposed=0, deferred=2)
    assert row(ctx, first.id).status == row(ctx, second.id).status == S.stored
    release(ctx, h1.id)

    # 2. The hold's transaction has locked the rows but not committed: disposal skips them.
    with ctx.db.transaction() as s:
        h2 = holds.create_hold(
            s, actor=privacy(), store=ctx.store, case_ref="CASE-2", reason="subpoena",
            recording_ids=[first.id], now=clock(),
        )  # fmt: skip
        with _background(lambda: retention.claim(ctx, now=clock(), only=[first.id], n=5)) as out:
            pass
        assert out["value"] == []  # SKIP LOCKED: no wait, no claim
    assert retention.dispose(ctx, now=clock()) == Result(disposed=1, deferred=1)
    assert row(ctx, first.id).status == S.stored and row(ctx, second.id).status == S.disposed
    deferred = [e.canonical for e in events(ctx, "disposal.deferred")]
    assert len(deferred) == 3 and str(h2.id) in deferred[-1]
    assert_chain_ok(ctx)


class _background:
    """Run ``fn`` in a thread on entry; on exit wait for it and keep its result or error."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn, self.out = fn, {}

    def __enter__(self) -> dict[str, Any]:
        def target() -> None:
            try:
                self.out["value"] = self.fn()
            except BaseException as exc:
                self.out["error"] = exc

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()
        return self.out

    def __exit__(self, *exc: object) -> None:
        self.thread.join(30)
        assert not self.thread.is_alive(), "the disposal did not finish"
        if "error" in self.out:
            raise self.out["error"]


# --- HTTP ----------------------------------------------------------------------------------------


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    initialise(ctx, now=ctx.now())
    with TestClient(create_app(ctx.settings, ctx=ctx)) as c:
        yield c


def _key(ctx: Context, role: str, **scope: Any) -> dict[str, str]:
    owner = owner_of(ctx.keys, f"{role}@example.com")
    with ctx.db.transaction() as s:
        _, key = principals.add_principal(
            s, actor=Actor.operator(), name=f"{role}-{uuid.uuid4().hex[:6]}", role=role,
            owner=owner, tenants=scope.get("tenants", []),
            all_tenants=not scope, now=ctx.now(),
        )  # fmt: skip
    return {"Authorization": f"Bearer {key}"}


def test_legal_holds_api(ctx: Context, client: TestClient) -> None:
    tenant = make_tenant(ctx)
    rec = ingest(ctx, tenant)
    dpo, security = _key(ctx, "privacy"), _key(ctx, "security")
    engineer = _key(ctx, "engineer", tenants=[tenant.name])
    body = {"case_ref": "CASE-9", "reason": "litigation", "tenant": tenant.name, "call_id": CALL_ID}

    assert client.post("/v1/legal-holds", json=body, headers=engineer).status_code == 403
    r = client.post("/v1/legal-holds", json={**body, "case_ref": ""}, headers=dpo)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    r = client.post("/v1/legal-holds", json=body, headers=dpo)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["recording_ids"] == [str(rec.id)] and created["released_at"] is None
    assert "call_id" not in created

    listed = client.get("/v1/legal-holds", params={"active": True}, headers=security).json()
    assert [h["id"] for h in listed] == [created["id"]]
    meta = client.get(f"/v1/recordings/{rec.id}", headers=security).json()
    assert meta["holds"] == [created["id"]]

    path = f"/v1/legal-holds/{created['id']}/release"
    r = client.post(path, json={"reason": "settled"}, headers=security)
    assert r.status_code == 200 and r.json()["released_at"]
    assert client.post(path, json={"reason": "again"}, headers=dpo).status_code == 409
    assert client.post(f"/v1/legal-holds/{uuid.uuid4()}/release", json={"reason": "x"},
                       headers=dpo).status_code == 404  # fmt: skip
    assert client.get("/v1/legal-holds", params={"active": True}, headers=dpo).json() == []
    assert not any(CALL_ID in t for t in audit_texts(ctx))
    assert_chain_ok(ctx)
