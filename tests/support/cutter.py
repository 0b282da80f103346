"""A loopback TCP proxy that cuts connections mid-answer, to fault a real server's replies.

``CuttingProxy(host, port)`` forwards every connection to the target; ``arm(after=n)`` makes
the connection that carries the next ``n`` bytes of answers close right there, both ways (as a
broken network or a crashed peer would). ``arm(after=n, every=True)`` does that to every
connection from then on. ``cuts`` counts what was cut.
"""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["CuttingProxy"]


class CuttingProxy:
    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._left: int | None = None  # answer bytes until the next cut
        self._after, self._every = 0, False
        self.cuts = 0
        self._open: set[socket.socket] = set()
        threading.Thread(target=self._accept, name="cutting-proxy", daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def arm(self, *, after: int, every: bool = False) -> None:
        with self._lock:
            self._left, self._after, self._every = after, after, every

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self._target)
            with self._lock:
                self._open |= {client, upstream}
                if self._every:
                    self._left = self._after  # every connection gets its own budget
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        try:
            while data := src.recv(65536):
                if answers:
                    with self._lock:
                        if self._left is not None and len(data) >= self._left:
                            data, cut = data[: self._left], True
                            self._left = None if not self._every else self._after
                            self.cuts += 1
                        else:
                            cut = False
                            if self._left is not None:
                                self._left -= len(data)
                    dst.sendall(data)
                    if cut:
                        break
                else:
                    dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for s in self._open:
                s.close()
