"""Key providers: a key-encryption key (KEK) is just an AEAD with versions.

``local`` keeps versioned KEKs in a keyring file; ``transit`` delegates to OpenBao / HashiCorp Vault
Transit. Both implement :class:`crypto.keys.base.KeyProvider`.
"""

from crypto.keys.base import KeyProvider, WrappedKey

__all__ = ["KeyProvider", "WrappedKey"]
