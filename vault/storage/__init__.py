"""Blob stores: where encrypted recordings and audit exports live (floor 1: imports only
``vault.errors`` from ``vault``).

``BlobStore`` is the protocol the services use; ``S3BlobStore`` and ``LocalBlobStore`` implement
it. Every failure is translated here, once, into a ``vault.errors.StorageError`` subclass:
nothing above this floor sees a minio or urllib3 exception.
"""

from vault.storage.base import BlobStore, PutResult, validate_key
from vault.storage.header_cache import HeaderCache
from vault.storage.local import LocalBlobStore
from vault.storage.locations import Location, Locations
from vault.storage.s3 import S3BlobStore

__all__ = [
    "BlobStore", "HeaderCache", "LocalBlobStore", "Location", "Locations", "PutResult",
    "S3BlobStore", "validate_key",
]  # fmt: skip
