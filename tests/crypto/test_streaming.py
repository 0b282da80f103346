"""Ciphertext format v1: Tink interop, sizes, random-access decryption."""

from __future__ import annotations

import io
import itertools
import os
import tracemalloc
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto import streaming
from crypto.streaming import (
    FIRST_SEGMENT_PLAINTEXT,
    HEADER_SIZE,
    SEGMENT_PLAINTEXT,
    SEGMENT_SIZE,
    TAG_SIZE,
    VAULT_HEADER_SIZE,
)
from tests.crypto._tink import tink_decrypt, tink_encrypt

SECOND_BOUNDARY = FIRST_SEGMENT_PLAINTEXT + SEGMENT_PLAINTEXT
BOUNDARY_SIZES = sorted(
    {0, 1}
    | {FIRST_SEGMENT_PLAINTEXT + d for d in range(-2, 3)}
    | {SECOND_BOUNDARY + d for d in range(-2, 3)}
)
RID = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
DEK = bytes(range(32))


class Trickle(io.RawIOBase):
    """A non-BytesIO source that returns short reads, like a socket or a pipe."""

    def __init__(self, data: bytes) -> None:
        self._src = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def, override]
        return self._src.readinto(memoryview(b)[:333_333])


SOURCES = {"buffer": io.BytesIO, "stream": Trickle}


