"""Open transactions per runtime context: the count behind :mod:`vault.db`'s rule "no
transaction across a remote call" (:func:`open_transactions`, :func:`carry` for helper
threads; :func:`track` installs the counting on an engine)."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

__all__ = ["carry", "open_transactions", "track"]

T = TypeVar("T")


class _Count:
    """Open transactions of one runtime context (shared with the helper threads it starts)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


_open: contextvars.ContextVar[_Count | None] = contextvars.ContextVar("callvault_tx", default=None)


def _count() -> _Count:
    box = _open.get()
    if box is None:
        box = _Count()
        _open.set(box)
    return box


def open_transactions() -> int:
    """Transactions open in this runtime context (helper threads started with :func:`carry`
    included)."""
    box = _open.get()
    return 0 if box is None else box.value


def carry(fn: Callable[..., T], *, as_started: bool = False) -> Callable[..., T]:
    """``fn`` bound to the caller's runtime context, for a helper thread: the thread's work then
    counts as the caller's (the transaction guard sees through thread pools). With
    ``as_started``, a helper started outside any transaction stays outside the ones the caller
    opens later (a read-ahead GET overlapping a short commit does not hold it open)."""
    outside = _count().value == 0  # the box must exist before the copy, so both share it
    context = contextvars.copy_context()
    if as_started and outside:
        context.run(_open.set, _Count())

    def run(*args: Any, **kwargs: Any) -> T:
        return context.run(fn, *args, **kwargs)

    return run


def track(engine: Engine) -> None:
    """Count ``engine``'s transactions against the runtime context that opens them."""
    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        box = _count()
        conn.info["callvault_tx_count"] = box
        box.add(1)

    def _end(conn: sa.Connection) -> None:
        if conn.invalidated:  # lost: counted out by "invalidate" below (.info would raise)
            return
        box = conn.info.pop("callvault_tx_count", None)
        if box is not None:
            box.add(-1)

    event.listen(engine, "commit", _end)
    event.listen(engine, "rollback", _end)

    # A connection lost mid-transaction (invalidated) never commits nor rolls back: it is
    # counted out when the pool takes it back or throws it away. Connection.info is the pool
    # record's info, so the box stored at "begin" is found here.
    def _returned(_dbapi: Any, record: Any, *_: Any) -> None:
        box = record.info.pop("callvault_tx_count", None)
        if box is not None:
            box.add(-1)

    event.listen(engine, "checkin", _returned)
    event.listen(engine, "invalidate", _returned)
