"""SQLite's one writer, queued for across threads *and* processes (issue #12).

SQLite admits one writer at a time. A writer that finds the file locked waits in SQLite's busy
handler, which sleeps in growing steps (1, 2, 5, … up to 100 ms a try) and so wakes late: with
``serve --workers 2`` sixteen concurrent audited reads (each commits its read event) queued for
hundreds of milliseconds that way. :class:`SqliteWriter` makes a writer wait for an exclusive
``flock`` on a lock file beside the database instead, tried every :data:`POLL_SECONDS`, so the
next writer starts within about a millisecond of the last commit, whichever process it is in.
Threads of one process queue on a reentrant lock first (a nested unit does not lock again).

The file lock is an optimisation of the wait, not what keeps the data consistent: SQLite's own
lock still does that. A writer that cannot get the file lock within the busy timeout goes ahead
and meets SQLite's busy timeout as before; a process that dies holding it loses it with its
file descriptor.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

__all__ = ["POLL_SECONDS", "SqliteWriter", "lock_path"]

POLL_SECONDS = 0.0005


def lock_path(database: Path) -> Path:
    """The lock file of a SQLite database file."""
    return database.with_name(database.name + "-writer.lock")


class SqliteWriter:
    """``acquire``/``release`` like :class:`threading.RLock`; the outermost acquire also takes
    the database's file lock (none for an in-memory database)."""

    def __init__(self, database: Path | None, *, timeout: float) -> None:
        self._lock = threading.RLock()
        self._depth = 0  # only changed while holding _lock
        self._path = lock_path(database) if database is not None else None
        self._fd: int | None = None
        self._holds_file = False
        self._timeout = timeout

    def acquire(self) -> None:
        self._lock.acquire()
        self._depth += 1
        if self._depth == 1 and self._path is not None:
            try:
                self._holds_file = self._lock_file()
            except BaseException:
                self._depth -= 1
                self._lock.release()
                raise

    def release(self) -> None:
        if self._depth == 1 and self._holds_file:
            self._holds_file = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)  # type: ignore[arg-type]
        self._depth -= 1
        self._lock.release()

    def _lock_file(self) -> bool:
        if self._fd is None:
            assert self._path is not None
            self._fd = os.open(self._path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False  # SQLite's own busy timeout decides from here
                time.sleep(POLL_SECONDS)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
