"""Loopback helpers shared by the test servers."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on right now, on 127.0.0.1 (servers here bind loopback only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