@pytest.fixture(params=sorted(SOURCES))
def source(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Both code paths: zero-copy in-memory buffers and generic readable streams."""
    return SOURCES[request.param]


def enc(plaintext: bytes, *, dek: bytes = DEK, rid: uuid.UUID = RID, src=io.BytesIO) -> bytes:  # type: ignore[no-untyped-def]
    out = io.BytesIO()
    n = streaming.encrypt(src(plaintext), out, dek=dek, recording_id=rid)
    assert n == len(out.getvalue())
    return out.getvalue()


def dec(obj: bytes, *, dek: bytes = DEK, rid: uuid.UUID = RID, src=io.BytesIO) -> bytes:  # type: ignore[no-untyped-def]
    out = io.BytesIO()
    n = streaming.decrypt(src(obj), out, dek=dek, recording_id=rid)
    assert n == len(out.getvalue())
    return out.getvalue()


@pytest.fixture(scope="module")
def big_plaintext() -> bytes:
    return os.urandom(3 * SEGMENT_SIZE + 12345)


def test_header_layout() -> None:
    obj = enc(b"hello")
    assert obj[:4] == b"CVLT"
    assert obj[4] == 1
    assert obj[5:21] == RID.bytes
    assert obj[VAULT_HEADER_SIZE] == 40  # Tink's header length byte
    assert HEADER_SIZE == 93


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_tink_decrypts_our_objects(size: int, source) -> None:  # type: ignore[no-untyped-def]
    plaintext = os.urandom(size)
    obj = enc(plaintext, src=source)
    assert len(obj) == streaming.ciphertext_size(size)
    assert streaming.plaintext_size(len(obj)) == size
    # Tink sees tink_stream with the whole vault header as associated data.
    assert tink_decrypt(DEK, obj[VAULT_HEADER_SIZE:], obj[:VAULT_HEADER_SIZE]) == plaintext
    assert dec(obj, src=source) == plaintext


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_we_decrypt_tink_streams(size: int, source) -> None:  # type: ignore[no-untyped-def]
    plaintext = os.urandom(size)
    vault_header = enc(b"")[:VAULT_HEADER_SIZE]  # deterministic for (DEK, RID)
    obj = vault_header + tink_encrypt(DEK, plaintext, vault_header)
    assert len(obj) == streaming.ciphertext_size(size)
    assert dec(obj, src=source) == plaintext
    got = b"".join(
        streaming.decrypt_range(
            lambda o, n: obj[o : o + n],
            dek=DEK,
            recording_id=RID,
            ciphertext_size=len(obj),
            start=0,
            end=size,
        )
    )
    assert got == plaintext


def test_interop_few_mib_random(big_plaintext: bytes) -> None:
    obj = enc(big_plaintext)
    assert tink_decrypt(DEK, obj[VAULT_HEADER_SIZE:], obj[:VAULT_HEADER_SIZE]) == big_plaintext
    vault_header = obj[:VAULT_HEADER_SIZE]
    theirs = vault_header + tink_encrypt(DEK, big_plaintext, vault_header)
    assert dec(theirs) == big_plaintext


def test_push_encryptor_matches_format(big_plaintext: bytes) -> None:
    e = streaming.Encryptor(dek=DEK, recording_id=RID)
    parts = []
    for i in range(0, len(big_plaintext), 777_777):
        parts.append(e.update(big_plaintext[i : i + 777_777]))
    parts.append(e.finalize())
    obj = b"".join(parts)
    assert len(obj) == streaming.ciphertext_size(len(big_plaintext)) == e.ciphertext_bytes
    assert dec(obj) == big_plaintext
    assert tink_decrypt(DEK, obj[VAULT_HEADER_SIZE:], obj[:VAULT_HEADER_SIZE]) == big_plaintext


@pytest.mark.parametrize("size", [0, FIRST_SEGMENT_PLAINTEXT, SECOND_BOUNDARY])
def test_push_encryptor_exact_boundaries(size: int) -> None:
    plaintext = os.urandom(size)
    e = streaming.Encryptor(dek=DEK, recording_id=RID)
    obj = e.update(plaintext) + e.finalize()
    assert len(obj) == streaming.ciphertext_size(size)
    assert dec(obj) == plaintext
    with pytest.raises(ValueError):
        e.finalize()


@given(st.integers(min_value=0, max_value=1 << 40))
def test_size_functions_are_inverse(size: int) -> None:
    assert streaming.plaintext_size(streaming.ciphertext_size(size)) == size


@pytest.mark.parametrize("bad", [0, HEADER_SIZE, HEADER_SIZE + 15])
def test_plaintext_size_rejects_impossible_sizes(bad: int) -> None:
    with pytest.raises(ValueError):
        streaming.plaintext_size(bad)


def test_caller_mistakes_are_value_or_type_errors() -> None:
    with pytest.raises(ValueError):
        enc(b"x", dek=b"short")
    with pytest.raises(TypeError):
        streaming.encrypt(io.BytesIO(b"x"), io.BytesIO(), dek=DEK, recording_id=str(RID))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        streaming.encrypt(io.BytesIO(b"x"), io.BytesIO(), dek="k" * 32, recording_id=RID)  # type: ignore[arg-type]
    obj = enc(b"abc")
    with pytest.raises(ValueError):
        streaming.decrypt_range(
            lambda o, n: obj[o : o + n],
            dek=DEK,
            recording_id=RID,
            ciphertext_size=len(obj),
            start=2,
            end=4,
        )
    with pytest.raises(ValueError):
        streaming.ciphertext_size(-1)


class CountingReader:
    def __init__(self, obj: bytes) -> None:
        self.obj = obj
        self.calls: list[tuple[int, int]] = []

    def __call__(self, offset: int, length: int) -> bytes:
        self.calls.append((offset, length))
        return self.obj[offset : offset + length]

    @property
    def bytes_read(self) -> int:
        return sum(n for _, n in self.calls)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_decrypt_range_random(big_plaintext: bytes, data: st.DataObject) -> None:
    obj = _big_obj(big_plaintext)
    size = len(big_plaintext)
    start = data.draw(st.integers(0, size))
    end = data.draw(st.integers(start, size))
    reader = CountingReader(obj)
    got = b"".join(
        streaming.decrypt_range(
            reader, dek=DEK, recording_id=RID, ciphertext_size=len(obj), start=start, end=end
        )
    )
    assert got == big_plaintext[start:end]
    covering = 0 if start == end else (_seg(end - 1) - _seg(start) + 1)
    # +1: the last segment's read probes one byte past the end for appended data.
    assert reader.bytes_read <= HEADER_SIZE + covering * SEGMENT_SIZE + 1
    assert len(reader.calls) == 1 + covering


_OBJ_CACHE: dict[int, bytes] = {}


def _big_obj(plaintext: bytes) -> bytes:
    key = id(plaintext)
    if key not in _OBJ_CACHE:
        _OBJ_CACHE[key] = enc(plaintext)
    return _OBJ_CACHE[key]


def _seg(offset: int) -> int:
    if offset < FIRST_SEGMENT_PLAINTEXT:
        return 0
    return 1 + (offset - FIRST_SEGMENT_PLAINTEXT) // SEGMENT_PLAINTEXT


def test_encrypt_memory_is_constant() -> None:
    class Source(io.RawIOBase):
        """64 MiB of zeros that never exist in memory at once."""

        def __init__(self, total: int) -> None:
            self.left = total

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
            n = min(len(b), self.left, 300_000)
            b[:n] = bytes(n)
            self.left -= n
            return n

    class Sink(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b) -> int:  # type: ignore[no-untyped-def]
            return len(b)

    tracemalloc.start()
    try:
        n = streaming.encrypt(Source(64 << 20), Sink(), dek=DEK, recording_id=RID)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == streaming.ciphertext_size(64 << 20)
    assert peak < 8 << 20


@settings(max_examples=40, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=3 * SEGMENT_SIZE), max_size=12),
    kinds=st.lists(st.sampled_from(["bytes", "bytearray", "memoryview"]), min_size=1),
)
def test_encryptor_segments_any_chunking_and_buffer_kind(cuts: list[int], kinds: list[str]) -> None:
    """However the body is cut, and whatever buffers carry it, the object is the same format and
    decrypts to the body; a caller that reuses its buffer after a call cannot change what was
    sealed (mutable chunks are copied, bytes are held by reference)."""
    plaintext = os.urandom(2 * SEGMENT_SIZE + 4321)
    bounds = sorted({min(c, len(plaintext)) for c in cuts} | {0, len(plaintext)})
    e = streaming.Encryptor(dek=DEK, recording_id=RID)
    out: list[bytes] = []
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        kind = kinds[i % len(kinds)]
        buf = bytearray(plaintext[a:b])
        chunk = {"bytes": bytes(buf), "bytearray": buf, "memoryview": memoryview(buf)}[kind]
        pieces = e.segments(chunk)
        buf[:] = b"\0" * len(buf)  # the caller reuses its buffer
        # Whole segments only: the header alone, then full segments held back to the last.
        assert all(
            len(p) in (HEADER_SIZE, SEGMENT_SIZE, FIRST_SEGMENT_PLAINTEXT + TAG_SIZE)
            for p in pieces
        )
        out += pieces
    out.append(e.finalize())
    obj = b"".join(out)
    assert len(obj) == streaming.ciphertext_size(len(plaintext)) == e.ciphertext_bytes
    assert dec(obj) == plaintext
