"""The read-ahead behind playback (issue #12): a long read is one streaming GET, resumed where a
connection broke, stopped when the reader closes, and never more than a few segments ahead of
its consumer. In memory, and against SeaweedFS through a proxy that cuts the store's answers.
(Playback over the real stores is in tests/vault/playback/.)"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto import streaming
from crypto.errors import DecryptionError
from tests.support.cutter import CuttingProxy
from tests.support.sealed import encrypted
from tests.support.weed import WeedServer
from vault.errors import StoreUnavailableError
from vault.recordings import windows
from vault.storage import S3BlobStore

SEG = streaming.SEGMENT_PLAINTEXT
_PLAIN = bytes(range(256)) * ((7 * SEG + 4_321) // 256)
_DEK, _RID = bytes(range(32)), uuid.UUID(int=7)


_OBJECT = encrypted(_PLAIN, dek=_DEK, recording_id=_RID)


class Body:
    """One open GET of ``_OBJECT``; ``breaks`` makes its n-th ``read`` fail (the connection
    drops) or come back short (the peer closed early)."""

    def __init__(self, store: Store, offset: int, length: int) -> None:
        self.store, self.pos = store, offset
        self.length = max(0, min(length, len(_OBJECT) - offset))
        self.end = offset + self.length
        self.closed = False

    def read(self, n: int) -> bytes:
        assert not self.closed
        self.store.reads += 1
        how = self.store.breaks.pop(self.store.reads, None)
        if how == "drop":
            raise StoreUnavailableError("connection reset")
        data = _OBJECT[self.pos : min(self.pos + n, self.end)]
        if how == "short":
            data = data[: len(data) // 2]
        self.pos += len(data)
        return data

    def close(self) -> None:
        self.closed = True


class Store:
    def __init__(self, **breaks: str) -> None:
        self.breaks = {int(k[1:]): v for k, v in breaks.items()}  # r3="drop": the 3rd read
        self.reads = 0
        self.opened: list[tuple[int, int]] = []
        self.bodies: list[Body] = []
        self.direct: list[tuple[int, int]] = []
        self.gate: threading.Event | None = None

    def read(self, offset: int, length: int) -> bytes:
        self.direct.append((offset, length))
        return _OBJECT[offset : offset + length]

    def open_range(self, offset: int, length: int) -> Body:
        self.opened.append((offset, length))
        body = Body(self, offset, length)
        self.bodies.append(body)
        return body

    def reader(self, start: int, end: int) -> windows.WindowReader:
        span = windows.ciphertext_span(len(_OBJECT), start, end)
        return windows.WindowReader(self.read, *span, open_range=self.open_range)

    def plaintext(self, start: int, end: int) -> bytes:
        reader = self.reader(start, end)
        try:
            return b"".join(streaming.decrypt_range(
                reader, dek=_DEK, recording_id=_RID, ciphertext_size=len(_OBJECT),
                start=start, end=end,
            ))  # fmt: skip
        finally:
            reader.close()


@pytest.fixture(autouse=True)
def _stream_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(windows, "STREAM_FROM", 0)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_a_streamed_read_is_exact_and_one_get(data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(_PLAIN) - 1))
    end = data.draw(st.integers(start + 1, len(_PLAIN)))
    windows.STREAM_FROM = 0  # (hypothesis runs outside the fixture's scope)
    store = Store()
    assert store.plaintext(start, end) == _PLAIN[start:end]
    lo, hi = windows.ciphertext_span(len(_OBJECT), start, end)
    first = 0 if lo == streaming.HEADER_SIZE else lo  # from 0 when the range needs the header
    # One GET of exactly the covering segments...
    assert store.opened == [(first, hi - first)]
    # ...and besides it, at most the header of a range that does not start at segment 0.
    assert store.direct in ([], [(0, streaming.HEADER_SIZE)])
    assert all(body.closed for body in store.bodies)


@pytest.mark.parametrize("how", ["drop", "short"])
def test_a_broken_connection_resumes_from_the_segment_it_broke_in(how: str) -> None:
    store = Store(r3=how)
    assert store.plaintext(0, len(_PLAIN)) == _PLAIN
    assert len(store.opened) == 2
    resumed_at = store.opened[1][0]
    # The third segment's read failed: the second GET starts at that segment, to the same end.
    assert resumed_at == streaming.segment_offset(2)
    assert sum(store.opened[1]) == sum(store.opened[0])
    assert all(body.closed for body in store.bodies)


def test_a_store_that_keeps_failing_ends_the_read() -> None:
    store = Store(r2="drop", r3="drop", r4="drop")
    with pytest.raises(StoreUnavailableError):
        store.plaintext(0, len(_PLAIN))
    assert len(store.opened) == 3  # the GET and two resumptions, then the error is the answer


def test_failures_apart_are_each_resumed() -> None:
    """Two resumptions in a row at most; a segment read in between starts the count again."""
    store = Store(r2="drop", r3="drop", r5="short", r6="drop", r8="drop")
    assert store.plaintext(0, len(_PLAIN)) == _PLAIN
    assert len(store.opened) == 6
    assert all(body.closed for body in store.bodies)


def test_the_read_ahead_is_bounded_and_closing_stops_the_get() -> None:
    store = Store()
    reader = store.reader(0, len(_PLAIN))
    chunks = streaming.decrypt_range(
        reader, dek=_DEK, recording_id=_RID, ciphertext_size=len(_OBJECT), start=0,
        end=len(_PLAIN),
    )  # fmt: skip
    assert next(chunks) == _PLAIN[: streaming.FIRST_SEGMENT_PLAINTEXT]
    # The consumer stalls: the producer fills its queue and waits; it never reads the object.
    deadline = threading.Event()
    for _ in range(50):
        if store.reads >= 1 + windows.STREAM_DEPTH + 1:
            break
        deadline.wait(0.01)
    assert store.reads <= 1 + windows.STREAM_DEPTH + 1 < 8
    reader.close()
    chunks.close()
    assert all(body.closed for body in store.bodies)
    stopped_at = store.reads
    deadline.wait(0.05)
    assert store.reads == stopped_at  # nothing read after close


def test_an_object_shorter_than_recorded_is_not_resumed_forever() -> None:
    """A truncated object: the GET says where it ends; decryption then refuses the stream."""
    cut = streaming.segment_offset(3) + 100
    store = Store()
    real = store.open_range

    def truncated(offset: int, length: int) -> Body:
        body = real(offset, length)
        body.end = min(body.end, cut)
        body.length = max(0, body.end - offset)
        return body

    store.open_range = truncated  # type: ignore[method-assign]
    with pytest.raises(DecryptionError):
        store.plaintext(0, len(_PLAIN))
    assert len(store.opened) == 1


# --- against SeaweedFS, its answers cut by a proxy ------------------------------------------------


@pytest.fixture
def cut_store(
    weed: WeedServer, s3_store: S3BlobStore
) -> Iterator[tuple[S3BlobStore, CuttingProxy]]:
    """The test bucket again, through a proxy that can cut SeaweedFS's answers mid-body."""
    host, port = weed.endpoint.split("//")[-1].rsplit(":", 1)
    proxy = CuttingProxy(host, int(port))
    store = S3BlobStore.from_settings(
        endpoint=proxy.endpoint, access_key=weed.access_key, secret_key=weed.secret_key,
        bucket=s3_store.bucket, secure=False,
    )  # fmt: skip
    try:
        yield store, proxy
    finally:
        proxy.close()


