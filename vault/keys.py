"""The key-provider boundary: the vault's one door to the KEK provider and crypto's envelope.

The provider is built with the runtime context (:func:`vault.context.open_provider`);
:class:`Keys` is how every service uses it: the envelope recipe (DEKs bound to
``tenant || recording_id``), key administration and audit signing, with each failure translated
here, once, into a domain error, so nothing above this floor imports ``crypto.errors``:

- ``KeyProviderError`` (unreachable, refused) -> ``KeyProviderUnavailableError`` (503);
- ``KeyDestroyedError`` (its KEK version was retired) -> ``vault.errors.KeyDestroyedError``;
- ``DecryptionError`` or a malformed stored wrap -> ``WrappedKeyInvalidError``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from crypto import envelope
from crypto import errors as crypto_errors
from crypto.keys.base import KeyProvider, WrappedKey
from vault.errors import (
    KeyDestroyedError,
    KeyProviderUnavailableError,
    WrappedKeyInvalidError,
)

__all__ = ["Keys", "translated"]

@contextmanager
def translated(what: str, *, stored: bool = False) -> Iterator[None]:
    """``stored``: the call reads a wrap from the database, so a malformed one (``ValueError``
    from decoding) is an integrity finding rather than a programming error."""
    invalid: tuple[type[Exception], ...] = (crypto_errors.DecryptionError,)
    if stored:
        invalid += (ValueError,)
    try:
        yield
    except crypto_errors.KeyDestroyedError:
        raise KeyDestroyedError(f"{what}: its KEK version has been retired") from None
    except crypto_errors.KeyProviderError as exc:
        raise KeyProviderUnavailableError(f"{what}: {exc}") from exc
    except invalid:
        raise WrappedKeyInvalidError(f"{what}: the wrapped key does not open") from None


class Keys:
    """The configured provider as the services see it (see the module docstring)."""

    # Methods that never reach the provider (safe inside a transaction).
    LOCAL = frozenset({"new_dek", "encode", "version_of"})

    def __init__(self, provider: KeyProvider) -> None:
        self.provider = provider

    # --- the envelope recipe ----------------------------------------------------------------

    @staticmethod
    def new_dek(rng: Callable[[int], bytes] | None = None) -> bytes:
        return envelope.new_dek(rng)

    def wrap_dek(self, dek: bytes, *, tenant_id: uuid.UUID, recording_id: uuid.UUID) -> WrappedKey:
        """Wrap under the provider's newest KEK version, bound to ``tenant || recording_id``."""
        with translated("wrap"):
            return envelope.wrap_dek(
                self.provider, dek, tenant=str(tenant_id), recording_id=recording_id
            )

    def unwrap_dek(self, stored: str, *, tenant_id: uuid.UUID, recording_id: uuid.UUID) -> bytes:
        """Open a wrapped DEK as stored in the recording row (``cvk1:...`` text)."""
        with translated("unwrap", stored=True):
            return envelope.unwrap_dek(
                self.provider, envelope.decode_wrapped(stored), tenant=str(tenant_id),
                recording_id=recording_id,
            )  # fmt: skip

    def rewrap_dek(
        self, stored: str, *, tenant_id: uuid.UUID, recording_id: uuid.UUID
    ) -> WrappedKey:
        """Move a stored wrap to the newest KEK version; the DEK itself never changes."""
        with translated("rewrap", stored=True):
            return envelope.rewrap_dek(
                self.provider, envelope.decode_wrapped(stored), tenant=str(tenant_id),
                recording_id=recording_id,
            )  # fmt: skip

    @staticmethod
    def encode(wrapped: WrappedKey) -> str:
        """The text form kept in the recording row."""
        return envelope.encode_wrapped(wrapped)

    @staticmethod
    def version_of(stored: str) -> int:
        """The KEK version a stored wrap names (``WrappedKeyInvalidError`` if malformed)."""
        with translated("decode", stored=True):
            return envelope.decode_wrapped(stored).kek_version

    # --- key administration -----------------------------------------------------------------

    def current_version(self) -> int:
        with translated("current version"):
            return self.provider.current_version()

    def live_versions(self) -> list[int]:
        with translated("live versions"):
            return self.provider.live_versions()

    def created_at(self, version: int) -> datetime:
        with translated("created_at"):
            return self.provider.created_at(version)

    def rotate(self) -> int:
        with translated("rotate"):
            return self.provider.rotate()

    def retire(self, version: int) -> None:
        with translated("retire"):
            self.provider.retire(version)

    def delete_tenant_key(self, tenant_id: uuid.UUID) -> bool:
        """Delete the tenant's own key where the provider keeps one (Transit): True once it is
        gone (idempotent). False when the provider keeps none per tenant (the local keyring's
        one global KEK serves every tenant)."""
        delete = getattr(self.provider, "delete_tenant_key", None)
        if delete is None:
            return False
        with translated("delete tenant key"):
            return bool(delete(str(tenant_id)))

    def check(self) -> None:
        with translated("check"):
            self.provider.check()

    # --- audit signing ----------------------------------------------------------------------

    def sign(self, message: bytes) -> bytes:
        with translated("sign"):
            return self.provider.sign(message)

    def signing_public_key(self) -> bytes:
        with translated("signing public key"):
            return self.provider.signing_public_key()

    # --- pseudonyms -------------------------------------------------------------------------

    def pseudonym(self, value: bytes) -> str:
        """Keyed pseudonym (hex HMAC-SHA256) under a key the KEK cycle never rotates."""
        with translated("pseudonym"):
            return self.provider.pseudonym(value).hex()
