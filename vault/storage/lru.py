"""A small bounded, thread-safe LRU map: the base of the runtime context's read caches."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["BoundedLru"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedLru(Generic[K, V]):
    """At most ``capacity`` entries; the least recently used one goes first."""

    def __init__(self, capacity: int = 4096) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity

    def get(self, key: K) -> V | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
