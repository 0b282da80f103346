"""Key providers: a key-encryption key (KEK) is just an AEAD with versions.

``local`` keeps versioned KEKs in a keyring file; ``transit`` delegates to OpenBao / HashiCorp Vault
Transit. Both implement :class:`crypto.keys.base.KeyProvider`, the union of the small protocols
:class:`~crypto.keys.base.KeyWrapper`, :class:`~crypto.keys.base.KeyAdmin`,
:class:`~crypto.keys.base.Signer` and :class:`~crypto.keys.base.Pseudonymizer`.
"""

from crypto.keys.base import (
    ED25519_PUBLIC_KEY_SIZE,
    ED25519_SIGNATURE_SIZE,
    KeyAdmin,
    KeyProvider,
    KeyWrapper,
    Pseudonymizer,
    Signer,
    WrappedKey,
)

__all__ = [
    "ED25519_PUBLIC_KEY_SIZE",
    "ED25519_SIGNATURE_SIZE",
    "KeyAdmin",
    "KeyProvider",
    "KeyWrapper",
    "Pseudonymizer",
    "Signer",
    "WrappedKey",
]
