"""Errors raised by the blob stores.

The API maps ``StorageUnavailableError`` to 503 (retry later) and everything else to a server
error; services catch ``BlobNotFoundError`` and ``BlobLockedError`` where they have a meaning.
"""


class StorageError(Exception):
    """Base class for blob-store failures."""


class StorageUnavailableError(StorageError):
    """The store cannot be reached (connection refused, timeout, 5xx, bucket or root missing)."""


class BlobNotFoundError(StorageError):
    """The key, or the requested version of it, does not exist."""


class BlobLockedError(StorageError):
    """The store refused to delete a version: S3 Object Lock (legal hold or retention) holds it."""


class InvalidKeyError(StorageError, ValueError):
    """The key is not a clean relative "/"-separated path (empty segment, "..", absolute, ...)."""
