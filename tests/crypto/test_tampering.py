"""Every integrity failure is one opaque DecryptionError, and no failing plaintext escapes."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable

import pytest

from crypto import streaming
from crypto.errors import DecryptionError
from crypto.streaming import (
    FIRST_SEGMENT_PLAINTEXT,
    HEADER_SIZE,
    SEGMENT_PLAINTEXT,
    SEGMENT_SIZE,
    VAULT_HEADER_SIZE,
)
from tests.support.sealed import encrypted

RID = uuid.uuid4()
DEK = os.urandom(32)
# Four segments: 0 (short, shares the header's MiB), 1 and 2 full, 3 partial.
PLAINTEXT = os.urandom(FIRST_SEGMENT_PLAINTEXT + 2 * SEGMENT_PLAINTEXT + 5000)


OBJ = encrypted(PLAINTEXT, dek=DEK, recording_id=RID)
SEG = [HEADER_SIZE, HEADER_SIZE + SEGMENT_SIZE - 40]
SEG += [SEG[1] + SEGMENT_SIZE, SEG[1] + 2 * SEGMENT_SIZE]  # starts of segments 0..3
PT_BOUNDS = [
    0,
    FIRST_SEGMENT_PLAINTEXT,
    FIRST_SEGMENT_PLAINTEXT + SEGMENT_PLAINTEXT,
    FIRST_SEGMENT_PLAINTEXT + 2 * SEGMENT_PLAINTEXT,
]


def flip(pos: int) -> Callable[[bytes], bytes]:
    def f(obj: bytes) -> bytes:
        b = bytearray(obj)
        b[pos] ^= 0x01
        return bytes(b)

    return f


def swap_segments(obj: bytes) -> bytes:
    one, two = obj[SEG[1] : SEG[2]], obj[SEG[2] : SEG[3]]
    return obj[: SEG[1]] + two + one + obj[SEG[3] :]


TAMPERINGS: dict[str, Callable[[bytes], bytes]] = {
    "magic": flip(0),
    "version": flip(4),
    "recording_id": flip(7),
    "commitment": flip(40),
    "stream_header_length": flip(VAULT_HEADER_SIZE),
    "salt": flip(VAULT_HEADER_SIZE + 5),
    "nonce_prefix": flip(VAULT_HEADER_SIZE + 36),
    "segment0": flip(SEG[0] + 10),
    "segment1": flip(SEG[1] + 1000),
    "segment2_tag": flip(SEG[3] - 1),
    "last_segment": flip(len(OBJ) - 100),
    "truncate_at_boundary": lambda o: o[: SEG[3]],
    "truncate_mid_segment": lambda o: o[: SEG[2] + 777],
    "truncate_in_header": lambda o: o[:50],
    "append_bytes": lambda o: o + b"\x00" * 7,
    "append_segment_sized": lambda o: o + os.urandom(SEGMENT_SIZE),
    "swap_segments": swap_segments,
}


def _first_bad_segment(name: str, *, sized: bool = False) -> int:
    """Plaintext before this segment may be released: it is authentic.

    ``sized``: the reader knows the original size (from the DB), so a cut at a boundary
    shows at the first missing segment rather than at the new, wrongly flagged last one.
    """
    if sized and name == "truncate_at_boundary":
        return 3
    return {
        "segment1": 1,
        "segment2_tag": 2,
        "last_segment": 3,
        "truncate_at_boundary": 2,
        "truncate_mid_segment": 2,
        "append_bytes": 3,
        "append_segment_sized": 3,
        "swap_segments": 1,
    }.get(name, 0)


class Stream(io.RawIOBase):
    """Not a BytesIO, so decrypt takes its generic streaming path."""

    def __init__(self, data: bytes) -> None:
        self._src = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def, override]
        return self._src.readinto(b)


@pytest.mark.parametrize("source", [io.BytesIO, Stream])
@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_tampering_detected_by_decrypt(name: str, source: type) -> None:
    bad = TAMPERINGS[name](OBJ)
    out = io.BytesIO()
    with pytest.raises(DecryptionError) as info:
        streaming.decrypt(source(bad), out, dek=DEK, recording_id=RID)
    assert str(info.value) == "decryption failed"  # opaque
    released = out.getvalue()
    assert released == PLAINTEXT[: len(released)]
    assert len(released) <= PT_BOUNDS[_first_bad_segment(name)]


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_tampering_detected_by_decrypt_range(name: str) -> None:
    bad = TAMPERINGS[name](OBJ)
    released = bytearray()
    with pytest.raises(DecryptionError):
        # The DB keeps the original size; a truncated or extended object cannot match it.
        for chunk in streaming.decrypt_range(
            lambda o, n: bad[o : o + n],
            dek=DEK,
            recording_id=RID,
            ciphertext_size=len(OBJ),
            start=0,
            end=len(PLAINTEXT),
        ):
            released += chunk
    assert bytes(released) == PLAINTEXT[: len(released)]
    assert len(released) <= PT_BOUNDS[_first_bad_segment(name, sized=True)]


@pytest.mark.parametrize("cut", [SEG[3], SEG[2] + 777, SEG[1] + 10])
def test_truncated_object_with_its_own_size_fails(cut: int) -> None:
    """Even when the reader trusts the truncated object's size, the last flag exposes it."""
    bad = OBJ[:cut]
    try:
        total = streaming.plaintext_size(len(bad))
    except ValueError:
        total = 0  # an impossible size is itself an integrity failure in decrypt_range
    with pytest.raises(DecryptionError):
        list(
            streaming.decrypt_range(
                lambda o, n: bad[o : o + n],
                dek=DEK,
                recording_id=RID,
                ciphertext_size=len(bad),
                start=0,
                end=total,
            )
        )


def test_segment_swap_detected_in_range_read() -> None:
    bad = swap_segments(OBJ)
    with pytest.raises(DecryptionError):
        list(
            streaming.decrypt_range(
                lambda o, n: bad[o : o + n],
                dek=DEK,
                recording_id=RID,
                ciphertext_size=len(bad),
                start=PT_BOUNDS[2] + 10,
                end=PT_BOUNDS[2] + 20,
            )
        )


def test_other_recording_id_fails() -> None:
    with pytest.raises(DecryptionError):
        streaming.decrypt(io.BytesIO(OBJ), io.BytesIO(), dek=DEK, recording_id=uuid.uuid4())


def test_wrong_dek_fails_at_the_header() -> None:
    calls = []

    def read_at(o: int, n: int) -> bytes:
        calls.append((o, n))
        return OBJ[o : o + n]

    with pytest.raises(DecryptionError):
        list(
            streaming.decrypt_range(
                read_at,
                dek=os.urandom(32),
                recording_id=RID,
                ciphertext_size=len(OBJ),
                start=0,
                end=10,
            )
        )
    assert calls == [(0, HEADER_SIZE)]  # the commitment rejects it before any segment is read


def test_swapped_header_from_another_object_fails() -> None:
    other = encrypted(PLAINTEXT, dek=DEK, recording_id=RID)
    mixed = other[:HEADER_SIZE] + OBJ[HEADER_SIZE:]
    with pytest.raises(DecryptionError):
        streaming.decrypt(io.BytesIO(mixed), io.BytesIO(), dek=DEK, recording_id=RID)
