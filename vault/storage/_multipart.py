"""A multipart upload with a few parts in flight, and a clean abort; the body reader and the
part sizing it uses.

minio's own parallel mode leaves its worker threads running when the body fails; here every
in-flight part is waited for before the upload is aborted, so nothing is sent after the abort.
Memory is bounded: ``in_flight`` parts plus the one being read.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import NoReturn

import minio
from minio.datatypes import Part

from vault.storage.base import exactly

MIB = 1024 * 1024
DEFAULT_PART_SIZE = 6 * MIB  # S3 minimum is 5 MiB; 10,000 parts without a size hint = 60 GB
PARTS_IN_FLIGHT = 2  # memory per upload: about PARTS_IN_FLIGHT + 1 parts
MAX_PART_SIZE = 5 * 1024 * MIB  # S3 limit
MAX_SINGLE_PUT = 5 * 1024 * MIB  # S3 limit of one PUT
MAX_PARTS = 10_000  # S3 limit; we aim below it to leave slack for a wrong size_hint


class SourceFailed(Exception):
    """Carries a failure of the caller's iterator through minio, which only aborts on Exception."""


class _Source:
    """The caller's iterator. Its failure is kept in ``source_error`` and raised as
    :class:`SourceFailed`, the one exception that minio and urllib3 pass through intact."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._source = iter(chunks)
        self.source_error: BaseException | None = None

    def _next(self) -> bytes | None:
        """The next chunk, or None at the end."""
        try:
            return next(self._source)
        except StopIteration:
            return None
        except BaseException as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> NoReturn:
        self.source_error = exc
        raise SourceFailed from exc


class ChunkReader(_Source):
    """A read()-able view of an iterator of byte chunks, for minio's put_object.

    minio reads ``part_size + 1`` bytes per call and appends what read() returns to its buffer;
    returning the whole requested amount at once keeps that to one copy per part instead of one
    per chunk, and only about one part is ever held in memory.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__(chunks)
        self._pending = b""
        self.size = 0

    def push_back(self, data: bytes) -> None:
        """Un-read ``data`` (a one-byte end-of-body probe)."""
        self._pending = data + self._pending
        self.size -= len(data)

    def read(self, n: int = -1) -> bytes:
        pieces = [self._pending]
        have = len(self._pending)
        while (n < 0 or have < n) and (chunk := self._next()) is not None:
            piece = bytes(chunk)
            pieces.append(piece)
            have += len(piece)
        self._pending = b""
        if 0 <= n < have:
            # Split only the last piece, so the big buffer is built exactly once by join().
            last = pieces[-1]
            keep = len(last) - (have - n)
            pieces[-1], self._pending = last[:keep], last[keep:]
        data = b"".join(pieces)
        self.size += len(data)
        return data


class ExactChunks(_Source):
    """The caller's chunks for a streaming PUT, held to their declared length
    (:func:`~vault.storage.base.exactly`, whose ``ValueError`` is a source failure here)."""

    def __init__(self, chunks: Iterable[bytes], size: int) -> None:
        super().__init__(exactly(chunks, size))
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        while (chunk := self._next()) is not None:
            self.size += len(chunk)
            yield chunk


def part_size_for(size_hint: int | None) -> int:
    if not size_hint:
        return DEFAULT_PART_SIZE
    needed = math.ceil(size_hint / (MAX_PARTS * 0.9))
    return min(MAX_PART_SIZE, max(DEFAULT_PART_SIZE, math.ceil(needed / MIB) * MIB))


def upload(
    client: minio.Minio,
    bucket: str,
    key: str,
    read_part: Callable[[], bytes],
    first: bytes,
    *,
    in_flight: int = 3,
) -> str | None:
    """Upload ``first`` and every further ``read_part()`` until it returns b""; the version id."""
    upload_id = client._create_multipart_upload(
        bucket, key, {"Content-Type": "application/octet-stream"}
    )
    parts: list[Part] = []
    pending: deque[tuple[int, Future[str]]] = deque()
    pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="callvault-part")
    try:
        number, data = 1, first
        while data:
            while len(pending) >= in_flight:
                done_number, future = pending.popleft()
                parts.append(Part(done_number, future.result()))
            pending.append(
                (
                    number,
                    pool.submit(client._upload_part, bucket, key, data, None, upload_id, number),
                )
            )
            number += 1
            data = b""  # drop our reference first: the pool holds the part until it is sent
            data = read_part()
        while pending:
            done_number, future = pending.popleft()
            parts.append(Part(done_number, future.result()))
        result = client._complete_multipart_upload(bucket, key, upload_id, parts)
    except BaseException as exc:
        pool.shutdown(wait=True, cancel_futures=True)
        try:
            client._abort_multipart_upload(bucket, key, upload_id)
        except Exception as abort_exc:
            exc.add_note(f"aborting the multipart upload failed as well: {abort_exc!r}")
        raise
    finally:
        pool.shutdown(wait=True)
    return result.version_id


def incomplete(client: minio.Minio, bucket: str, prefix: str) -> list[tuple[str, str, datetime]]:
    """(key, upload id, initiated) of every multipart upload never completed nor aborted."""
    found: list[tuple[str, str, datetime]] = []
    key_marker = upload_marker = None
    while True:
        page = client._list_multipart_uploads(
            bucket, prefix=prefix, key_marker=key_marker, upload_id_marker=upload_marker
        )
        for up in page.uploads:
            if up.upload_id and up.initiated_time is not None:
                found.append((up.object_name, up.upload_id, up.initiated_time))
        if not page.is_truncated:
            return found
        key_marker, upload_marker = page.next_key_marker, page.next_upload_id_marker
