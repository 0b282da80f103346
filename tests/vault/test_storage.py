"""Blob stores against the real thing: a local directory and a SeaweedFS S3 server.

Contract tests run against both stores; S3-only behaviour (versions, Object Lock, auth, multipart)
is checked against weed itself, looking behind the store's back with a plain minio client.
"""

from __future__ import annotations

import io
import os
import random
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import minio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from minio.error import S3Error

from tests.support.net import free_port
from tests.support.weed import WeedServer
from tests.vault.conftest import new_bucket_name
from vault.errors import (
    BlobLockedError,
    BlobNotFoundError,
    InvalidKeyError,
    StorageError,
    StoreUnavailableError,
)
from vault.storage import BlobStore, LocalBlobStore, S3BlobStore
from vault.storage._multipart import ExactChunks, SourceFailed
from vault.storage.s3 import DEFAULT_PART_SIZE, PARTS_IN_FLIGHT

MIB = 1024 * 1024
CHUNK = MIB + 7  # deliberately not a divisor of the part size


def chunk_bytes(seed: int, index: int, size: int = CHUNK) -> bytes:
    return random.Random(seed * 1_000_003 + index).randbytes(size)


def body(seed: int, total: int) -> Iterator[bytes]:
    """``total`` bytes of reproducible noise, one chunk at a time (never all in memory)."""
    index = 0
    sent = 0
    while sent < total:
        size = min(CHUNK, total - sent)
        yield chunk_bytes(seed, index)[:size]
        sent += size
        index += 1


