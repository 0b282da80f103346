"""A per-process cache of verified API keys, so a burst of requests (a player's Range reads)
does not repeat the key lookup, the principal and its tenants for each one.

An entry lives at most ``CALLVAULT_AUTH_CACHE_SECONDS`` (at most 1 s, 0 turns it off): a key or
principal revoked on any process stops working on every process within that time. Only
successes are cached (failures go through the limiter every time), entries are keyed by the
SHA-256 of the key (never the key), and the cache is bounded.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from datetime import datetime, timedelta

from vault.authz import Actor

MAX_TTL = timedelta(seconds=1)


class AuthCache:
    def __init__(self, ttl: timedelta, *, max_entries: int = 4096) -> None:
        if ttl > MAX_TTL:
            raise ValueError("an authentication may be cached for at most 1 s")
        self.ttl, self.max_entries = ttl, max_entries
        self._entries: OrderedDict[bytes, tuple[Actor, datetime]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(api_key: str) -> bytes:
        return hashlib.sha256(api_key.encode()).digest()

    def get(self, api_key: str | None, now: datetime) -> Actor | None:
        if not api_key or self.ttl <= timedelta(0):
            return None
        key = self._key(api_key)
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            actor, until = hit
            if now >= until or now < until - self.ttl:  # expired, or the clock went back
                del self._entries[key]
                return None
            return actor

    def put(self, api_key: str, actor: Actor, now: datetime) -> None:
        if self.ttl <= timedelta(0):
            return
        with self._lock:
            self._entries[self._key(api_key)] = (actor, now + self.ttl)
            self._entries.move_to_end(self._key(api_key))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
