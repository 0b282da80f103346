"""The one small interface every key provider implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A DEK wrapped by one KEK version.

    ``ciphertext`` is opaque and provider specific. ``kek_version`` names the KEK version that
    wrapped it, so the metadata DB can track which rows still depend on which version.
    """

    kek_version: int
    ciphertext: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.kek_version, int) or self.kek_version < 1:
            raise ValueError("kek_version must be a positive int")
        if not isinstance(self.ciphertext, bytes):
            raise TypeError("ciphertext must be bytes")


@runtime_checkable
class KeyProvider(Protocol):
    """A versioned AEAD used as key-encryption key, plus the Ed25519 key that signs audit
    checkpoints.

    ``associated_data`` is always required: it binds a wrap to its context
    (``tenant || recording_id``) so that a wrapped DEK copied to another row cannot be opened.
    ``tenant`` selects the per-tenant key where the provider keeps one (Transit); the local
    keyring keeps one global key and relies on ``associated_data`` alone.
    """

    name: str

    def wrap(self, dek: bytes, *, tenant: str, associated_data: bytes) -> WrappedKey:
        """Encrypt ``dek`` under the newest KEK version."""
        ...

    def unwrap(self, wrapped: WrappedKey, *, tenant: str, associated_data: bytes) -> bytes:
        """Decrypt a wrapped DEK.

        Raises ``DecryptionError`` on any authentication failure (wrong context, tampering) and
        ``KeyDestroyedError`` when its KEK version has been retired.
        """
        ...

    def rewrap(self, wrapped: WrappedKey, *, tenant: str, associated_data: bytes) -> WrappedKey:
        """Move a wrapped DEK to the newest KEK version; the DEK never changes."""
        ...

    def rotate(self) -> int:
        """Add a new KEK version and return its number; it becomes the one ``wrap`` uses."""
        ...

    def retire(self, version: int) -> None:
        """Destroy every KEK version up to and including ``version``.

        The newest version can never be retired. Idempotent: retiring an already retired version
        is a no-op.
        """
        ...

    def current_version(self) -> int:
        """The newest KEK version (the one ``wrap`` uses)."""
        ...

    def live_versions(self) -> list[int]:
        """Versions that still exist (not retired), ascending."""
        ...

    def check(self) -> None:
        """Cheap readiness probe; raises ``KeyProviderError`` when the provider is unusable."""
        ...

    def sign(self, message: bytes) -> bytes:
        """Raw 64-byte Ed25519 signature over ``message`` (signed audit checkpoints).

        The signing key never leaves the provider (keyring file or Transit ``ed25519`` key).
        """
        ...

    def signing_public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key that verifies :meth:`sign`'s signatures."""
        ...
