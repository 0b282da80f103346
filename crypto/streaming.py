"""Segmented streaming AEAD for recording objects (ciphertext format v1).

``object = vault_header || tink_stream`` where

- ``vault_header = b"CVLT" || 0x01 || recording_id (16) || commitment (32)`` and the commitment is
  ``HKDF-SHA256(ikm=DEK, salt=recording_id, info=b"callvault/v1/commit", L=32)``;
- ``tink_stream`` is byte-compatible with Tink's ``AES256_GCM_HKDF_1MB`` streaming AEAD, keyed by
  the DEK, with the whole ``vault_header`` as associated data.

Memory use is constant (two segments) whatever the input size, and ``decrypt_range`` fetches and
authenticates only the segments covering the requested plaintext range.
"""

from __future__ import annotations

import hmac
import io
import struct
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto._layout import (
    _COMMIT_INFO,
    _COMMITMENT_SIZE,
    _DERIVED_KEY_SIZE,
    _FIRST_SEGMENT_CIPHERTEXT,
    _NONCE_PREFIX_SIZE,
    _SALT_SIZE,
    DEK_SIZE,
    FIRST_SEGMENT_PLAINTEXT,
    FORMAT_VERSION,
    HEADER_SIZE,
    MAGIC,
    SEGMENT_PLAINTEXT,
    SEGMENT_SIZE,
    STREAM_HEADER_SIZE,
    TAG_SIZE,
    VAULT_HEADER_SIZE,
    _segment_count,
    _segment_plaintext_start,
    ciphertext_size,
    plaintext_size,
    segment_at,
    segment_index,
    segment_offset,
)
from crypto._primitives import Rng, hkdf_sha256, random_bytes
from crypto.errors import DecryptionError

ReadAt = Callable[[int, int], bytes]

__all__ = [
    "HEADER_SIZE",
    "SEGMENT_SIZE",
    "VAULT_HEADER_SIZE",
    "Encryptor",
    "ciphertext_size",
    "decrypt",
    "decrypt_range",
    "encrypt",
    "plaintext_size",
    "segment_at",
    "segment_index",
    "segment_offset",
]

# Format constants and size arithmetic live in the private ``_layout`` module.


# --- header and keys ----------------------------------------------------------------------------


def _check_key_args(dek: object, recording_id: object) -> None:
    if not isinstance(dek, bytes | bytearray | memoryview):
        raise TypeError("dek must be bytes")
    if len(dek) != DEK_SIZE:
        raise ValueError(f"dek must be {DEK_SIZE} bytes")
    if not isinstance(recording_id, uuid.UUID):
        raise TypeError("recording_id must be a uuid.UUID")


def _vault_header(dek: bytes, recording_id: uuid.UUID) -> bytes:
    commitment = hkdf_sha256(
        bytes(dek), salt=recording_id.bytes, info=_COMMIT_INFO, length=_COMMITMENT_SIZE
    )
    return MAGIC + bytes([FORMAT_VERSION]) + recording_id.bytes + commitment


class _SegmentCipher:
    """AES-GCM over Tink segments: nonce = prefix || BE32(index) || last-flag, no segment AAD."""

    __slots__ = ("_aead", "_prefix")

    def __init__(self, dek: bytes, vault_header: bytes, salt: bytes, nonce_prefix: bytes) -> None:
        # Tink derives the segment key with the stream's associated data as HKDF info.
        key = hkdf_sha256(bytes(dek), salt=salt, info=vault_header, length=_DERIVED_KEY_SIZE)
        self._aead = AESGCM(key)
        self._prefix = nonce_prefix

    def _nonce(self, index: int, last: bool) -> bytes:
        if index >= 1 << 32:
            raise ValueError("stream too long: more than 2**32 segments")
        return self._prefix + struct.pack(">IB", index, 1 if last else 0)

    def seal(self, index: int, last: bool, data: memoryview | bytes) -> bytes:
        """A segment's ciphertext as a new object (no copy out of a reused buffer)."""
        return self._aead.encrypt(self._nonce(index, last), data, None)

    def seal_into(self, index: int, last: bool, data: memoryview, out: memoryview) -> memoryview:
        n = len(data) + TAG_SIZE
        self._aead.encrypt_into(self._nonce(index, last), data, None, out[:n])
        return out[:n]

    def open(self, index: int, last: bool, data: memoryview) -> bytes:
        """A segment's plaintext as a new object, for a consumer that keeps it (no copy out of
        a reused buffer afterwards)."""
        if len(data) < TAG_SIZE:
            raise DecryptionError()
        try:
            return self._aead.decrypt(self._nonce(index, last), data, None)
        except InvalidTag:
            raise DecryptionError() from None

    def open_into(self, index: int, last: bool, data: memoryview, out: memoryview) -> memoryview:
        if len(data) < TAG_SIZE:
            raise DecryptionError()
        n = len(data) - TAG_SIZE
        try:
            self._aead.decrypt_into(self._nonce(index, last), data, None, out[:n])
        except InvalidTag:
            raise DecryptionError() from None
        return out[:n]


