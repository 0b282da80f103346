"""Abuse limits of the API, per process (held in ``app.state``; each replica counts its own).

- :class:`AuthFailures`: failed authentications per client address in a sliding window; past
  the limit, every request from that address answers 429 with ``Retry-After`` until the window
  has moved on. Key comparison stays constant-time: the limit only decides whether to compare.
- :func:`client_address`: the peer's address, or the first untrusted hop of ``X-Forwarded-For``
  when the peer is one of the configured trusted proxies (behind a TLS proxy every client would
  otherwise share the proxy's address).
- :class:`Uploads`: concurrent ingests per principal.
"""

from __future__ import annotations

import ipaddress
import math
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta

from fastapi import Request

from vault.errors import RateLimitedError, TooManyUploadsError

__all__ = ["AuthFailures", "Uploads", "client_address", "is_trusted_proxy"]

_MAX_TRACKED = 10_000  # addresses remembered at once; the oldest are forgotten first


def _networks(trusted: Sequence[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(t.strip(), strict=False) for t in trusted if t.strip()]


def is_trusted_proxy(address: str, trusted: Sequence[str]) -> bool:
    """Whether ``address`` lies in one of the configured proxy addresses or networks."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in _networks(trusted))


def client_address(request: Request, trusted: Sequence[str]) -> str:
    peer = request.client.host if request.client else "unknown"
    networks = _networks(trusted)

    def is_trusted(address: str) -> bool:
        return is_trusted_proxy(address, trusted)

    if not networks or not is_trusted(peer):
        return peer
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    # The nearest hop a trusted proxy did not add is the client; spoofed hops further left lose.
    for hop in reversed(hops):
        if not is_trusted(hop):
            return hop
    return peer


class AuthFailures:
    def __init__(self, limit: int, window: timedelta) -> None:
        self.limit, self.window = limit, window
        self._lock = threading.Lock()
        self._seen: dict[str, deque[datetime]] = {}

    def _recent(self, address: str, now: datetime) -> deque[datetime]:
        times = self._seen.get(address)
        if times is None:
            if len(self._seen) >= _MAX_TRACKED:
                self._seen.pop(next(iter(self._seen)))
            times = self._seen[address] = deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def check(self, address: str, now: datetime) -> None:
        """Raise 429 while ``address`` is over the limit."""
        with self._lock:
            times = self._recent(address, now)
            if len(times) < self.limit:
                return
            wait = (times[0] + self.window - now).total_seconds()
        raise RateLimitedError(
            "too many failed authentications from this address; retry later",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )

    def failed(self, address: str, now: datetime) -> None:
        with self._lock:
            self._recent(address, now).append(now)


class Uploads:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}

    @contextmanager
    def slot(self, principal: str) -> Iterator[None]:
        with self._lock:
            if self._running.get(principal, 0) >= self.limit:
                raise TooManyUploadsError(
                    f"at most {self.limit} uploads at once per principal; retry when one ends",
                    headers={"Retry-After": "1"},
                )
            self._running[principal] = self._running.get(principal, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._running[principal] -= 1
                if not self._running[principal]:
                    del self._running[principal]
