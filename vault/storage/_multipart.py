"""A multipart upload with a few parts in flight, and a clean abort.

minio's own parallel mode leaves its worker threads running when the body fails; here every
in-flight part is waited for before the upload is aborted, so nothing is sent after the abort.
Memory is bounded: ``in_flight`` parts plus the one being read.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime

import minio
from minio.datatypes import Part


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
