"""Envelope recipe: per-recording DEKs wrapped by a key provider, bound to their context.

A DEK is 32 fresh random bytes per recording (and per derivative). Its wrap is bound to
``context(tenant, recording_id) = tenant (UTF-8) || recording_id (16 bytes)``: a wrapped DEK
copied to another row, tenant or recording fails with ``DecryptionError``. The recording id has a
fixed length and comes last, so the encoding is unambiguous without a separator.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid

from crypto._layout import DEK_SIZE
from crypto._primitives import Rng, random_bytes
from crypto.errors import DecryptionError
from crypto.keys.base import KeyWrapper, WrappedKey

__all__ = [
    "DEK_SIZE",  # re-exported: defined once in crypto._layout
    "context",
    "decode_wrapped",
    "encode_wrapped",
    "new_dek",
    "rewrap_dek",
    "unwrap_dek",
    "wrap_dek",
]

_WRAPPED_TEXT_TAG = "cvk1"
_WRAPPED_TEXT_RE = re.compile(_WRAPPED_TEXT_TAG + r":([1-9][0-9]{0,9}):([A-Za-z0-9_-]*={0,2})")


def context(tenant: str, recording_id: uuid.UUID) -> bytes:
    """The bytes a wrap is bound to: ``tenant || recording_id.bytes``."""
    if not isinstance(tenant, str) or not tenant:
        raise ValueError("tenant must be a non-empty str")
    if not isinstance(recording_id, uuid.UUID):
        raise TypeError("recording_id must be a uuid.UUID")
    return tenant.encode("utf-8") + recording_id.bytes


def new_dek(rng: Rng | None = None) -> bytes:
    """A fresh random ``DEK_SIZE``-byte DEK."""
    return random_bytes(DEK_SIZE, rng)


def wrap_dek(
    provider: KeyWrapper, dek: bytes, *, tenant: str, recording_id: uuid.UUID
) -> WrappedKey:
    """Wrap ``dek`` under the provider's newest KEK version, bound to its context."""
    if not isinstance(dek, bytes) or len(dek) != DEK_SIZE:
        raise ValueError(f"dek must be {DEK_SIZE} bytes")
    return provider.wrap(dek, tenant=tenant, associated_data=context(tenant, recording_id))


def unwrap_dek(
    provider: KeyWrapper, wrapped: WrappedKey, *, tenant: str, recording_id: uuid.UUID
) -> bytes:
    """Open a wrapped DEK; ``DecryptionError`` or ``KeyDestroyedError`` if it cannot be."""
    dek = provider.unwrap(wrapped, tenant=tenant, associated_data=context(tenant, recording_id))
    if len(dek) != DEK_SIZE:  # defence in depth against a misbehaving provider
        raise DecryptionError()
    return dek


def rewrap_dek(
    provider: KeyWrapper, wrapped: WrappedKey, *, tenant: str, recording_id: uuid.UUID
) -> WrappedKey:
    """Move a wrapped DEK to the newest KEK version; the DEK itself is unchanged."""
    return provider.rewrap(wrapped, tenant=tenant, associated_data=context(tenant, recording_id))


def encode_wrapped(wrapped: WrappedKey) -> str:
    """Text form for a DB column: ``cvk1:<kek_version>:<base64url ciphertext>``."""
    body = base64.urlsafe_b64encode(wrapped.ciphertext).decode("ascii")
    return f"{_WRAPPED_TEXT_TAG}:{wrapped.kek_version}:{body}"


def decode_wrapped(text: str) -> WrappedKey:
    """Inverse of :func:`encode_wrapped`; ``ValueError`` if ``text`` is malformed."""
    match = _WRAPPED_TEXT_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError("not an encoded wrapped key")
    try:
        ciphertext = base64.urlsafe_b64decode(match.group(2).encode("ascii"))
    except (binascii.Error, ValueError):
        raise ValueError("not an encoded wrapped key") from None
    if not ciphertext:
        raise ValueError("not an encoded wrapped key")
    return WrappedKey(kek_version=int(match.group(1)), ciphertext=ciphertext)
