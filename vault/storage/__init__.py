"""Blob stores: where encrypted recordings and audit exports live (floor 1: imports nothing else
from ``vault``).

``BlobStore`` is the protocol the services use; ``S3BlobStore`` and ``LocalBlobStore`` implement
it. All failures are ``StorageError`` subclasses.
"""

from vault.storage.base import BlobStore, PutResult, validate_key
from vault.storage.errors import (
    BlobLockedError,
    BlobNotFoundError,
    InvalidKeyError,
    StorageError,
    StorageUnavailableError,
)
from vault.storage.local import LocalBlobStore
from vault.storage.s3 import S3BlobStore

__all__ = [
    "BlobLockedError",
    "BlobNotFoundError",
    "BlobStore",
    "InvalidKeyError",
    "LocalBlobStore",
    "PutResult",
    "S3BlobStore",
    "StorageError",
    "StorageUnavailableError",
    "validate_key",
]
