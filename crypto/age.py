"""Encryption to a third party's ``age`` X25519 key (issue #15: disclosures and hand-offs).

A recipe over ``pyrage`` (the Rust ``age`` crate), so what we hand out is read by the stock
``age -d``. It is a pull-style stream: ``encrypt_stream(chunks, recipient)`` yields age bytes as
the plaintext chunks are consumed, in bounded memory. ``pyrage.encrypt_io`` drives a reader and a
writer itself, so it runs on a helper thread feeding a small queue; a consumer that stops early
closes the generator, which stops the thread.

The recipient's fingerprint is what approvers compare with the key they verified out of band:
``SHA256:`` and the unpadded base64 of the SHA-256 of the canonical (lower-case) recipient text,
in the style of OpenSSH fingerprints.
"""

from __future__ import annotations

import base64
import hashlib
import io
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyrage

__all__ = ["AgeRecipient", "AgeRecipientError", "encrypt_stream", "parse_recipient"]

_QUEUE_DEPTH = 8  # chunks of up to 64 KiB in flight between the encrypting thread and the reader


class AgeRecipientError(ValueError):
    """The text is not an age X25519 recipient (``age1...``). The message is safe to show."""


@dataclass(frozen=True, slots=True)
class AgeRecipient:
    text: str
    fingerprint: str


def parse_recipient(text: str) -> AgeRecipient:
    canonical = text.strip().lower()
    if not canonical.startswith("age1") or len(canonical) > 100:
        raise AgeRecipientError("recipient: an age X25519 public key (age1...) is required")
    try:
        pyrage.x25519.Recipient.from_str(canonical)
    except Exception:
        raise AgeRecipientError("recipient: not a valid age X25519 public key") from None
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    fingerprint = "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")
    return AgeRecipient(text=canonical, fingerprint=fingerprint)


class _Stopped(Exception):
    """The consumer went away; the encrypting thread unwinds."""


class _Source(io.RawIOBase):
    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")
        self.error: BaseException | None = None  # what ``chunks`` raised, kept to re-raise

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                chunk = next(self._chunks, None)
            except BaseException as exc:
                self.error = exc
                raise
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class _Sink(io.RawIOBase):
    def __init__(self, out: queue.Queue[object], stop: threading.Event) -> None:
        self._out, self._stop = out, stop

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = bytes(data)
        while True:
            if self._stop.is_set():
                raise _Stopped()
            try:
                self._out.put(chunk, timeout=0.1)
                return len(chunk)
            except queue.Full:
                continue


_DONE = object()


def encrypt_stream(chunks: Iterable[bytes], recipient: AgeRecipient) -> Iterator[bytes]:
    """Yield the age file encrypting the concatenation of ``chunks`` to ``recipient``.

    An exception raised by ``chunks`` (an integrity failure of the source, say) is re-raised here
    unchanged, so the caller can abandon whatever it was writing.
    """
    target = pyrage.x25519.Recipient.from_str(recipient.text)
    out: queue.Queue[object] = queue.Queue(maxsize=_QUEUE_DEPTH)
    stop = threading.Event()
    failure: list[BaseException] = []
    source = _Source(chunks)

    def run() -> None:
        try:
            pyrage.encrypt_io(source, _Sink(out, stop), [target])
        except BaseException as exc:  # handed to the consumer, which re-raises it
            failure.append(exc)
        finally:
            while not stop.is_set():
                try:
                    out.put(_DONE, timeout=0.1)
                    break
                except queue.Full:
                    continue

    thread = threading.Thread(target=run, name="callvault-age", daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is _DONE:
                break
            yield item  # type: ignore[misc]
        thread.join()
        if source.error is not None:
            raise source.error
        if failure:
            raise failure[0]
    finally:
        stop.set()
        thread.join(timeout=5)
