"""The small interfaces a key provider implements, split by who needs what (as Tink keeps ``Aead``
small): the envelope recipe needs only :class:`KeyWrapper`, the ``kek-cycle`` job and setup need
:class:`KeyAdmin`, audit checkpoints need :class:`Signer`. :class:`KeyProvider` is all three.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

#: Raw Ed25519 sizes (RFC 8032): what :class:`Signer` returns, and what callers may rely on.
ED25519_PUBLIC_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64


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
class KeyWrapper(Protocol):
    """A versioned AEAD used as key-encryption key: wraps and unwraps DEKs.

    ``associated_data`` is required (and must be non-empty) because it binds a wrap to its context
    (``tenant || recording_id``): a wrapped DEK copied to another row cannot be opened. ``tenant``
    selects the per-tenant key where the provider keeps one (Transit); the local keyring keeps one
    global key and relies on ``associated_data`` alone.
    """

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


@runtime_checkable
class KeyAdmin(Protocol):
    """KEK version lifecycle: rotation, retirement (crypto-shredding) and readiness.

    Kept apart from :class:`KeyWrapper` so code that only encrypts cannot rotate or destroy keys.
    """

    def current_version(self) -> int:
        """The newest KEK version (the one ``wrap`` uses)."""
        ...

    def live_versions(self) -> list[int]:
        """Versions that still exist (not retired), ascending."""
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

    def created_at(self, version: int) -> datetime:
        """When a live KEK version was created (UTC; drives the rotation schedule).

        ``ValueError`` if it is not live.
        """
        ...

    def check(self) -> None:
        """Cheap readiness probe; raises ``KeyProviderError`` when the provider is unusable."""
        ...


@runtime_checkable
class Signer(Protocol):
    """The Ed25519 key that signs audit checkpoints.

    Only signatures and the public key come out: the private key never leaves the provider
    (keyring file or Transit ``ed25519`` key), so a verifier needs nothing secret.
    """

    def sign(self, message: bytes) -> bytes:
        """Raw ``ED25519_SIGNATURE_SIZE``-byte Ed25519 signature over ``message``."""
        ...

    def signing_public_key(self) -> bytes:
        """The raw ``ED25519_PUBLIC_KEY_SIZE``-byte public key that verifies :meth:`sign`."""
        ...


@runtime_checkable
class Pseudonymizer(Protocol):
    """A keyed pseudonym (HMAC-SHA256) under a key that is never rotated: equal values give
    equal pseudonyms forever, and nobody without the key can map one back or test a guess."""

    def pseudonym(self, value: bytes) -> bytes:
        """32 bytes, the same for the same ``value``."""
        ...


@runtime_checkable
class KeyProvider(KeyWrapper, KeyAdmin, Signer, Pseudonymizer, Protocol):
    """Everything a deployment's key provider offers; what ``vault.context.open_provider`` returns.

    Take the narrowest of the protocols you need; this composite is for wiring.
    """

    name: str


def check_wrap_inputs(tenant: str, associated_data: bytes) -> None:
    """The checks every provider makes before a wrap or unwrap."""
    if not isinstance(tenant, str) or not tenant:
        raise ValueError("tenant must be a non-empty str")
    if not isinstance(associated_data, bytes):
        raise TypeError("associated_data must be bytes")
    if not associated_data:
        # An empty context would make every wrap interchangeable between rows (and Transit's
        # derived keys need a context).
        raise ValueError("associated_data must not be empty")
