"""Ingest's body path: encrypt and hash the client's stream, overlapped with the upload.

:func:`ciphertext` turns the plaintext chunks into the encrypted stream while :class:`Tally`
keeps the hashes and counts, checking the declared length and ``X-Content-SHA256`` before the
last segment is sealed (a bad body never becomes a whole object). :func:`pipelined` overlaps
producing that body (read, encrypt, hash) with uploading it.

The caller's thread runs the producer — it must, because an HTTP body can only be pulled from
the worker thread anyio gave us — while a helper thread feeds the store. A small bounded queue
keeps memory flat. Whichever side fails first stops the other: a producer error (a cut-off body)
aborts the upload, and an upload error (store down) stops production.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from crypto import streaming
from vault.errors import (
    ChecksumMismatchError,
    IncompleteBodyError,
    InvalidInputError,
    PayloadTooLargeError,
)
from vault.txcount import carry

T = TypeVar("T")

_DONE = object()
_POLL = 0.1


class _ProducerFailed(Exception):
    """Raised inside the uploader so the store aborts its multipart upload."""


def pipelined(
    produce: Iterable[bytes], consume: Callable[[Iterator[bytes]], T], *, depth: int = 4
) -> T:
    """``consume(chunks)`` in a helper thread while this thread iterates ``produce``."""
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    consumer_done = threading.Event()
    outcome: dict[str, object] = {}

    def chunks() -> Iterator[bytes]:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise _ProducerFailed() from item
            yield item  # type: ignore[misc]

    def run() -> None:
        try:
            outcome["result"] = consume(chunks())
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            consumer_done.set()

    # carry: the upload counts as this thread's work for the no-transaction guard.
    worker = threading.Thread(target=carry(run), name="callvault-upload", daemon=True)
    worker.start()

    def put(item: object) -> bool:
        """False once the consumer has stopped: there is no point producing more."""
        while not consumer_done.is_set():
            try:
                q.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    try:
        for chunk in produce:
            if not put(chunk):
                break
        else:
            put(_DONE)
    except BaseException as exc:
        put(exc)
        worker.join()
        raise
    worker.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"]  # type: ignore[return-value]


class Tally:
    """Running hashes and counts, filled in while the store pulls the ciphertext."""

    def __init__(self) -> None:
        self.plain = hashlib.sha256()
        self.cipher = hashlib.sha256()
        self.size = 0
        self.cipher_bytes = 0
        # The exception that the client's side caused, to tell it apart from store failures.
        self.client_error: BaseException | None = None

    def fail(self, exc: BaseException) -> BaseException:
        self.client_error = exc
        return exc


def ciphertext(
    first: bytes,
    source: Iterator[bytes],
    enc: streaming.Encryptor,
    tally: Tally,
    expected_sha256: str | None,
    expected_length: int | None,
    max_bytes: int | None = None,
) -> Iterator[bytes]:
    chunk: bytes = first
    while True:
        if chunk:
            tally.plain.update(chunk)
            tally.size += len(chunk)
            if expected_length is not None and tally.size > expected_length:
                raise tally.fail(InvalidInputError("the body is longer than its declared length"))
            if max_bytes is not None and tally.size > max_bytes:
                raise tally.fail(PayloadTooLargeError(f"at most {max_bytes} bytes per recording"))
            for out in enc.segments(chunk):  # whole segments, no joined copy
                tally.cipher.update(out)
                tally.cipher_bytes += len(out)
                yield out
        try:
            chunk = next(source)
        except StopIteration:
            break
        except BaseException as exc:  # a cut-off body, a client disconnect: the client's failure
            tally.fail(exc)
            raise
    # Verified before the last segment is sealed, so a bad body never becomes a whole object.
    if expected_length is not None and tally.size != expected_length:
        raise tally.fail(IncompleteBodyError())
    if expected_sha256 is not None and tally.plain.hexdigest() != expected_sha256:
        raise tally.fail(ChecksumMismatchError())
    out = enc.finalize()
    tally.cipher.update(out)
    tally.cipher_bytes += len(out)
    yield out
