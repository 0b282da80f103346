"""Overlap producing a body (read, encrypt, hash) with uploading it.

The caller's thread runs the producer — it must, because an HTTP body can only be pulled from
the worker thread anyio gave us — while a helper thread feeds the store. A small bounded queue
keeps memory flat. Whichever side fails first stops the other: a producer error (a cut-off body)
aborts the upload, and an upload error (store down) stops production.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

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

    worker = threading.Thread(target=run, name="callvault-upload", daemon=True)
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
