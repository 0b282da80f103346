"""A streaming request body for the service's worker thread (ingest, transcripts).

The worker pulls the body in batches, one hop to the event loop per batch: the first of about
:data:`FIRST_BATCH` bytes, so that the recording's row and its upload start as soon as a segment
is there, then of about :data:`BATCH` (4 MiB: against 1 MiB, a quarter of the hops, and the
server's CPU per 256 MiB upload fell from 0.525-0.54 s to 0.475-0.49 s; 3 MiB more memory per
upload). Inside a batch the loop reads the ASGI ``receive`` channel directly, and the idle
timeout (no body bytes for ``idle`` seconds, the slow-loris guard) costs one clock read per
chunk: a watchdog timer wakes when the last byte is ``idle`` seconds old, and only then cancels
the read, instead of a cancel scope's deadline moved (a timer cancelled and re-armed) at every
64-256 KiB chunk (issue #12; on its own that change was within the noise of the server's CPU).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import anyio
import anyio.from_thread
from starlette.types import Receive

from vault.errors import IncompleteBodyError, UploadTimeoutError

__all__ = ["BATCH", "FIRST_BATCH", "RequestBody"]

FIRST_BATCH = 1 << 20
BATCH = 4 << 20


class RequestBody:
    """The body behind an ASGI ``receive``, read once, as an iterator for a worker thread."""

    def __init__(
        self, receive: Receive, *, idle: float, batch: int = BATCH, first: int = FIRST_BATCH
    ) -> None:
        self._receive = receive
        self._idle = idle
        self._batch = min(first, batch)  # the first batch's size; then `batch`
        self._later = batch
        self._done = False

    async def _next_batch(self) -> list[bytes]:
        if self._done:
            return []
        loop = asyncio.get_running_loop()
        parts: list[bytes] = []
        size = 0
        last = loop.time()  # when the last byte (or this batch's request) came

        def watchdog() -> None:
            nonlocal handle
            due = last + self._idle
            if loop.time() >= due:
                scope.cancel()
            else:  # bytes came meanwhile: look again when the newest is `idle` old
                handle = loop.call_at(due, watchdog)

        with anyio.CancelScope() as scope:
            handle = loop.call_at(last + self._idle, watchdog)
            try:
                while size < self._batch:
                    message = await self._receive()
                    last = loop.time()
                    if message["type"] != "http.request":  # http.disconnect
                        raise IncompleteBodyError(
                            "the client disconnected before the body was complete"
                        )
                    if chunk := message.get("body", b""):
                        parts.append(chunk)
                        size += len(chunk)
                    if not message.get("more_body", False):
                        self._done = True
                        break
            finally:
                handle.cancel()
        if scope.cancelled_caught:
            raise UploadTimeoutError(f"no body bytes for {self._idle:g} s; the upload was dropped")
        self._batch = self._later
        return parts

    def chunks(self) -> Iterator[bytes]:
        """The body's chunks as they came (not joined: the encryptor joins what a segment
        needs, once); blocking, for a worker thread that anyio started."""
        while batch := anyio.from_thread.run(self._next_batch):
            yield from batch
