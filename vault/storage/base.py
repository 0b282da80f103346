"""The blob-store contract shared by the S3 and local-directory stores.

Keys are "/"-separated relative paths chosen by callvault (e.g. ``tenant/recording-id/media``).
Both stores apply the same key rules, so a key that works locally also works on S3 and vice versa.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from vault.errors import InvalidKeyError

MAX_KEY_BYTES = 1024  # the S3 limit on object names


@dataclass(frozen=True, slots=True)
class PutResult:
    """Outcome of a write. ``version_id`` is None where the store has no versions (local)."""

    version_id: str | None
    size: int


# A backslash or a control character (checked on every read: one regex, not a loop per char).
_REFUSED = re.compile(r"[\x00-\x1f\x7f\\]")


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a clean relative path, else raise ``InvalidKeyError``.

    Segments may not be empty, ``.``/``..`` or start with a dot (the local store keeps its temp
    files under dot-names, and hidden files have no business in the vault). Backslashes and
    control characters are refused so that no platform reads the key as something else.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKeyError("blob key must be a non-empty string")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidKeyError("blob key is too long")
    if _REFUSED.search(key):
        raise InvalidKeyError("blob key contains a backslash or control character")
    if key.startswith("/"):
        raise InvalidKeyError("blob key must be relative")
    for segment in key.split("/"):
        if not segment or segment.startswith("."):
            raise InvalidKeyError(f"invalid segment in blob key: {segment!r}")
    return key


def exactly(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """``chunks``, held to ``put_stream``'s ``exact_size``: ``ValueError`` for a stream of any
    other length, raised before its last byte is handed on, so a store that counts bytes (S3's
    Content-Length) never sees a whole object otherwise."""
    source, sent = iter(chunks), 0
    for chunk in source:
        if sent + len(chunk) > size:
            raise ValueError(f"the stream is longer than {size} bytes")
        if sent + len(chunk) == size and any(source):  # the source must end here
            raise ValueError(f"the stream is longer than {size} bytes")
        sent += len(chunk)
        yield chunk
    if sent != size:
        raise ValueError(f"the stream was {sent} bytes, not {size}")


class RangeBody(Protocol):
    """An open :meth:`BlobStore.open_range`; close it to give up early."""

    #: How many bytes the body holds: what was asked for, or less where the object ends.
    length: int

    def read(self, n: int) -> bytes:
        """The next ``n`` bytes (fewer only when the body is cut short); ``StorageError`` (as
        ``StoreUnavailableError`` for a broken connection) when they cannot be read."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class BlobStore(Protocol):
    """What the services need from an object store.

    Every method raises ``StoreUnavailableError`` when the backend cannot be reached and
    ``InvalidKeyError`` for a malformed key.
    """

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        size_hint: int | None = None,
        exact_size: int | None = None,
    ) -> PutResult:
        """Store the concatenation of ``chunks`` under ``key`` in constant memory.

        The write is all-or-nothing: if ``chunks`` raises, the exception propagates unchanged and
        no object (nor an incomplete multipart upload) is left behind. ``exact_size`` promises
        the stream's length (a store may then send it as it comes, in one request); a stream of
        any other length raises ``ValueError`` and stores nothing.
        """
        ...

    def put_bytes(
        self, key: str, data: bytes, *, retention_until: datetime | None = None
    ) -> str | None:
        """Store a small object and return its version id.

        With ``retention_until`` and a bucket that has Object Lock, the version gets
        COMPLIANCE-mode retention; elsewhere the argument is ignored.
        """
        ...

    def read_range(self, key: str, *, version_id: str | None, offset: int, length: int) -> bytes:
        """Return up to ``length`` bytes from ``offset`` of exactly that version.

        Fewer bytes come back only at the end of the object (and none past it).
        """
        ...

    def open_range(
        self, key: str, *, version_id: str | None, offset: int, length: int
    ) -> RangeBody:
        """Up to ``length`` bytes from ``offset`` of exactly that version as one streaming read
        (one request on S3), for long reads; ``length`` must be positive. Past the end of the
        object the body is empty, and it is shorter than asked where the object ends."""
        ...

    def size(self, key: str, *, version_id: str | None) -> int:
        """Size in bytes of that version; ``BlobNotFoundError`` if it does not exist."""
        ...

    def exists(self, key: str, *, version_id: str | None = None) -> bool:
        """Whether the key (latest version, or that exact version) exists."""
        ...

    def delete_all_versions(
        self, key: str, *, between_versions: Callable[[], None] | None = None
    ) -> int:
        """Remove every version (and delete marker) of ``key``; return how many were removed.

        Idempotent: a missing key returns 0. Versions under Object Lock are skipped, the rest are
        removed, and then ``BlobLockedError`` is raised. ``between_versions`` runs between two
        removals (a crash point: a partial removal must be finished by the next run).
        """
        ...

    def list_versions(self, prefix: str) -> list[tuple[str, str | None]]:
        """(key, version id) of every object version under ``prefix`` (delete markers left
        out), by key; the version id is None where the store has no versions (local)."""
        ...

    def incomplete_uploads(self, prefix: str = "") -> list[tuple[str, str, datetime]]:
        """(key, upload id, initiated) of multipart uploads left unfinished under ``prefix``
        (a process killed mid-upload leaves them, invisible and billed); none where the store
        has no multipart uploads."""
        ...

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort one unfinished multipart upload (its parts are freed); idempotent."""
        ...

    def supports_object_lock(self) -> bool:
        """Whether legal holds and retention are enforced by the store."""
        ...

    def set_legal_hold(self, key: str, *, on: bool) -> int:
        """Set or clear the Object Lock legal hold on every version; return how many changed.

        Returns 0 without doing anything where the store has no Object Lock.
        """
        ...

    def check(self) -> None:
        """Readiness probe: raise ``StoreUnavailableError`` quickly if the store is unusable."""
        ...

    def ensure_bucket(self, object_lock: bool = True) -> None:
        """Create the bucket (S3, versioned, with Object Lock if asked) or the root directory."""
        ...
