"""A cache of stream headers by object *version* (issue #12), held by the runtime context and
used by playback's read-ahead (:mod:`vault.recordings.windows`): a seek past the first segment
then makes one GET instead of two."""

from __future__ import annotations

import threading
from collections import OrderedDict

__all__ = ["HeaderCache"]


class HeaderCache:
    """The stream headers of recently read object *versions*, so that a seek past the first
    segment makes one GET instead of two (issue #12). A header is public ciphertext (the salt
    and nonce prefix, no key material) and every segment it opens is authenticated against the
    DEK; an object version never changes, and a store without versions is never cached."""

    def __init__(self, capacity: int = 4096) -> None:
        self._items: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity

    def get(self, key: tuple[str, str]) -> bytes | None:
        with self._lock:
            header = self._items.get(key)
            if header is not None:
                self._items.move_to_end(key)
            return header

    def put(self, key: tuple[str, str], header: bytes) -> None:
        with self._lock:
            self._items[key] = header
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