def _stored(s3_store: S3BlobStore) -> tuple[str, str | None]:
    put = s3_store.put_stream("t/cut/media", [_OBJECT])
    return "t/cut/media", put.version_id


def _read_all(store: S3BlobStore, key: str, version: str | None) -> bytes:
    return b"".join(windows.decrypted(
        store, object_key=key, version_id=version, ciphertext_size=len(_OBJECT),
        recording_id=_RID, dek=_DEK, start=0, end=len(_PLAIN),
    ))  # fmt: skip


def test_a_cut_connection_to_the_store_is_resumed(
    s3_store: S3BlobStore, cut_store: tuple[S3BlobStore, CuttingProxy]
) -> None:
    key, version = _stored(s3_store)
    store, proxy = cut_store
    proxy.arm(after=5 * streaming.SEGMENT_SIZE // 2)  # in the middle of the third segment
    assert _read_all(store, key, version) == _PLAIN
    assert proxy.cuts == 1


def test_a_store_whose_answers_keep_breaking_ends_the_read(
    s3_store: S3BlobStore, cut_store: tuple[S3BlobStore, CuttingProxy]
) -> None:
    key, version = _stored(s3_store)
    store, proxy = cut_store
    proxy.arm(after=streaming.SEGMENT_SIZE // 2, every=True)  # no segment ever arrives whole
    with pytest.raises(StoreUnavailableError):
        _read_all(store, key, version)
    assert proxy.cuts == 3  # the GET and two resumptions
