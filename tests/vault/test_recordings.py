"""Recordings: ingest, metadata reads, ending purposes and the orphan sweeper, on both backends
(SQLite + local directory, PostgreSQL + SeaweedFS)."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

import minio
import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from crypto import streaming
from crypto.errors import KeyProviderError
from tests.support.clock import FakeClock
from tests.support.net import free_port
from vault import audit
from vault.authz import Actor
from vault.context import Context
from vault.errors import (
    ChecksumMismatchError,
    ConflictError,
    EmptyBodyError,
    IncompleteBodyError,
    InvalidInputError,
    KeyProviderUnavailableError,
    NotFoundError,
    PermissionDeniedError,
    StoreUnavailableError,
    UnknownPurposeError,
    UnknownTenantError,
    UnsupportedMediaTypeError,
)
from vault.identity.tenants import create_tenant
from vault.models import (
    AuditEvent,
    Recording,
    RecordingPurpose,
    RecordingStatus,
    Role,
    Tenant,
    utcnow,
)
from vault.recordings import metadata as recordings
from vault.recordings.ingest import ingest as ingest_recording
from vault.recordings.sweep import sweep_orphans
from vault.storage import BlobStore, LocalBlobStore, PutResult, S3BlobStore

MIB = 1024 * 1024
MARKER = b"PLAINTEXT-MARKER-7f3a9c"
CALL_ID = "call-MARKER-42"


# --- helpers --------------------------------------------------------------------------------------


def make_tenant(ctx: Context, name: str = "acme") -> Tenant:
    with ctx.db.transaction() as s:
        return create_tenant(
            s, actor=Actor.operator(), name=name, region=None, now=ctx.now()
        )


def actor_for(tenant: Tenant | None, role: Role = Role.ingest, **kw: Any) -> Actor:
    return Actor(
        id=uuid.uuid4(),
        name=f"{role}-{uuid.uuid4().hex[:6]}",
        role=role,
        owner="svc@example.com",
        tenant_ids=frozenset({tenant.id}) if tenant else frozenset(),
        **kw,
    )


def do_ingest(
    ctx: Context,
    actor: Actor,
    tenant: str,
    chunks: Iterable[bytes] = (b"hello", b" world"),
    **kw: Any,
) -> Recording:
    args: dict[str, Any] = dict(
        purposes=["troubleshooting"],
        call_id=CALL_ID,
        recorded_at=None,
        content_type="video/webm; codecs=vp9",
    )
    args.update(kw)
    return ingest_recording(ctx, actor=actor, tenant=tenant, chunks=chunks, **args)


def split(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def all_objects(store: BlobStore) -> list[Any]:
    """Every object (every S3 version, every local file including temp files)."""
    if isinstance(store, LocalBlobStore):
        return [p for p in store.root.rglob("*") if p.is_file()] if store.root.exists() else []
    assert isinstance(store, S3BlobStore)
    return list(store.client.list_objects(store.bucket, recursive=True, include_version=True))


def count(ctx: Context, model: Any) -> int:
    with ctx.db.session() as s:
        return int(s.exec(select(sa.func.count()).select_from(model)).one())


def events(ctx: Context, action: str) -> list[AuditEvent]:
    with ctx.db.session() as s:
        return list(
            s.exec(
                select(AuditEvent).where(AuditEvent.action == action).order_by(col(AuditEvent.seq))
            ).all()
        )


def assert_chain_ok(ctx: Context) -> None:
    with ctx.db.session() as s:
        result = audit.verify(s)
    assert result.ok, result


def assert_nothing_stored(ctx: Context, store: BlobStore | None = None) -> None:
    assert count(ctx, Recording) == 0
    assert count(ctx, RecordingPurpose) == 0
    assert all_objects(store or ctx.store) == []


def decrypt(ctx: Context, rec: Recording) -> bytes:
    assert rec.wrapped_dek is not None and rec.ciphertext_size is not None and rec.size is not None
    dek = ctx.keys.unwrap_dek(rec.wrapped_dek, tenant_id=rec.tenant_id, recording_id=rec.id)

    def read_at(offset: int, length: int) -> bytes:
        return ctx.store.read_range(
            rec.object_key, version_id=rec.version_id, offset=offset, length=length
        )

    parts = streaming.decrypt_range(
        read_at,
        dek=dek,
        recording_id=rec.id,
        ciphertext_size=rec.ciphertext_size,
        start=0,
        end=rec.size,
    )
    return b"".join(parts)


class FailingStore:
    """Delegates to a real store; ``put_stream`` fails after pulling ``after`` chunks, or after
    writing the whole object (``write_first``: the reply was lost); deletes may fail too."""

    def __init__(
        self,
        inner: BlobStore,
        *,
        after: int = 1,
        write_first: bool = False,
        delete_fails: bool = False,
    ) -> None:
        self.inner = inner
        self.after = after
        self.write_first = write_first
        self.delete_fails = delete_fails

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        size_hint: int | None = None,
        exact_size: int | None = None,
    ) -> PutResult:
        if self.write_first:
            self.inner.put_stream(key, chunks, size_hint=size_hint, exact_size=exact_size)
        else:
            it = iter(chunks)
            for _ in range(self.after):
                next(it)
        raise StoreUnavailableError("store went away")

    def delete_all_versions(self, key: str) -> int:
        if self.delete_fails:
            raise StoreUnavailableError("store went away")
        return self.inner.delete_all_versions(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# --- ingest: the happy path -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 3 * MIB + 17])
def test_ingest_roundtrip(ctx: Context, clock: FakeClock, size: int) -> None:
    tenant = make_tenant(ctx)
    actor = actor_for(tenant)
    data = bytearray(os.urandom(size))
    if size > len(MARKER):
        data[size // 2 : size // 2 + len(MARKER)] = MARKER
    data = bytes(data)

    rec = do_ingest(
        ctx,
        actor,
        tenant.name,
        split(data),
        purposes=["fraud", "troubleshooting"],
        expected_sha256=hashlib.sha256(data).hexdigest().upper(),
        expected_length=size,
    )

    assert rec.status == RecordingStatus.stored
    assert rec.size == size
    assert rec.sha256 == hashlib.sha256(data).hexdigest()
    assert rec.ciphertext_size == streaming.ciphertext_size(size)
    assert rec.content_type == 'video/webm; codecs="vp9"'  # stored normalised
    assert rec.ingested_at == rec.recorded_at == clock()
    # Only callvault's ids in the object key: no call id, no file name.
    assert rec.object_key == f"{tenant.id}/{rec.id}"
    if isinstance(ctx.store, S3BlobStore):
        assert rec.version_id
    stored = ctx.store.read_range(
        rec.object_key, version_id=rec.version_id, offset=0, length=rec.ciphertext_size + 1
    )
    assert len(stored) == rec.ciphertext_size
    assert hashlib.sha256(stored).hexdigest() == rec.ciphertext_sha256
    assert MARKER not in stored and CALL_ID.encode() not in stored
    assert decrypt(ctx, rec) == data
    assert len(all_objects(ctx.store)) == 1

    with ctx.db.session() as s:
        public = recordings.get_recording(s, actor=actor, recording_id=rec.id, now=clock())
    assert public.tenant == tenant.name
    assert public.call_id == CALL_ID
    assert [(p.purpose, p.active) for p in public.purposes] == [
        ("fraud", True),
        ("troubleshooting", True),
    ]
    fraud = ctx.policy.purpose("fraud").retention
    assert public.purposes[0].expires_at == rec.ingested_at + fraud
    assert public.holds == [] and public.derivatives == [] and public.parent_id is None

    (event,) = events(ctx, "recording.ingest")
    assert event.target == str(rec.id) and event.actor == str(actor.id)
    assert CALL_ID not in event.canonical and rec.sha256 not in event.canonical
    assert rec.ciphertext_sha256 in event.canonical
    assert_chain_ok(ctx)


def test_ingest_keeps_content_type_and_recorded_at(ctx: Context, clock: FakeClock) -> None:
    tenant = make_tenant(ctx)
    actor = actor_for(tenant)
    when = clock() - timedelta(hours=3)
    for ctype in ("audio/ogg", "application/octet-stream", "VIDEO/MP4"):
        rec = do_ingest(ctx, actor, str(tenant.id), content_type=ctype, recorded_at=when)
        # Kept in its normalised form (lower case; parameters re-quoted), as it is served back.
        assert rec.content_type == ctype.lower() and rec.recorded_at == when
    rec = do_ingest(ctx, actor, tenant.name, call_id=None, purposes=["fraud", "fraud"])
    assert rec.call_id is None
    assert count(ctx, RecordingPurpose) == 4


# --- ingest: every bad input stores nothing -------------------------------------------------------


def _raises_midway() -> Iterator[bytes]:
    yield MARKER * 100
    yield b"more"
    raise IncompleteBodyError()


def _disconnects() -> Iterator[bytes]:
    yield b"x" * 5000
    raise ConnectionResetError("client went away")


BAD_INPUTS: dict[str, tuple[type[Exception], dict[str, Any]]] = {
    "content-type": (UnsupportedMediaTypeError, {"content_type": "text/html"}),
    "content-type-image": (UnsupportedMediaTypeError, {"content_type": "image/png"}),
    "unknown-purpose": (UnknownPurposeError, {"purposes": ["troubleshooting", "marketing"]}),
    "no-purposes": (InvalidInputError, {"purposes": []}),
    "long-call-id": (InvalidInputError, {"call_id": "x" * 257}),
    "bad-sha-format": (InvalidInputError, {"expected_sha256": "abc"}),
    "checksum": (ChecksumMismatchError, {"expected_sha256": "0" * 64}),
    "empty": (EmptyBodyError, {"chunks": []}),
    "empty-chunks": (EmptyBodyError, {"chunks": [b"", b""]}),
    "cut-off": (IncompleteBodyError, {"chunks": "midway"}),
    "disconnect": (ConnectionResetError, {"chunks": "disconnect"}),
    "short": (IncompleteBodyError, {"expected_length": 1000}),
    "long": (InvalidInputError, {"expected_length": 3}),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_stores_nothing(ctx: Context, case: str) -> None:
    tenant = make_tenant(ctx)
    error, kwargs = BAD_INPUTS[case]
    if kwargs.get("chunks") == "midway":
        kwargs = {"chunks": _raises_midway()}
    elif kwargs.get("chunks") == "disconnect":
        kwargs = {"chunks": _disconnects()}
    with pytest.raises(error):
        do_ingest(ctx, actor_for(tenant), tenant.name, **kwargs)
    assert_nothing_stored(ctx)
    failed = events(ctx, "recording.ingest.failed")
    if case in {"checksum", "cut-off", "disconnect", "short", "long"}:  # a pending row existed
        (event,) = failed
        assert event.outcome == "failed"
        code = getattr(error, "code", "client-error")
        assert f'"reason":"{code}"' in event.canonical
    else:
        assert failed == []
    assert_chain_ok(ctx)


def test_tenant_scope_on_ingest(ctx: Context) -> None:
    mine, other = make_tenant(ctx, "mine"), make_tenant(ctx, "other")
    actor = actor_for(mine)
    with pytest.raises(PermissionDeniedError) as foreign:
        do_ingest(ctx, actor, other.name)
    with pytest.raises(PermissionDeniedError) as missing:
        do_ingest(ctx, actor, "no-such-tenant")
    assert str(foreign.value) == str(missing.value)  # existence is not revealed
    with pytest.raises(PermissionDeniedError):  # role check comes first
        do_ingest(ctx, actor_for(mine, Role.engineer), mine.name)
    with pytest.raises(UnknownTenantError):  # all-tenants actors may learn it
        do_ingest(ctx, actor_for(None, all_tenants=True), "no-such-tenant")
    assert_nothing_stored(ctx)


def test_key_provider_failure(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = make_tenant(ctx)

    def broken(*_a: Any, **_k: Any) -> Any:
        raise KeyProviderError("transit down")

    monkeypatch.setattr(ctx.keys.provider, "wrap", broken)
    with pytest.raises(KeyProviderUnavailableError):
        do_ingest(ctx, actor_for(tenant), tenant.name)
    assert_nothing_stored(ctx)


# --- ingest: store failures -----------------------------------------------------------------------


def test_store_failure_mid_upload(ctx: Context) -> None:
    tenant = make_tenant(ctx)
    real = ctx.store
    ctx.store = FailingStore(real, after=1)  # type: ignore[assignment]
    with pytest.raises(StoreUnavailableError):
        do_ingest(ctx, actor_for(tenant), tenant.name, split(os.urandom(300_000), 10_000))
    assert_nothing_stored(ctx, real)
    (event,) = events(ctx, "recording.ingest.failed")
    assert "store-unavailable" in event.canonical
    assert_chain_ok(ctx)


def test_store_failure_with_failing_delete_leaves_a_failed_row_for_the_sweeper(
    ctx: Context, clock: FakeClock
) -> None:
    tenant = make_tenant(ctx)
    real = ctx.store
    ctx.store = FailingStore(real, write_first=True, delete_fails=True)  # type: ignore[assignment]
    with pytest.raises(StoreUnavailableError):
        do_ingest(ctx, actor_for(tenant), tenant.name)
    with ctx.db.session() as s:
        (row,) = s.exec(select(Recording)).all()
    assert row.status == RecordingStatus.failed and row.wrapped_dek is None
    assert len(all_objects(real)) == 1  # the object the store wrote before failing

    ctx.store = real
    assert sweep_orphans(ctx, older_than=timedelta(hours=1), now=clock()) == 1
    assert all_objects(real) == []
    with ctx.db.session() as s:
        row = s.get(Recording, row.id)
    assert row is not None and row.status == RecordingStatus.failed and row.disposed_at
    assert sweep_orphans(ctx, older_than=timedelta(hours=1), now=clock()) == 0
    assert_chain_ok(ctx)


def test_s3_unreachable_mid_upload(make_ctx: Callable[..., Context], clock: FakeClock) -> None:
    ctx = make_ctx(db="postgres", store="s3", clock=clock)
    tenant = make_tenant(ctx)
    real = ctx.store
    assert isinstance(real, S3BlobStore)
    ctx.store = S3BlobStore.from_settings(
        endpoint=f"127.0.0.1:{free_port()}",  # nothing listens there
        access_key="x",
        secret_key="y",
        bucket=real.bucket,
        connect_timeout=0.5,
        retries=0,
    )
    with pytest.raises(StoreUnavailableError):
        do_ingest(ctx, actor_for(tenant), tenant.name, split(os.urandom(100_000), 8192))
    # The cleanup could not reach the store either: a failed row without its DEK, no object.
    with ctx.db.session() as s:
        (row,) = s.exec(select(Recording)).all()
    assert row.status == RecordingStatus.failed and row.wrapped_dek is None
    assert all_objects(real) == []
    ctx.store = real
    assert sweep_orphans(ctx, older_than=timedelta(hours=1), now=clock()) == 1
    assert_chain_ok(ctx)


# --- the sweeper ----------------------------------------------------------------------------------


def _insert(ctx: Context, tenant: Tenant, status: RecordingStatus, *, dek: bool, obj: bool) -> Any:
    rid = uuid.uuid4()
    now = ctx.now()
    rec = Recording(
        id=rid,
        tenant_id=tenant.id,
        call_id="c1",
        status=status,
        content_type="video/mp4",
        sha256="ab" * 32,
        object_key=f"{tenant.id}/{rid}",
        wrapped_dek="cvk1:1:AAAA" if dek else None,
        recorded_at=now,
        ingested_at=now,
        updated_at=now,
    )
    with ctx.db.transaction() as s:
        s.add(rec)
    if obj:
        ctx.store.put_stream(rec.object_key, [b"ciphertext"])
    return rid


def test_sweeper(ctx: Context, clock: FakeClock) -> None:
    tenant = make_tenant(ctx)
    stale = _insert(ctx, tenant, RecordingStatus.pending, dek=True, obj=True)
    crashed = _insert(ctx, tenant, RecordingStatus.disposing, dek=False, obj=True)
    mid_disposal = _insert(ctx, tenant, RecordingStatus.disposing, dek=True, obj=True)
    clock.advance(hours=2)
    fresh = _insert(ctx, tenant, RecordingStatus.pending, dek=True, obj=False)
    stored = do_ingest(ctx, actor_for(tenant), tenant.name)

    assert sweep_orphans(ctx, older_than=timedelta(hours=1), now=clock()) == 2
    with ctx.db.session() as s:
        rows = {r.id: r for r in s.exec(select(Recording)).all()}
    assert rows[stale].status == RecordingStatus.failed
    assert rows[stale].wrapped_dek is None and rows[stale].disposed_at == clock()
    assert rows[crashed].status == RecordingStatus.disposed and rows[crashed].disposed_at
    assert rows[crashed].call_id is None and rows[crashed].sha256 is None
    assert rows[mid_disposal].status == RecordingStatus.disposing  # its DEK is not destroyed yet
    assert rows[fresh].status == RecordingStatus.pending and rows[fresh].wrapped_dek
    assert rows[stored.id].status == RecordingStatus.stored
    for rid in (stale, crashed):
        assert not ctx.store.exists(rows[rid].object_key)
    assert ctx.store.exists(rows[mid_disposal].object_key)
    assert decrypt(ctx, rows[stored.id]) == b"hello world"
    # One event per lifecycle edge, whoever moves the row: the stale ingest failed (swept), the
    # crashed disposal finished as any disposal does; removing the failed row's objects is the
    # sweeper's own act.
    (failed,) = events(ctx, "recording.ingest.failed")
    assert failed.target == str(stale) and '"reason":"swept"' in failed.canonical
    assert [e.target for e in events(ctx, "media.destroy")] == [str(crashed)]
    assert [e.target for e in events(ctx, "recording.sweep")] == [str(stale)]

    assert sweep_orphans(ctx, older_than=timedelta(hours=1), now=clock()) == 0
    assert_chain_ok(ctx)


def test_upload_outliving_the_sweeper_cleans_up_after_itself(
    ctx: Context, clock: FakeClock
) -> None:
    tenant = make_tenant(ctx)
    swept: list[int] = []

    def slow_body() -> Iterator[bytes]:
        yield b"first part " * 100
        clock.advance(hours=2)  # the client stalls; the sweeper runs meanwhile
        swept.append(sweep_orphans(ctx, older_than=timedelta(hours=1), now=clock()))
        yield b"second part"

    with pytest.raises(StoreUnavailableError):
        do_ingest(ctx, actor_for(tenant), tenant.name, slow_body())
    assert swept == [1]
    assert_nothing_stored(ctx)
    # The sweeper's pending -> failed, then the upload's own cleanup of row and object.
    swept_event, cleanup = events(ctx, "recording.ingest.failed")
    assert '"reason":"swept"' in swept_event.canonical
    assert "abandoned" in cleanup.canonical and '"discarded":true' in cleanup.canonical
    assert len(events(ctx, "recording.ingest")) == 0
    assert_chain_ok(ctx)


# --- listing, scope, ending purposes --------------------------------------------------------------


def test_list_pagination_and_filters(ctx: Context, clock: FakeClock) -> None:
    tenant = make_tenant(ctx)
    actor = actor_for(tenant)
    ids = []
    for i in range(7):
        if i != 3:  # two recordings share an ingested_at: the id breaks the tie
            clock.advance(seconds=1)
        purposes = ["fraud"] if i % 2 else ["troubleshooting"]
        ids.append(
            do_ingest(ctx, actor, tenant.name, call_id=f"call-{i % 3}", purposes=purposes).id
        )
    with ctx.db.session() as s:
        order = s.exec(
            select(Recording.id).order_by(col(Recording.ingested_at), col(Recording.id))
        ).all()
    assert sorted(order) == sorted(ids)

    def page(**kw: Any) -> Any:
        args: dict[str, Any] = dict(
            tenant=None, purpose=None, call_id=None, status=None, cursor=None, limit=3
        )
        args.update(kw)
        with ctx.db.session() as s:
            return recordings.list_recordings(s, actor=actor, now=clock(), **args)

    seen, cursor, sizes = [], None, []
    while True:
        p = page(cursor=cursor, tenant=tenant.name)
        sizes.append(len(p.items))
        seen += [r.id for r in p.items]
        cursor = p.next_cursor
        if cursor is None:
            break
    assert sizes == [3, 3, 1]
    assert seen == list(order)

    assert {r.id for r in page(limit=10, purpose="fraud").items} == set(ids[1::2])
    assert {r.id for r in page(limit=10, call_id="call-0").items} == {ids[0], ids[3], ids[6]}
    assert len(page(limit=10, status="stored").items) == 7
    assert page(limit=10, status="failed").items == []
    with pytest.raises(InvalidInputError):
        page(status="bogus")
    with pytest.raises(InvalidInputError):
        page(cursor="not-a-cursor!")
    with pytest.raises(InvalidInputError):
        page(limit=0)

    # A purpose that ended no longer matches the purpose filter.
    privacy = actor_for(tenant, Role.privacy)
    with ctx.db.transaction() as s:
        recordings.end_purpose(
            s, actor=privacy, recording_id=ids[1], purpose="fraud", reason=None, now=clock()
        )
    assert {r.id for r in page(limit=10, purpose="fraud").items} == {ids[3], ids[5]}


def test_scope_hides_other_tenants(ctx: Context, clock: FakeClock) -> None:
    a, b = make_tenant(ctx, "tenant-a"), make_tenant(ctx, "tenant-b")
    rec_a = do_ingest(ctx, actor_for(a), a.name)
    rec_b = do_ingest(ctx, actor_for(b), b.name)
    reader = actor_for(a, Role.engineer)
    auditor = actor_for(None, Role.auditor, all_tenants=True)
    args: dict[str, Any] = dict(purpose=None, call_id=None, status=None, cursor=None, limit=10)
    with ctx.db.session() as s:
        with pytest.raises(NotFoundError) as foreign:
            recordings.get_recording(s, actor=reader, recording_id=rec_b.id, now=clock())
        missing_id = uuid.uuid4()
        with pytest.raises(NotFoundError) as missing:
            recordings.get_recording(s, actor=reader, recording_id=missing_id, now=clock())
        assert str(foreign.value) == str(missing.value).replace(str(missing_id), str(rec_b.id))
        assert recordings.get_recording(s, actor=reader, recording_id=rec_a.id, now=clock())

        def ids(actor: Actor, tenant: str | None) -> list[uuid.UUID]:
            page = recordings.list_recordings(s, actor=actor, tenant=tenant, now=clock(), **args)
            return [r.id for r in page.items]

        assert ids(reader, b.name) == []
        assert ids(reader, "no-such-tenant") == []
        assert ids(reader, None) == [rec_a.id]
        assert ids(actor_for(None, Role.engineer), None) == []
        assert set(ids(auditor, None)) == {rec_a.id, rec_b.id}
        assert ids(auditor, str(b.id)) == [rec_b.id]
        with pytest.raises(UnknownTenantError):
            ids(auditor, "no-such-tenant")


def test_end_purpose(ctx: Context, clock: FakeClock) -> None:
    tenant, other = make_tenant(ctx), make_tenant(ctx, "other")
    rec = do_ingest(ctx, actor_for(tenant), tenant.name, purposes=["fraud", "troubleshooting"])
    privacy = actor_for(tenant, Role.privacy)
    clock.advance(minutes=5)

    def end(actor: Actor, purpose: str = "fraud", rid: uuid.UUID = rec.id) -> Any:
        with ctx.db.transaction() as s:
            return recordings.end_purpose(
                s, actor=actor, recording_id=rid, purpose=purpose, reason="DSR-17", now=clock()
            )

    with pytest.raises(PermissionDeniedError):
        end(actor_for(tenant, Role.engineer))
    with pytest.raises(NotFoundError):
        end(actor_for(other, Role.privacy))
    with pytest.raises(NotFoundError):
        end(privacy, purpose="security")
    public = end(privacy)
    fraud = next(p for p in public.purposes if p.purpose == "fraud")
    assert fraud.ended_at == clock() and not fraud.active
    assert all(p.active for p in public.purposes if p.purpose != "fraud")
    (event,) = events(ctx, "recording.purpose.end")
    assert event.purpose == "fraud" and event.target == str(rec.id)
    assert event.actor == str(privacy.id) and "DSR-17" in event.canonical
    with pytest.raises(ConflictError):
        end(privacy)
    assert len(events(ctx, "recording.purpose.end")) == 1

    clock.advance(days=31)  # troubleshooting has expired by now
    with pytest.raises(ConflictError):
        end(privacy, purpose="troubleshooting")
    assert_chain_ok(ctx)


def test_sweeper_aborts_multipart_uploads_a_dead_server_left(
    make_ctx: Callable[..., Context], clock: FakeClock, s3_admin: minio.Minio
) -> None:
    """A server killed mid-upload leaves an invisible, billed multipart upload: the sweeper aborts
    it once it is older than the threshold, unless a pending row still owns the key."""
    ctx = make_ctx(db="sqlite", store="s3", clock=clock)
    tenant = make_tenant(ctx)
    bucket = ctx.store.bucket
    orphan_key = f"{tenant.id}/{uuid.uuid4()}"
    owned = _insert(ctx, tenant, RecordingStatus.pending, dek=True, obj=False)
    with ctx.db.transaction() as s:  # an ingest that is still alive, however old its upload
        s.exec(sa.update(Recording).where(col(Recording.id) == owned)
               .values(updated_at=utcnow() + timedelta(hours=3)))  # fmt: skip
    s3_admin._create_multipart_upload(bucket, orphan_key, {})
    s3_admin._create_multipart_upload(bucket, f"{tenant.id}/{owned}", {})
    s3_admin._create_multipart_upload(bucket, "audit/checkpoints/x.json", {})  # not a recording

    def uploads() -> set[str]:
        return {u.object_name for u in s3_admin._list_multipart_uploads(bucket).uploads}

    sweep_orphans(ctx, older_than=timedelta(hours=1), now=utcnow() - timedelta(hours=2))
    assert orphan_key in uploads()  # young: an upload may still be running
    sweep_orphans(ctx, older_than=timedelta(hours=1), now=utcnow() + timedelta(hours=2))
    left = uploads()
    assert orphan_key not in left
    assert f"{tenant.id}/{owned}" in left  # its pending row owns it
    assert "audit/checkpoints/x.json" in left
