"""Windowed, read-ahead segment fetching for playback.

``decrypt_range`` asks for one segment at a time; a ranged GET has milliseconds of fixed cost,
so :class:`WindowReader` serves those reads from larger windows fetched ahead in helper threads:
a short read (a seek) from windows of their own GETs, a long one (a download, a player's
open-ended range) from one streaming GET, resumed where a connection breaks.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator

from crypto import streaming
from vault.errors import StoreUnavailableError
from vault.storage import BlobStore, HeaderCache
from vault.storage.base import RangeBody
from vault.txcount import carry

# Segment reads are served from windows of whole segments, each fetched with one ranged GET: a
# GET has milliseconds of fixed cost on S3 (SeaweedFS: ~4 ms for 1 MiB, ~10 ms for 8 MiB), so one
# GET per segment would cap playback far below a plain download. Windows start small (a player's
# seek gets its first bytes quickly), double up to WINDOW_MAX_SEGMENTS, never reach past the
# segments of the requested range, and PREFETCH windows are fetched ahead in helper threads
# while the current one is decrypted and sent: at most (PREFETCH + 1) windows of memory.
WINDOW_MIN_SEGMENTS = 2
WINDOW_MAX_SEGMENTS = 8
PREFETCH = 2
# A read longer than STREAM_FROM bytes (a download, a player's open-ended range) is one
# streaming GET instead, read STREAM_DEPTH segments ahead: a GET per window costs the store
# CPU too, which a plain download does not pay (issue #12).
STREAM_FROM = 2 * WINDOW_MAX_SEGMENTS * streaming.SEGMENT_SIZE
STREAM_DEPTH = 4


def ciphertext_span(ciphertext_size: int, start: int, end: int) -> tuple[int, int]:
    """The object bytes ``[lo, hi)`` that ``decrypt_range`` reads for plaintext ``[start, end)``
    besides the header: the covering segments, plus the one-byte end-of-stream probe when the
    last of them ends the object. Only a bound for read-ahead: reads outside it still work."""
    if start >= end:
        return streaming.HEADER_SIZE, streaming.HEADER_SIZE
    lo = streaming.segment_offset(streaming.segment_index(start))
    hi = min(streaming.segment_offset(streaming.segment_index(end - 1) + 1), ciphertext_size)
    return lo, hi + 1 if hi == ciphertext_size else hi


class _Fetch(threading.Thread):
    """One window GET in the background; ``result()`` joins and re-raises its error."""

    def __init__(self, read: Callable[[int, int], bytes], offset: int, length: int) -> None:
        super().__init__(name="callvault-prefetch", daemon=True)
        self.offset, self.length = offset, length
        # carry: the GET counts as the reader's own work for the no-transaction guard, as of
        # when it started (a playback's first windows overlap its read event's commit).
        self._read = carry(read, as_started=True)
        self._data = b""
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._data = self._read(self.offset, self.length)
        except BaseException as exc:  # handed over to the consuming thread
            self._error = exc

    def result(self) -> bytes:
        self.join()
        if self._error is not None:
            raise self._error
        return self._data


class _Known:
    """A header already at hand, in place of its fetch."""

    def __init__(self, header: bytes) -> None:
        self._header = header

    def result(self) -> bytes:
        return self._header

    def join(self) -> None:
        pass


class _Prefetched:
    """Windows of ``[next_at, hi)`` fetched ahead, each by its own ranged GET in a helper thread:
    the first GETs of a short read (a seek) answer soonest."""

    def __init__(self, read: Callable[[int, int], bytes], start: int, hi: int) -> None:
        self._read, self._hi = read, hi
        self.next_at = start
        self._segments = WINDOW_MIN_SEGMENTS
        self._pending: deque[_Fetch] = deque()
        self._schedule()

    def _schedule(self) -> None:
        while len(self._pending) < PREFETCH and self.next_at < self._hi:
            start = self.next_at
            end = _window_end(start, self._segments, self._hi)
            self._segments = min(self._segments * 2, WINDOW_MAX_SEGMENTS)
            self._pending.append(_Fetch(self._read, start, end - start))
            self.next_at = end

    def ready(self, offset: int) -> bool:
        """Whether ``take(offset)`` returns a window that has already arrived."""
        head = self._pending[0] if self._pending else None
        return head is not None and head.offset == offset and not head.is_alive()

    def take(self, offset: int) -> tuple[bytes, bool] | None:
        """The window that starts at ``offset`` and whether the object ended inside it, or None
        when the next window does not start there."""
        if not self._pending and offset == self.next_at:
            self._schedule()  # the first segment read of a range that skipped the header
        if not self._pending or self._pending[0].offset != offset:
            return None
        window = self._pending.popleft()
        data = window.result()
        self._schedule()
        return data, len(data) < window.length

    def close(self) -> None:
        while self._pending:
            self._pending.popleft().join()


class _Streamed:
    """The windows of ``[start, hi)`` read in order from one streaming GET in a helper thread,
    at most STREAM_DEPTH windows ahead (issue #12): a long read makes one request, as a plain
    download does, instead of a GET per window. A broken connection is resumed from the window
    it broke in (twice in a row at most)."""

    _RESUMES = 2

    def __init__(self, open_range: Callable[[int, int], RangeBody], start: int, hi: int) -> None:
        self._open, self._start, self._hi = open_range, start, hi
        self.next_at = start
        self._queue: queue.Queue[tuple[int, bytes, BaseException | None]] = queue.Queue(
            STREAM_DEPTH
        )
        self._closed = threading.Event()
        self._done = False
        # carry: the GET counts as the reader's own work (see _Fetch).
        self._thread = threading.Thread(
            target=carry(self._run, as_started=True), name="callvault-stream", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        at, body, resumes = self._start, None, 0
        try:
            while at < self._hi and not self._closed.is_set():
                if body is None:
                    body = self._open(at, self._hi - at)
                    limit = at + body.length  # where the object ends, if before hi
                end = _window_end(at, 1, self._hi)
                want = min(end, limit) - at
                try:
                    data = body.read(want) if want > 0 else b""
                    if len(data) < want:
                        raise StoreUnavailableError("the store's answer was cut short")
                except StoreUnavailableError:
                    body.close()
                    body = None
                    resumes += 1
                    if resumes > self._RESUMES:
                        raise
                    continue  # the same window again, from a new GET
                self._put((end, data, None))
                resumes = 0
                if end > limit:
                    return  # the object ended inside this window
                at = end
        except BaseException as exc:  # handed over to the consuming thread
            self._put((at, b"", exc))
        finally:
            if body is not None:
                body.close()

    def _put(self, item: tuple[int, bytes, BaseException | None]) -> None:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def ready(self, offset: int) -> bool:
        """Whether ``take(offset)`` returns a window (or the stream's error) without waiting."""
        return not self._done and offset == self.next_at and not self._queue.empty()

    def take(self, offset: int) -> tuple[bytes, bool] | None:
        if self._done or offset != self.next_at:
            return None
        end, data, error = self._queue.get()
        if error is not None:
            self._done = True
            raise error
        short = offset + len(data) < end  # the object ended inside this window
        self._done = short or end >= self._hi
        self.next_at = end
        return data, short

    def close(self) -> None:
        """Stop the GET after the window being read (its connection is dropped)."""
        self._closed.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()


def _window_end(start: int, segments: int, hi: int) -> int:
    """Where a window of ``segments`` whole segments from ``start`` ends (a window that reaches
    the last segment takes its end-of-stream probe byte along)."""
    first = streaming.segment_at(max(start, streaming.HEADER_SIZE))
    end = streaming.segment_offset(first + segments)
    return hi if end >= hi - 1 else end


class WindowReader:
    """``read_at`` for ``decrypt_range``: serves its in-order segment reads from windows."""

    def __init__(
        self,
        read: Callable[[int, int], bytes],
        lo: int,
        hi: int,
        *,
        open_range: Callable[[int, int], RangeBody] | None = None,
        header: bytes | None = None,
        on_header: Callable[[bytes], None] | None = None,
    ) -> None:
        self._read = read
        self._buf, self._buf_at, self._eof = b"", 0, False
        self._view = memoryview(self._buf)
        self._next = lo  # where decrypt_range's next in-order segment read starts
        # A range from the first segment takes the header along in its first GET; any other
        # range fetches the header on its own, beside its first window (or knows it already).
        first = 0 if lo == streaming.HEADER_SIZE else lo
        self._header: _Fetch | _Known | None = None
        self._on_header = on_header  # told of a header read from the store, not of a known one
        if first != 0 and header:
            self._header, self._on_header = _Known(header), None
        elif first != 0:
            self._header = _Fetch(read, 0, streaming.HEADER_SIZE)
        self._windows: _Prefetched | _Streamed
        if open_range is not None and hi - first > STREAM_FROM:
            self._windows = _Streamed(open_range, first, hi)
        else:
            self._windows = _Prefetched(read, first, hi)

    def ready(self) -> bool:
        """Whether the next in-order segment read is served without waiting: its bytes are in
        the current window or the next window has arrived."""
        return self._covers(self._next, 1) or self._windows.ready(self._next)

    def _covers(self, offset: int, length: int) -> bool:
        end = self._buf_at + len(self._buf)
        # Past a short (end-of-object) window, a read returns what exists, as the store would.
        return self._buf_at <= offset <= end and (offset + length <= end or self._eof)

    def __call__(self, offset: int, length: int) -> bytes:
        if (offset, length) != (0, streaming.HEADER_SIZE):
            return self._read_at(offset, length)
        if self._header is not None:
            fetch, self._header = self._header, None
            header = fetch.result()
        else:
            header = self._read_at(offset, length)
        if self._on_header is not None and len(header) == length:
            self._on_header(header)
        return header

    def _read_at(self, offset: int, length: int) -> bytes:
        self._next = offset + length
        if not self._covers(offset, length):
            window = self._windows.take(offset)
            if window is None:
                # The header of a later range, or a read we did not plan for: read it directly.
                return self._read(offset, length)
            self._buf, self._eof = window
            self._buf_at = offset
            self._view = memoryview(self._buf)
            if not self._covers(offset, length):
                return self._read(offset, length)
        rel = offset - self._buf_at
        piece = self._view[rel : rel + length]
        # Segments go out as zero-copy views (decrypt_range only reads them); the header is
        # parsed as bytes.
        return bytes(piece) if offset < streaming.HEADER_SIZE else piece  # type: ignore[return-value]

    def close(self) -> None:
        """Stop or wait for the reads still under way, and drop every buffer."""
        self._windows.close()
        if self._header is not None:
            self._header, header = None, self._header
            header.join()
        self._buf, self._view = b"", memoryview(b"")


def reader_for(
    store: BlobStore,
    *,
    object_key: str,
    version_id: str | None,
    ciphertext_size: int,
    start: int,
    end: int,
    headers: HeaderCache | None = None,
) -> WindowReader:
    """The reader of plaintext ``[start, end)``'s ciphertext in exactly that object version,
    its first GETs started; with ``headers``, a versioned object's header comes from (and goes
    to) that cache (a store without versions reads it every time)."""

    def read(offset: int, length: int) -> bytes:
        # Exactly the version the row recorded, never "the latest".
        return store.read_range(object_key, version_id=version_id, offset=offset, length=length)

    def open_range(offset: int, length: int) -> RangeBody:
        return store.open_range(object_key, version_id=version_id, offset=offset, length=length)

    span = ciphertext_span(ciphertext_size, start, end)
    if headers is None or version_id is None:
        return WindowReader(read, *span, open_range=open_range)
    key = (object_key, version_id)  # keys are unique across regions (they name the recording)
    return WindowReader(
        read, *span, open_range=open_range, header=headers.get(key),
        on_header=lambda h: headers.put(key, h),
    )  # fmt: skip


def decrypted(
    store: BlobStore,
    *,
    object_key: str,
    version_id: str | None,
    ciphertext_size: int,
    recording_id: uuid.UUID,
    dek: bytes,
    start: int,
    end: int,
) -> Iterator[bytes]:
    """The authenticated plaintext ``[start, end)`` of exactly that object version, read in
    windows (for the system's own reads: redaction's source, exports; playback adds its grant
    re-checks around its reader). A failing segment raises ``DecryptionError``."""
    reader = reader_for(
        store, object_key=object_key, version_id=version_id, ciphertext_size=ciphertext_size,
        start=start, end=end,
    )  # fmt: skip
    try:
        yield from streaming.decrypt_range(
            reader, dek=dek, recording_id=recording_id, ciphertext_size=ciphertext_size,
            start=start, end=end,
        )  # fmt: skip
    finally:
        reader.close()
