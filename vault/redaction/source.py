"""The original's plaintext, served to ffmpeg from memory over loopback HTTP for one job.

ffmpeg must seek its input (an MP4 may keep its index at the end), and the plaintext must never
touch persistent disk. So each redaction starts a tiny HTTP server on ``127.0.0.1`` with a random
path token valid for this job only; every ``GET`` (with or without ``Range``) decrypts just the
segments it covers, straight from the stored ciphertext (the same windowed, authenticated read as
playback). Memory is a few windows per connection, whatever the recording's length.

A segment that fails authentication is never served: the connection is cut, ``failure`` is set
and the caller raises the integrity alarm.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from crypto import streaming
from crypto.errors import DecryptionError
from vault.context import Context
from vault.recordings.ranges import parse_range
from vault.recordings.windows import decrypted

__all__ = ["Original", "PlaintextServer"]


@dataclass(frozen=True, slots=True)
class Original:
    """What is needed to read one stored recording's plaintext (its DEK already unwrapped)."""

    recording_id: uuid.UUID
    object_key: str
    version_id: str | None
    ciphertext_size: int
    dek: bytes
    region: str | None = None  # the recording's (None: home): where the object is read

    @property
    def size(self) -> int:
        return streaming.plaintext_size(self.ciphertext_size)


def _plaintext(ctx: Context, src: Original, start: int, end: int) -> Iterator[bytes]:
    return decrypted(
        ctx.store_for(src.region), object_key=src.object_key, version_id=src.version_id,
        ciphertext_size=src.ciphertext_size, recording_id=src.recording_id, dek=src.dek,
        start=start, end=end,
    )  # fmt: skip


class PlaintextServer:
    """``with PlaintextServer(ctx, original) as url:`` serves the plaintext at ``url``."""

    def __init__(self, ctx: Context, original: Original) -> None:
        self.ctx, self.original = ctx, original
        self.failure: str | None = None
        self.requests = 0
        self._token = secrets.token_urlsafe(32)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="callvault-redaction-source", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/{self._token}"

    def __enter__(self) -> str:
        self._thread.start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return  # the path holds the job's token: never logged

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, *, body: bool) -> None:
                outer.requests += 1
                if not secrets.compare_digest(self.path, "/" + outer._token):
                    self.send_error(404)
                    return
                size = outer.original.size
                try:
                    chosen = parse_range(self.headers.get("Range"), size)
                except Exception:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start, end = chosen if chosen is not None else (0, size)
                self.send_response(206 if chosen is not None else 200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(end - start))
                if chosen is not None:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
                self.end_headers()
                if not body or start == end:
                    return
                try:
                    for chunk in _plaintext(outer.ctx, outer.original, start, end):
                        self.wfile.write(chunk)
                except DecryptionError:
                    outer.failure = "input-integrity"
                    self.close_connection = True
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # ffmpeg seeked elsewhere and hung up
                except Exception:
                    outer.failure = outer.failure or "input-unreadable"
                    self.close_connection = True

        return Handler
