"""Private primitives: HKDF-SHA256, AES-256-GCM and randomness.

Only the recipes (``streaming``, ``envelope``) and the key providers use these. They are thin
wrappers around ``cryptography`` whose one job is to make failures uniform: every AEAD
authentication failure becomes the opaque :class:`crypto.errors.DecryptionError`.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import os
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crypto.errors import DecryptionError

#: A source of randomness: called with a byte count, returns that many bytes.
#: Injectable so tests can be deterministic; production always uses ``os.urandom``.
Rng = Callable[[int], bytes]

AES256_KEY_SIZE = 32
GCM_NONCE_SIZE = 12
GCM_TAG_SIZE = 16


def random_bytes(n: int, rng: Rng | None = None) -> bytes:
    """Return ``n`` random bytes from ``rng`` (default ``os.urandom``)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    out = (rng or os.urandom)(n)
    # A broken injected rng must never silently produce short keys or nonces.
    if not isinstance(out, bytes) or len(out) != n:
        raise ValueError(f"rng returned {len(out)!r} bytes, expected {n}")
    return out


def hkdf_sha256(ikm: bytes, *, salt: bytes | None, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869) extract-and-expand."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _aesgcm(key: bytes) -> AESGCM:
    # AES-128/192 are valid for AESGCM but never intended here: refuse them loudly.
    if len(key) != AES256_KEY_SIZE:
        raise ValueError("AES-256-GCM key must be 32 bytes")
    return AESGCM(key)


def aesgcm_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes | None) -> bytes:
    """Encrypt with AES-256-GCM; returns ``ciphertext || tag``."""
    if len(nonce) != GCM_NONCE_SIZE:
        raise ValueError("AES-GCM nonce must be 12 bytes")
    return _aesgcm(key).encrypt(nonce, plaintext, aad)


def aesgcm_open(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes | None) -> bytes:
    """Decrypt ``ciphertext || tag``; any failure is the opaque ``DecryptionError``."""
    if len(nonce) != GCM_NONCE_SIZE or len(ciphertext) < GCM_TAG_SIZE:
        raise DecryptionError()
    try:
        return _aesgcm(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        # ``from None``: the cause says nothing useful and must not leak into logs.
        raise DecryptionError() from None


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 (keyed pseudonyms: equal inputs give equal outputs, and nothing else)."""
    if len(key) < 32:
        raise ValueError("an HMAC key must be at least 32 bytes")
    return _hmac.new(key, message, hashlib.sha256).digest()
