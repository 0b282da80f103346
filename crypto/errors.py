"""Errors raised by the crypto package.

Every authentication failure is the one opaque ``DecryptionError``: callers (and attackers) learn
nothing about *why* a ciphertext was rejected. Caller mistakes raise ``ValueError``/``TypeError``.
"""


class CryptoError(Exception):
    """Base class for errors of the crypto package."""


class DecryptionError(CryptoError):
    """The ciphertext, header or wrapped key failed authentication."""

    def __init__(self, message: str = "decryption failed") -> None:
        super().__init__(message)


class KeyProviderError(CryptoError):
    """The key provider is unreachable, misconfigured or refused the operation."""


class KeyringError(KeyProviderError):
    """The local keyring file is missing, unreadable or corrupted."""


class KeyDestroyedError(CryptoError):
    """The KEK version that wrapped this key has been retired (destroyed).

    This is the expected outcome of crypto-shredding: the wrapped key can never be opened again.
    """
