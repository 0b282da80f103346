"""Blob store on a local directory: the embedded default.

Writes go to a temp file in the target directory, are fsynced and then renamed over the key, so
a reader sees either the old or the new object, never half of one, and a crash leaves at most a
``.tmp-*`` file behind. There are no versions: ``version_id`` is always None, and asking for any
other version is ``BlobNotFoundError`` (there is nothing but the current file). Object Lock does
not exist here; legal holds are enforced by callvault's own database only.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from vault.errors import (
    BlobNotFoundError,
    InvalidKeyError,
    StorageError,
    StoreUnavailableError,
)
from vault.storage.base import PutResult, exactly, validate_key

# Errors that mean "the disk is not usable right now" rather than "this request is wrong".
_UNAVAILABLE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENODEV}
_END = object()


@contextmanager
def _os_errors(key: str, *, reading: bool = True) -> Iterator[None]:
    """Translate OSError from our own file operations into storage errors."""
    try:
        yield
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        if reading:
            raise BlobNotFoundError(f"no blob {key!r}") from exc
        raise StorageError(f"cannot write {key!r}: {exc.strerror}") from exc
    except OSError as exc:
        if exc.errno in _UNAVAILABLE_ERRNOS:
            raise StoreUnavailableError(f"local store unusable: {exc.strerror}") from exc
        raise StorageError(f"local store failed on {key!r}: {exc.strerror}") from exc


def _fsync_dir(path: Path) -> None:
    # The rename is only durable once the directory entry itself is on disk.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobStore:
    """``BlobStore`` over a directory tree; keys map to files below ``root``."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root)

    @property
    def root(self) -> Path:
        return self._root

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self._root)!r})"

    # -- key handling -------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        validate_key(key)
        root = self._root.resolve()
        path = root.joinpath(*key.split("/"))
        # validate_key already refuses "..", but a symlinked directory inside the root could
        # still lead outside it; resolving catches that.
        if not path.resolve().is_relative_to(root):
            raise InvalidKeyError(f"blob key escapes the store root: {key!r}")
        return path

    @staticmethod
    def _check_version(key: str, version_id: str | None) -> None:
        if version_id is not None:
            raise BlobNotFoundError(f"local store has no version {version_id!r} of {key!r}")

    # -- writes -------------------------------------------------------------------------------

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        size_hint: int | None = None,
        exact_size: int | None = None,
    ) -> PutResult:
        path = self._path(key)
        with _os_errors(key, reading=False):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        size = 0
        try:
            with os.fdopen(fd, "wb") as fh:
                source = iter(chunks if exact_size is None else exactly(chunks, exact_size))
                while True:
                    # Exceptions from the caller's iterator propagate unchanged, only our own
                    # I/O errors are translated.
                    chunk = next(source, _END)
                    if chunk is _END:
                        break
                    with _os_errors(key, reading=False):
                        size += fh.write(chunk)  # type: ignore[arg-type]
                with _os_errors(key, reading=False):
                    fh.flush()
                    os.fsync(fh.fileno())
            with _os_errors(key, reading=False):
                os.replace(tmp_name, path)
                _fsync_dir(path.parent)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        return PutResult(version_id=None, size=size)

    def put_bytes(
        self, key: str, data: bytes, *, retention_until: datetime | None = None
    ) -> str | None:
        # No retention locally: the argument is accepted so callers need not care.
        return self.put_stream(key, [data]).version_id

    # -- reads --------------------------------------------------------------------------------

    def read_range(self, key: str, *, version_id: str | None, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        path = self._path(key)
        self._check_version(key, version_id)
        with _os_errors(key), path.open("rb") as fh:
            fh.seek(offset)
            return fh.read(length)

    def open_range(
        self, key: str, *, version_id: str | None, offset: int, length: int
    ) -> _FileBody:
        if offset < 0 or length <= 0:
            raise ValueError("offset must not be negative and length must be positive")
        path = self._path(key)
        self._check_version(key, version_id)
        with _os_errors(key):
            fh = path.open("rb")
        try:
            with _os_errors(key):
                size = os.fstat(fh.fileno()).st_size
                fh.seek(offset)
        except BaseException:
            fh.close()
            raise
        return _FileBody(fh, key, max(0, min(length, size - offset)))

    def size(self, key: str, *, version_id: str | None) -> int:
        path = self._path(key)
        self._check_version(key, version_id)
        with _os_errors(key):
            if not path.is_file():
                raise BlobNotFoundError(f"no blob {key!r}")
            return path.stat().st_size

    def exists(self, key: str, *, version_id: str | None = None) -> bool:
        path = self._path(key)
        if version_id is not None:
            return False
        with _os_errors(key):
            return path.is_file()

    # -- deletion and holds -------------------------------------------------------------------

    def delete_all_versions(
        self, key: str, *, between_versions: Callable[[], None] | None = None
    ) -> int:
        # One version per key here, so ``between_versions`` never runs.
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, IsADirectoryError):
            return 0  # idempotent; a directory is only a prefix of other keys, not a blob
        except OSError as exc:
            raise StorageError(f"local store failed to delete {key!r}: {exc.strerror}") from exc
        with _os_errors(key, reading=False):
            _fsync_dir(path.parent)
        return 1

    def list_versions(self, prefix: str) -> list[tuple[str, str | None]]:
        base = self._path(prefix.rstrip("/"))
        with _os_errors(prefix):
            if not base.is_dir():
                return []
            root = self._root.resolve()
            return sorted(
                (path.resolve().relative_to(root).as_posix(), None)
                for path in base.rglob("*")
                if path.is_file() and not path.name.startswith(".")
            )

    def incomplete_uploads(self, prefix: str = "") -> list[tuple[str, str, datetime]]:
        return []  # writes land whole (temp file + rename): nothing is ever left half-done

    def abort_upload(self, key: str, upload_id: str) -> None:
        self._path(key)

    def supports_object_lock(self) -> bool:
        return False

    def set_legal_hold(self, key: str, *, on: bool) -> int:
        self._path(key)  # still reject bad keys, so callers find bugs locally too
        return 0

    # -- lifecycle ----------------------------------------------------------------------------

    def check(self) -> None:
        root = self._root
        if not root.is_dir():
            raise StoreUnavailableError(f"blob root {str(root)!r} is not a directory")
        if not os.access(root, os.W_OK | os.X_OK):
            raise StoreUnavailableError(f"blob root {str(root)!r} is not writable")

    def ensure_bucket(self, object_lock: bool = True) -> None:
        with _os_errors(str(self._root), reading=False):
            self._root.mkdir(mode=0o700, parents=True, exist_ok=True)


class _FileBody:
    """:class:`~vault.storage.base.RangeBody` of a local file."""

    def __init__(self, fh: BinaryIO, key: str, length: int) -> None:
        self._fh, self._key, self.length = fh, key, length
        self._left = length

    def read(self, n: int) -> bytes:
        with _os_errors(self._key):
            data = self._fh.read(min(n, self._left))
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._fh.close()
