"""Ciphertext format v1: constants, and the arithmetic of sizes and segment offsets.

Private: ``crypto.streaming`` re-exports the public names.
"""

from __future__ import annotations

from crypto._primitives import AES256_KEY_SIZE, GCM_TAG_SIZE

MAGIC = b"CVLT"
FORMAT_VERSION = 1
#: The one definition of the DEK size: the stream key of AES256_GCM_HKDF_1MB, and what every
#: key provider wraps (``crypto.envelope`` and ``crypto.keys`` import it from here).
DEK_SIZE = 32
_COMMIT_INFO = b"callvault/v1/commit"
_COMMITMENT_SIZE = 32
VAULT_HEADER_SIZE = len(MAGIC) + 1 + 16 + _COMMITMENT_SIZE  # 53

SEGMENT_SIZE = 1 << 20  # ciphertext segment size of AES256_GCM_HKDF_1MB
TAG_SIZE = GCM_TAG_SIZE
_DERIVED_KEY_SIZE = AES256_KEY_SIZE  # each stream's segment key is an AES-256-GCM key
_SALT_SIZE = _DERIVED_KEY_SIZE  # Tink's format: the salt is as long as the derived key
_NONCE_PREFIX_SIZE = 7
STREAM_HEADER_SIZE = 1 + _SALT_SIZE + _NONCE_PREFIX_SIZE  # 40
HEADER_SIZE = VAULT_HEADER_SIZE + STREAM_HEADER_SIZE  # 93

# Tink's first segment shares its 1 MiB with the stream header.
FIRST_SEGMENT_PLAINTEXT = SEGMENT_SIZE - STREAM_HEADER_SIZE - TAG_SIZE  # 1,048,520
SEGMENT_PLAINTEXT = SEGMENT_SIZE - TAG_SIZE  # 1,048,560
_FIRST_SEGMENT_CIPHERTEXT = SEGMENT_SIZE - STREAM_HEADER_SIZE


# --- sizes and offsets --------------------------------------------------------------------------


def _segment_count(plaintext_len: int) -> int:
    if plaintext_len <= FIRST_SEGMENT_PLAINTEXT:
        return 1
    return 1 + -(-(plaintext_len - FIRST_SEGMENT_PLAINTEXT) // SEGMENT_PLAINTEXT)


def ciphertext_size(plaintext_size: int) -> int:
    """Object size for a plaintext of ``plaintext_size`` bytes."""
    if isinstance(plaintext_size, bool) or not isinstance(plaintext_size, int):
        raise TypeError("plaintext_size must be an int")
    if plaintext_size < 0:
        raise ValueError("plaintext_size must be >= 0")
    return HEADER_SIZE + plaintext_size + TAG_SIZE * _segment_count(plaintext_size)


def plaintext_size(ciphertext_size: int) -> int:
    """Inverse of :func:`ciphertext_size`; ``ValueError`` for a size no stream can have."""
    if isinstance(ciphertext_size, bool) or not isinstance(ciphertext_size, int):
        raise TypeError("ciphertext_size must be an int")
    body = ciphertext_size - HEADER_SIZE
    if body < TAG_SIZE:
        raise ValueError("ciphertext_size is too small for a stream")
    if body <= _FIRST_SEGMENT_CIPHERTEXT:
        return body - TAG_SIZE
    rest = body - _FIRST_SEGMENT_CIPHERTEXT
    full, last = divmod(rest, SEGMENT_SIZE)
    if last == 0:
        return body - TAG_SIZE * (1 + full)
    if last < TAG_SIZE:
        raise ValueError("ciphertext_size ends inside a segment tag")
    return body - TAG_SIZE * (2 + full)


def segment_index(plaintext_offset: int) -> int:
    """Index of the segment holding plaintext byte ``plaintext_offset``."""
    if plaintext_offset < FIRST_SEGMENT_PLAINTEXT:
        return 0
    return 1 + (plaintext_offset - FIRST_SEGMENT_PLAINTEXT) // SEGMENT_PLAINTEXT


def _segment_plaintext_start(index: int) -> int:
    return 0 if index == 0 else FIRST_SEGMENT_PLAINTEXT + (index - 1) * SEGMENT_PLAINTEXT


def segment_offset(index: int) -> int:
    """Object offset where ciphertext segment ``index`` begins."""
    if index == 0:
        return HEADER_SIZE
    return HEADER_SIZE + _FIRST_SEGMENT_CIPHERTEXT + (index - 1) * SEGMENT_SIZE


def segment_at(object_offset: int) -> int:
    """Index of the segment holding object byte ``object_offset`` (the header counts as 0)."""
    if object_offset < HEADER_SIZE + _FIRST_SEGMENT_CIPHERTEXT:
        return 0
    return 1 + (object_offset - HEADER_SIZE - _FIRST_SEGMENT_CIPHERTEXT) // SEGMENT_SIZE
