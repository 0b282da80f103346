"""One-statement reads on the event loop, for SQLite (issue #12: the metadata GET).

SQLite is a file in this process: a one-row read by primary key costs ~0.1 ms, less than the
hop to a worker thread and back, and the pool's checkout and reset, that
:meth:`vault.db.Database.read_rows` paid for it (measured with curl, the metadata GET against
``/healthz`` went from ~2.0 x to 1.55-1.68 x; in ``python -m bench http``, 2.22 x to 1.77 x, the
median of twelve runs). :class:`LoopReads`
runs such a read on the caller's event loop instead, with these guards:

- One connection per event loop, from an engine without a pool (never one the pool lends to
  worker threads, so a pool that is exhausted cannot block the loop), with ``query_only`` on:
  nothing can write.
- Each read is a short deferred transaction, ended at once: the connection never holds a WAL
  snapshot between reads, so checkpoints are never held back by it.
- A reader in WAL mode does not wait for writers; the rare cases that make it wait (recovery
  after a crash, a connection in exclusive locking mode) are answered at once with
  ``SQLITE_BUSY`` here (no busy timeout on this connection), and the caller then takes the
  thread pool, which waits as every other read does. The loop never sleeps on a lock.
- A connection that failed otherwise is dropped; the next read opens a new one.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

__all__ = ["LoopReads"]

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6


def _busy(exc: sa.exc.OperationalError) -> bool:
    # sqlite3 errors carry the extended result code; its low byte is the primary code.
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)


class LoopReads:
    """Read-only statements on the running event loop, for SQLite; see the module."""

    def __init__(self, reads: Engine) -> None:
        self._reads = reads  # no pool, read-only execution option: transactions begin deferred
        self._conns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, sa.Connection] = (
            weakref.WeakKeyDictionary()
        )

    def rows(self, statement: sa.Executable, params: dict[str, Any]) -> Sequence[Any] | None:
        """Every row of ``statement``, or None if the file is busy (take the thread pool)."""
        loop = asyncio.get_running_loop()
        try:
            conn = self._conns.get(loop)
            if conn is None:
                conn = self._conns[loop] = self._open()
            with conn.begin():
                return conn.execute(statement, params).all()
        except sa.exc.OperationalError as exc:
            if _busy(exc):
                return None
            self._drop(loop)
            raise
        except BaseException:
            self._drop(loop)
            raise

    def _open(self) -> sa.Connection:
        conn = self._reads.connect()  # busy_timeout 0 from its engine's connect hook
        try:
            conn.exec_driver_sql("PRAGMA query_only = ON")
            conn.commit()
        except BaseException:
            conn.close()
            raise
        return conn

    def _drop(self, loop: asyncio.AbstractEventLoop) -> None:
        conn = self._conns.pop(loop, None)
        if conn is not None:
            conn.close()  # no pool: the file handle is closed

    def close(self) -> None:
        """Drop every loop's connection."""
        for loop in list(self._conns):
            self._drop(loop)