def _open_header(header: bytes, dek: bytes, recording_id: uuid.UUID) -> _SegmentCipher:
    """Check the vault header (commitment in constant time) and the Tink stream header."""
    if len(header) != HEADER_SIZE:
        raise DecryptionError()
    expected = _vault_header(dek, recording_id)
    vault_header = header[:VAULT_HEADER_SIZE]
    if not hmac.compare_digest(vault_header, expected):
        raise DecryptionError()
    stream_header = header[VAULT_HEADER_SIZE:]
    if stream_header[0] != STREAM_HEADER_SIZE:
        raise DecryptionError()
    salt = stream_header[1 : 1 + _SALT_SIZE]
    prefix = stream_header[1 + _SALT_SIZE :]
    return _SegmentCipher(dek, vault_header, salt, prefix)


# --- encryption ---------------------------------------------------------------------------------


class Encryptor:
    """Push-style encryptor for sources that arrive in chunks (an HTTP request body).

    :meth:`segments` returns the ciphertext completed so far, one sealed segment per item (the
    header comes first, with the first call); :meth:`finalize` returns the rest. A full segment
    is held back until more data arrives, because only then is it known not to be the last one.

    Copies (issue #12: ingest is CPU-bound beside the store): ``bytes`` chunks are held by
    reference, and a segment is sealed straight from a chunk that covers it; only a segment
    that spans chunks is joined, once. Each sealed segment is a new object, never a view of a
    reused buffer. A mutable chunk (``bytearray``, ``memoryview``) is copied when it arrives,
    because its owner may reuse it.
    """

    def __init__(self, *, dek: bytes, recording_id: uuid.UUID, rng: Rng | None = None) -> None:
        _check_key_args(dek, recording_id)
        vault_header = _vault_header(bytes(dek), recording_id)
        salt = random_bytes(_SALT_SIZE, rng)
        prefix = random_bytes(_NONCE_PREFIX_SIZE, rng)
        self._cipher = _SegmentCipher(bytes(dek), vault_header, salt, prefix)
        self._header = vault_header + bytes([STREAM_HEADER_SIZE]) + salt + prefix
        self._held: deque[memoryview] = deque()  # plaintext not sealed yet, in order
        self._held_len = 0
        self._index = 0
        self._header_sent = False
        self._finished = False
        self.plaintext_bytes = 0
        self.ciphertext_bytes = 0

    def _capacity(self) -> int:
        return FIRST_SEGMENT_PLAINTEXT if self._index == 0 else SEGMENT_PLAINTEXT

    def _start(self) -> list[bytes]:
        if self._finished:
            raise ValueError("encryptor already finalized")
        if self._header_sent:
            return []
        self._header_sent = True
        return [self._header]

    def segments(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Take ``data``; return the header (first call) and the segments it completed."""
        out = self._start()
        if data:
            piece = memoryview(data if isinstance(data, bytes) else bytes(data)).cast("B")
            self._held.append(piece)
            self._held_len += len(piece)
            self.plaintext_bytes += len(piece)
        while self._held_len > self._capacity():
            out.append(self._seal(last=False))
        self.ciphertext_bytes += sum(map(len, out))
        return out

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        """:meth:`segments`, joined."""
        return b"".join(self.segments(data))

    def finalize(self) -> bytes:
        out = self._start()
        out.append(self._seal(last=True))
        self._finished = True
        self.ciphertext_bytes += sum(map(len, out))
        return b"".join(out)

    def _seal(self, *, last: bool) -> bytes:
        sealed = self._cipher.seal(
            self._index, last, self._take(min(self._capacity(), self._held_len))
        )
        self._index += 1
        return sealed

    def _take(self, n: int) -> memoryview | bytes:
        """The next ``n`` held bytes: a view when one chunk covers them, else joined once."""
        self._held_len -= n
        if n == 0:
            return b""
        first = self._held[0]
        if len(first) >= n:
            if len(first) == n:
                self._held.popleft()
            else:
                self._held[0] = first[n:]
            return first[:n]
        pieces: list[memoryview] = []
        while n:
            piece = self._held.popleft()
            if len(piece) > n:
                self._held.appendleft(piece[n:])
                piece = piece[:n]
            pieces.append(piece)
            n -= len(piece)
        return b"".join(pieces)


def _read_full(src: BinaryIO, buf: memoryview) -> int:
    """Fill ``buf`` unless EOF comes first; short reads from sockets/pipes are retried."""
    readinto = getattr(src, "readinto", None)
    got = 0
    while got < len(buf):
        if readinto is not None:
            n = readinto(buf[got:])
        else:
            chunk = src.read(len(buf) - got)
            n = len(chunk) if chunk else 0
            buf[got : got + n] = chunk or b""
        if not n:
            break
        got += n
    return got


def encrypt(
    src: BinaryIO, dst: BinaryIO, *, dek: bytes, recording_id: uuid.UUID, rng: Rng | None = None
) -> int:
    """Encrypt ``src`` into ``dst`` as one object body; return the ciphertext bytes written."""
    _check_key_args(dek, recording_id)
    vault_header = _vault_header(bytes(dek), recording_id)
    salt = random_bytes(_SALT_SIZE, rng)
    prefix = random_bytes(_NONCE_PREFIX_SIZE, rng)
    cipher = _SegmentCipher(bytes(dek), vault_header, salt, prefix)
    header = vault_header + bytes([STREAM_HEADER_SIZE]) + salt + prefix
    dst.write(header)
    written = len(header)

    return written + _segments(
        src, dst, cipher.seal_into,
        first=FIRST_SEGMENT_PLAINTEXT, rest=SEGMENT_PLAINTEXT, out_size=SEGMENT_SIZE,
    )  # fmt: skip


# Segment i is processed only once we know whether segment i+1 has any bytes: that decides its
# last-segment flag. Encryption and decryption share these loops; only sizes and step differ.
Step = Callable[[int, bool, memoryview, memoryview], memoryview]


def _segments(
    src: BinaryIO, dst: BinaryIO, step: Step, *, first: int, rest: int, out_size: int
) -> int:
    """Run ``step`` over the segments of ``src`` (first one ``first`` bytes, then ``rest``);
    write its outputs to ``dst`` and return their total length."""
    if isinstance(src, io.BytesIO):
        return _segments_in_buffer(src, dst, step, first=first, rest=rest, out_size=out_size)
    cur = memoryview(bytearray(rest))
    nxt = memoryview(bytearray(rest))
    out = memoryview(bytearray(out_size))
    index, produced = 0, 0
    cur_len = _read_full(src, cur[:first])
    while True:
        full = cur_len == (first if index == 0 else rest)
        nxt_len = _read_full(src, nxt) if full else 0
        last = nxt_len == 0
        result = step(index, last, cur[:cur_len], out)
        dst.write(result)
        produced += len(result)
        if last:
            return produced
        cur, nxt = nxt, cur
        cur_len = nxt_len
        index += 1


def _segments_in_buffer(
    src: io.BytesIO, dst: BinaryIO, step: Step, *, first: int, rest: int, out_size: int
) -> int:
    """Zero-copy path for in-memory sources: ``step`` works on slices of the buffer itself."""
    start = src.tell()
    produced = 0
    # getvalue() hands back the shared bytes object without copying (getbuffer() would copy it).
    with memoryview(src.getvalue()) as whole:
        view = whole[start:]
        out = memoryview(bytearray(out_size))
        total = len(view)
        index, pos = 0, 0
        while True:
            n = min(first if index == 0 else rest, total - pos)
            last = pos + n == total
            result = step(index, last, view[pos : pos + n], out)
            dst.write(result)
            produced += len(result)
            pos += n
            if last:
                break
            index += 1
        view.release()
    src.seek(start + total)
    return produced


# --- decryption ---------------------------------------------------------------------------------


def decrypt(src: BinaryIO, dst: BinaryIO, *, dek: bytes, recording_id: uuid.UUID) -> int:
    """Decrypt a whole object body from ``src`` into ``dst``; return the plaintext bytes.

    Each segment is authenticated before any of its plaintext is written. A stream that is
    truncated, extended or reordered fails at the segment where that shows.
    """
    _check_key_args(dek, recording_id)
    header = bytearray(HEADER_SIZE)
    if _read_full(src, memoryview(header)) != HEADER_SIZE:
        raise DecryptionError()
    cipher = _open_header(bytes(header), bytes(dek), recording_id)
    return _segments(
        src, dst, cipher.open_into,
        first=_FIRST_SEGMENT_CIPHERTEXT, rest=SEGMENT_SIZE, out_size=SEGMENT_PLAINTEXT,
    )  # fmt: skip


def decrypt_range(
    read_at: ReadAt,
    *,
    dek: bytes,
    recording_id: uuid.UUID,
    ciphertext_size: int,
    start: int,
    end: int,
) -> Iterator[bytes]:
    """Yield plaintext ``[start, end)`` reading only the header and the covering segments.

    ``read_at(offset, length)`` returns ciphertext bytes, e.g. from one ranged GET. Validation of
    the arguments happens on the first ``next()``; every segment is authenticated before any of
    its bytes are yielded, so a consumer can re-check authorisation between segments.
    """
    _check_key_args(dek, recording_id)
    for name, value in (("start", start), ("end", end), ("ciphertext_size", ciphertext_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int")
    try:
        total = plaintext_size(ciphertext_size)
    except ValueError:
        raise DecryptionError() from None
    if not 0 <= start <= end <= total:
        raise ValueError(f"range [{start}, {end}) outside plaintext of {total} bytes")
    return _range_iter(read_at, bytes(dek), recording_id, ciphertext_size, total, start, end)


def _read_exact(read_at: ReadAt, offset: int, length: int, *, probe_eof: bool = False) -> bytes:
    data = read_at(offset, length + 1 if probe_eof else length)
    if len(data) != length:
        raise DecryptionError()
    return data


def _range_iter(
    read_at: ReadAt,
    dek: bytes,
    recording_id: uuid.UUID,
    size: int,
    total: int,
    start: int,
    end: int,
) -> Iterator[bytes]:
    cipher = _open_header(_read_exact(read_at, 0, HEADER_SIZE), dek, recording_id)
    if start == end:
        return
    last_index = _segment_count(total) - 1
    out: memoryview | None = None  # for partial segments only
    for index in range(segment_index(start), segment_index(end - 1) + 1):
        c_start = segment_offset(index)
        c_end = min(c_start + (_FIRST_SEGMENT_CIPHERTEXT if index == 0 else SEGMENT_SIZE), size)
        last = index == last_index
        # For the last segment ask one byte past the end: anything there is appended data.
        data = _read_exact(read_at, c_start, c_end - c_start, probe_eof=last)
        p_start = _segment_plaintext_start(index)
        p_len = c_end - c_start - TAG_SIZE
        lo = max(start - p_start, 0)
        hi = min(end - p_start, p_len)
        if (lo, hi) == (0, p_len):  # a whole segment: decrypted straight into what is yielded
            yield cipher.open(index, last, memoryview(data))
            continue
        if out is None:
            out = memoryview(bytearray(SEGMENT_PLAINTEXT))
        plain = cipher.open_into(index, last, memoryview(data), out)
        yield bytes(plain[lo:hi])