def expected(seed: int, total: int, offset: int, length: int) -> bytes:
    """The slice ``[offset, offset+length)`` of ``body(seed, total)``, rebuilt chunk by chunk."""
    end = min(total, offset + length)
    out = bytearray()
    for index in range(offset // CHUNK, (end - 1) // CHUNK + 1 if end > offset else 0):
        start = index * CHUNK
        piece = chunk_bytes(seed, index)[: min(CHUNK, total - start)]
        out += piece[max(0, offset - start) : end - start]
    return bytes(out)


class Boom(Exception):
    """Raised by a failing source; must come out of put_stream unchanged."""


def failing_body(total: int, fail_at: int) -> Iterator[bytes]:
    sent = 0
    for piece in body(7, total):
        if sent >= fail_at:
            raise Boom("source failed")
        yield piece
        sent += len(piece)


def versions(client: minio.Minio, bucket: str, key: str) -> list[tuple[str | None, bool]]:
    return [
        (o.version_id, bool(o.is_delete_marker))
        for o in client.list_objects(bucket, prefix=key, include_version=True)
        if o.object_name == key
    ]


# -- contract: both stores ----------------------------------------------------------------------


def test_stores_satisfy_the_protocol(store: BlobStore) -> None:
    assert isinstance(store, BlobStore)
    store.check()


def test_streaming_put_and_ranged_reads(store: BlobStore) -> None:
    total = 40 * MIB + 123
    result = store.put_stream("t1/rec/media", body(1, total))
    assert result.size == total
    assert store.size("t1/rec/media", version_id=result.version_id) == total
    assert store.exists("t1/rec/media", version_id=result.version_id)
    ranges = [
        (0, 100),
        (CHUNK - 10, 20),  # across a chunk boundary
        (DEFAULT_PART_SIZE - 5, 10),  # across an S3 part boundary
        (17 * MIB, 3 * MIB),
        (total - 50, 50),
        (total - 10, 100),  # short read at the end
    ]
    for offset, length in ranges:
        got = store.read_range(
            "t1/rec/media", version_id=result.version_id, offset=offset, length=length
        )
        assert got == expected(1, total, offset, length), (offset, length)
    assert (
        store.read_range("t1/rec/media", version_id=result.version_id, offset=total, length=5)
        == b""
    )
    assert (
        store.read_range("t1/rec/media", version_id=result.version_id, offset=total + 9, length=5)
        == b""
    )
    assert store.read_range("t1/rec/media", version_id=result.version_id, offset=3, length=0) == b""


def test_open_range_streams_exactly_that_version(store: BlobStore) -> None:
    """The long reads' one-request body (issue #12): the bytes asked for, shorter where the
    object ends, empty past it, the version the caller names, and closable half-read."""
    key, total = "t1/rec/stream", 5 * MIB + 321
    first = store.put_stream(key, body(3, total))
    for offset, length, pieces in [
        (0, total, [MIB, MIB, 3 * MIB + 321]),
        (MIB - 7, 2 * MIB, [10, 2 * MIB - 10]),
        (total - 100, 1000, [60, 40]),  # the object ends first: length says so
    ]:
        opened = store.open_range(key, version_id=first.version_id, offset=offset, length=length)
        try:
            assert opened.length == min(length, total - offset)
            got = b"".join(opened.read(n) for n in pieces)
            assert opened.read(10) == b""  # the body is done
        finally:
            opened.close()
        assert got == expected(3, total, offset, length), (offset, length)
    past = store.open_range(key, version_id=first.version_id, offset=total + 5, length=10)
    assert past.length == 0 and past.read(10) == b""
    past.close()
    # Half-read and closed: the store still answers (on S3 the connection is dropped, not reused).
    half = store.open_range(key, version_id=first.version_id, offset=0, length=total)
    assert half.read(1000) == expected(3, total, 0, 1000)
    half.close()
    assert store.read_range(key, version_id=first.version_id, offset=5, length=5) == expected(
        3, total, 5, 5
    )
    with pytest.raises(BlobNotFoundError):
        store.open_range("no/such", version_id=None, offset=0, length=1)
    with pytest.raises(ValueError):
        store.open_range(key, version_id=first.version_id, offset=0, length=0)


def test_s3_open_range_reads_the_exact_version(s3_store: S3BlobStore) -> None:
    old = s3_store.put_bytes("t1/versioned", b"old bytes")
    s3_store.put_bytes("t1/versioned", b"new bytes")
    body = s3_store.open_range("t1/versioned", version_id=old, offset=0, length=100)
    try:
        assert body.read(100) == b"old bytes"
    finally:
        body.close()


def test_streaming_put_holds_a_few_parts_in_memory(store: BlobStore) -> None:
    total = 96 * MIB
    tracemalloc.start()
    try:
        result = store.put_stream("mem/media", body(2, total))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.size == total
    # A whole-body buffer would be >= 96 MiB. Bounded: the parts in flight, the one being read
    # and its assembly, plus slack.
    assert peak < (PARTS_IN_FLIGHT + 3) * DEFAULT_PART_SIZE + 8 * MIB, peak / MIB


def test_missing_blobs(store: BlobStore) -> None:
    with pytest.raises(BlobNotFoundError):
        store.read_range("no/such", version_id=None, offset=0, length=1)
    with pytest.raises(BlobNotFoundError):
        store.size("no/such", version_id=None)
    assert not store.exists("no/such")
    assert store.delete_all_versions("no/such") == 0


def test_failing_source_leaves_nothing_behind(store: BlobStore) -> None:
    # Fails after 20 MiB: on S3 the multipart upload has started and must be aborted.
    with pytest.raises(Boom):
        store.put_stream("fail/late", failing_body(40 * MIB, fail_at=20 * MIB))
    # Fails inside the first part: nothing was sent yet.
    with pytest.raises(Boom):
        store.put_stream("fail/early", failing_body(40 * MIB, fail_at=2 * MIB))
    assert not store.exists("fail/late")
    assert not store.exists("fail/early")
    if isinstance(store, LocalBlobStore):
        assert list((store.root / "fail").iterdir()) == []  # no temp files either


@pytest.mark.parametrize(
    ("sent", "fail_at"),
    [(20 * MIB, None), (30 * MIB + 1, None), (40 * MIB, 25 * MIB), (40 * MIB, 0)],
    ids=["short", "long", "source-fails", "source-fails-at-once"],
)
def test_declared_length_is_all_or_nothing(
    store: BlobStore, sent: int, fail_at: int | None
) -> None:
    """A stream that is not exactly its declared ``exact_size`` (or whose source fails) stores
    nothing: on S3 the streaming PUT is cut short of its Content-Length (issue #12)."""
    source = body(9, sent) if fail_at is None else failing_body(sent, fail_at=fail_at)
    with pytest.raises(ValueError if fail_at is None else Boom):
        store.put_stream("exact/bad", source, exact_size=30 * MIB)
    assert not store.exists("exact/bad")
    if isinstance(store, LocalBlobStore):
        assert list((store.root / "exact").iterdir()) == []


@given(
    pieces=st.lists(st.integers(min_value=0, max_value=40), max_size=12),
    declared=st.integers(min_value=1, max_value=200),
)
def test_declared_length_never_sends_its_last_byte_for_a_wrong_stream(
    pieces: list[int], declared: int
) -> None:
    """Whatever the chunking, the declared length is reached only by a source that ends there:
    a store that counts bytes (S3's Content-Length) never sees a whole object otherwise."""
    source = [bytes([n % 251]) * n for n in pieces]
    reader = ExactChunks(source, declared)
    sent = bytearray()
    try:
        for chunk in reader:
            sent += chunk
    except SourceFailed:
        assert isinstance(reader.source_error, ValueError)
        assert len(sent) < declared
        assert sum(pieces) != declared
    else:
        assert sum(pieces) == declared and bytes(sent) == b"".join(source)


def test_declared_length_streams_in_constant_memory(store: BlobStore) -> None:
    total = 64 * MIB + 5
    tracemalloc.start()
    try:
        result = store.put_stream("exact/media", body(4, total), exact_size=total)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.size == total
    assert store.size("exact/media", version_id=result.version_id) == total
    for offset, length in [(0, 100), (CHUNK - 3, 9), (total - 17, 17)]:
        got = store.read_range("exact/media", version_id=result.version_id, offset=offset,
                               length=length)  # fmt: skip
        assert got == expected(4, total, offset, length)
    # No part is assembled: the chunk in hand and the one being made, plus slack.
    assert peak < 4 * CHUNK, peak / MIB


def test_delete_all_versions_is_complete_and_idempotent(store: BlobStore) -> None:
    for seed in range(3):
        store.put_stream("del/me", body(seed, 1000))
    store.put_bytes("del/me2", b"neighbour")  # same prefix, another key
    s3 = isinstance(store, S3BlobStore)
    if s3:  # S3 allows a key and keys "below" it at once; a file system does not
        store.put_bytes("del/me/child", b"below")
    removed = store.delete_all_versions("del/me")
    assert removed == (3 if s3 else 1)
    assert not store.exists("del/me")
    assert store.delete_all_versions("del/me") == 0
    assert store.read_range("del/me2", version_id=None, offset=0, length=100) == b"neighbour"
    if s3:
        assert store.exists("del/me/child")


def test_put_bytes_roundtrip(store: BlobStore) -> None:
    version = store.put_bytes("audit/checkpoint-1.json", b'{"seq": 1}')
    assert (
        store.read_range("audit/checkpoint-1.json", version_id=version, offset=0, length=1000)
        == b'{"seq": 1}'
    )


BAD_KEYS = [
    "",
    "../escape",
    "a/../../escape",
    "a/..",
    "/etc/passwd",
    "a//b",
    "a/./b",
    "a/",
    ".hidden",
    "a/.tmp-123",
    "a\\..\\b",
    "a\x00b",
    "x" * 1025,
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_refused(store: BlobStore, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        store.put_stream(key, [b"data"])
    with pytest.raises(InvalidKeyError):
        store.put_bytes(key, b"data")
    with pytest.raises(InvalidKeyError):
        store.read_range(key, version_id=None, offset=0, length=1)
    with pytest.raises(InvalidKeyError):
        store.delete_all_versions(key)
    with pytest.raises(InvalidKeyError):
        store.exists(key)


# -- local only ---------------------------------------------------------------------------------


def test_local_symlink_escape_is_refused(local_store: LocalBlobStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (local_store.root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidKeyError):
        local_store.put_stream("link/file", [b"data"])
    assert list(outside.iterdir()) == []


def test_local_store_has_no_versions_and_no_locks(local_store: LocalBlobStore) -> None:
    result = local_store.put_stream("a/b", [b"one"])
    assert result.version_id is None
    with pytest.raises(BlobNotFoundError):
        local_store.read_range("a/b", version_id="v1", offset=0, length=3)
    assert not local_store.supports_object_lock()
    assert local_store.set_legal_hold("a/b", on=True) == 0
    # Retention is not enforceable here; it is accepted and ignored.
    local_store.put_bytes("a/c", b"x", retention_until=datetime.now(UTC) + timedelta(days=1))
    assert local_store.delete_all_versions("a/c") == 1


def test_local_check_fails_without_root(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError):
        LocalBlobStore(tmp_path / "missing").check()


# -- S3 only ------------------------------------------------------------------------------------


def test_s3_large_bodies_use_multipart(s3_store: S3BlobStore, s3_admin: minio.Minio) -> None:
    big = s3_store.put_stream("mp/big", body(3, 40 * MIB))
    small = s3_store.put_stream("mp/small", body(3, 3 * MIB))
    # Multipart ETags end in "-<parts>": 40 MiB in DEFAULT_PART_SIZE parts.
    parts = -(-40 * MIB // DEFAULT_PART_SIZE)
    big_etag = s3_admin.stat_object(s3_store.bucket, "mp/big", version_id=big.version_id).etag
    small_etag = s3_admin.stat_object(s3_store.bucket, "mp/small", version_id=small.version_id).etag
    assert big_etag is not None and big_etag.endswith(f"-{parts}")
    assert small_etag is not None and "-" not in small_etag


def test_s3_media_parts_go_unsigned_and_land_intact(
    s3_store: S3BlobStore, s3_admin: minio.Minio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parts (ciphertext) are signed UNSIGNED-PAYLOAD over plain HTTP, no SHA-256 of the body
    (issue #12); small bodies keep their payload hash; SeaweedFS stores the exact bytes."""
    sent: list[tuple[int, str]] = []
    client = s3_store._client
    real = type(client)._build_headers

    def spy(self: Any, host: str, headers: Any = None, body: Any = None, creds: Any = None) -> Any:
        built, date = real(self, host, headers, body, creds)
        sent.append((len(body or b""), built["x-amz-content-sha256"]))
        return built, date

    monkeypatch.setattr(type(client), "_build_headers", spy)
    data = b"".join(body(5, 13 * MIB))
    put = s3_store.put_stream("mp/unsigned", iter([data]))
    monkeypatch.undo()
    media = [h for n, h in sent if n >= MIB]
    assert media and set(media) == {"UNSIGNED-PAYLOAD"}
    assert all(len(h) == 64 for n, h in sent if n < MIB)  # the SHA-256 of small bodies
    got = s3_admin.get_object(s3_store.bucket, "mp/unsigned", version_id=put.version_id)
    assert got.read() == data


def test_s3_failed_upload_leaves_no_multipart_upload(
    s3_store: S3BlobStore, s3_admin: minio.Minio
) -> None:
    with pytest.raises(Boom):
        s3_store.put_stream("fail/mp", failing_body(50 * MIB, fail_at=35 * MIB))
    assert versions(s3_admin, s3_store.bucket, "fail/mp") == []
    uploads = s3_admin._list_multipart_uploads(s3_store.bucket).uploads
    assert [u.object_name for u in uploads] == []


def test_s3_declared_length_goes_up_as_one_put(
    s3_store: S3BlobStore, s3_admin: minio.Minio
) -> None:
    """A known length is one streaming PUT, signed UNSIGNED-PAYLOAD: one version, a plain
    (not multipart) ETag, no multipart upload left, the exact bytes."""
    total = 3 * DEFAULT_PART_SIZE + 11
    put = s3_store.put_stream("one/put", body(6, total), exact_size=total)
    assert [v for v, _ in versions(s3_admin, s3_store.bucket, "one/put")] == [put.version_id]
    stat = s3_admin.stat_object(s3_store.bucket, "one/put", version_id=put.version_id)
    assert stat.etag is not None and "-" not in stat.etag and stat.size == total
    assert s3_admin._list_multipart_uploads(s3_store.bucket).uploads == []
    got = s3_admin.get_object(s3_store.bucket, "one/put", version_id=put.version_id)
    assert got.read() == expected(6, total, 0, total)


def test_s3_streaming_put_can_be_turned_off(
    s3_store: S3BlobStore, s3_admin: minio.Minio, weed: WeedServer
) -> None:
    """``s3_streaming_put = false`` (for clients slower than the store's idle limit): a known
    length goes up in buffered parts again."""
    parts = S3BlobStore.from_settings(
        endpoint=weed.endpoint, access_key=weed.access_key, secret_key=weed.secret_key,
        bucket=s3_store.bucket, streaming_put=False,
    )  # fmt: skip
    total = 2 * DEFAULT_PART_SIZE + 1
    put = parts.put_stream("one/parts", body(8, total), exact_size=total)
    stat = s3_admin.stat_object(s3_store.bucket, "one/parts", version_id=put.version_id)
    assert stat.etag is not None and stat.etag.endswith("-3") and stat.size == total


def test_s3_streaming_put_to_a_store_that_refuses_is_a_storage_error(
    s3_store: S3BlobStore, weed: WeedServer
) -> None:
    wrong = S3BlobStore.from_settings(
        endpoint=weed.endpoint, access_key=weed.access_key, secret_key="not-the-secret",
        bucket=s3_store.bucket,
    )  # fmt: skip
    with pytest.raises(StorageError) as refused:
        wrong.put_stream("one/refused", body(1, 8 * MIB), exact_size=8 * MIB)
    assert "not-the-secret" not in str(refused.value)
    assert not s3_store.exists("one/refused")
    down = S3BlobStore.from_settings(
        endpoint=f"127.0.0.1:{free_port()}", access_key="a", secret_key="b", bucket="nothing",
        region="us-east-1", connect_timeout=0.5, retries=0,
    )  # fmt: skip
    with pytest.raises(StoreUnavailableError):
        down.put_stream("one/down", body(1, 8 * MIB), exact_size=8 * MIB)


def test_s3_reads_the_exact_version(s3_store: S3BlobStore) -> None:
    first = s3_store.put_stream("ver/key", [b"first version"])
    second = s3_store.put_stream("ver/key", [b"second, longer version"])
    assert first.version_id and second.version_id and first.version_id != second.version_id
    read = s3_store.read_range
    assert read("ver/key", version_id=first.version_id, offset=0, length=100) == b"first version"
    assert read("ver/key", version_id=second.version_id, offset=0, length=6) == b"second"
    assert s3_store.size("ver/key", version_id=first.version_id) == len(b"first version")
    assert s3_store.exists("ver/key", version_id=first.version_id)
    s3_store.delete_all_versions("ver/key")
    assert not s3_store.exists("ver/key", version_id=first.version_id)
    with pytest.raises(BlobNotFoundError):
        read("ver/key", version_id=first.version_id, offset=0, length=1)


def test_s3_delete_all_versions_removes_delete_markers(
    s3_store: S3BlobStore, s3_admin: minio.Minio
) -> None:
    s3_store.put_bytes("dm/key", b"1")
    s3_store.put_bytes("dm/key", b"2")
    s3_admin.remove_object(s3_store.bucket, "dm/key")  # unversioned delete: a delete marker
    assert any(marker for _, marker in versions(s3_admin, s3_store.bucket, "dm/key"))
    assert s3_store.delete_all_versions("dm/key") == 3
    assert versions(s3_admin, s3_store.bucket, "dm/key") == []
    assert s3_store.delete_all_versions("dm/key") == 0


def test_s3_legal_hold_refuses_deletion_until_cleared(
    s3_store: S3BlobStore, s3_admin: minio.Minio
) -> None:
    bucket = s3_store.bucket
    assert s3_store.supports_object_lock()
    v1 = s3_store.put_bytes("hold/key", b"v1")
    s3_store.put_bytes("hold/key", b"v2")
    assert s3_store.set_legal_hold("hold/key", on=True) == 2
    assert s3_admin.is_object_legal_hold_enabled(bucket, "hold/key", version_id=v1)
    with pytest.raises(S3Error):
        s3_admin.remove_object(bucket, "hold/key", version_id=v1)
    with pytest.raises(BlobLockedError):
        s3_store.delete_all_versions("hold/key")
    assert len(versions(s3_admin, bucket, "hold/key")) == 2
    assert s3_store.set_legal_hold("hold/key", on=False) == 2
    assert s3_store.delete_all_versions("hold/key") == 2
    assert versions(s3_admin, bucket, "hold/key") == []


def test_s3_retention_refuses_deletion(s3_store: S3BlobStore, s3_admin: minio.Minio) -> None:
    until = datetime.now(UTC) + timedelta(minutes=10)
    version = s3_store.put_bytes("audit/cp.json", b"{}", retention_until=until)
    retention = s3_admin.get_object_retention(s3_store.bucket, "audit/cp.json", version_id=version)
    assert retention is not None and retention.mode == "COMPLIANCE"
    with pytest.raises(S3Error):
        s3_admin.remove_object(s3_store.bucket, "audit/cp.json", version_id=version)
    with pytest.raises(BlobLockedError):
        s3_store.delete_all_versions("audit/cp.json")
    assert s3_store.exists("audit/cp.json", version_id=version)


def test_s3_bucket_without_object_lock(weed: WeedServer) -> None:
    store = S3BlobStore.from_settings(
        endpoint=f"http://{weed.endpoint}",
        access_key=weed.access_key,
        secret_key=weed.secret_key,
        bucket=new_bucket_name(),
    )
    with pytest.raises(StoreUnavailableError):
        store.check()  # bucket missing: not ready
    store.ensure_bucket(object_lock=False)
    store.ensure_bucket(object_lock=False)  # idempotent
    store.check()
    assert not store.supports_object_lock()
    assert store.set_legal_hold("k", on=True) == 0
    first = store.put_bytes("k", b"a", retention_until=datetime.now(UTC) + timedelta(days=1))
    second = store.put_bytes("k", b"b")
    assert first and second and first != second  # versioned even without the lock
    assert store.delete_all_versions("k") == 2


def test_s3_ensure_bucket_with_object_lock(weed: WeedServer) -> None:
    store = S3BlobStore.from_settings(
        endpoint=weed.endpoint,
        access_key=weed.access_key,
        secret_key=weed.secret_key,
        bucket=new_bucket_name(),
    )
    store.ensure_bucket()
    store.ensure_bucket()
    store.check()
    assert store.supports_object_lock()


def test_s3_anonymous_and_wrong_credentials_are_refused(
    weed: WeedServer, s3_store: S3BlobStore
) -> None:
    s3_store.put_bytes("secret/key", b"ciphertext")
    anonymous = minio.Minio(weed.endpoint, secure=False)
    with pytest.raises(S3Error):
        anonymous.get_object(s3_store.bucket, "secret/key")
    with pytest.raises(S3Error):
        list(anonymous.list_objects(s3_store.bucket))
    with pytest.raises(S3Error):
        anonymous.put_object(s3_store.bucket, "planted", io.BytesIO(b"x"), 1)
    wrong = S3BlobStore.from_settings(
        endpoint=weed.endpoint,
        access_key=weed.access_key,
        secret_key="not-the-secret-key",
        bucket=s3_store.bucket,
    )
    with pytest.raises(StoreUnavailableError):
        wrong.check()
    assert not s3_store.exists("planted")


def test_s3_unreachable_endpoint_fails_fast() -> None:
    store = S3BlobStore.from_settings(
        endpoint=f"127.0.0.1:{free_port()}",  # nothing listens there
        access_key="x",
        secret_key="y",
        bucket="vault",
    )
    for call in (
        store.check,
        lambda: store.read_range("k", version_id="v", offset=0, length=1),
        lambda: store.put_stream("k", [os.urandom(10)]),
        lambda: store.delete_all_versions("k"),
        store.supports_object_lock,
    ):
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            call()
        assert time.monotonic() - started < 5
