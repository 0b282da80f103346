"""SQLite's one writer across processes (issue #12): a writer waits on a file lock beside the
database, not in SQLite's sleeping busy handler, so the next one starts when the last commits."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from vault import sqlite_writer
from vault.db import Database
from vault.sqlite_writer import SqliteWriter, lock_path


def _held_elsewhere(path: Path) -> bool:
    """Whether another open file description holds ``path``'s exclusive lock."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.01)


def test_a_writer_in_another_process_waits_on_the_file_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db_file = tmp_path / "vault.db"
    db = Database.from_url(f"sqlite:///{db_file}")
    with db.transaction() as s:
        s.connection().exec_driver_sql("CREATE TABLE t (who TEXT)")
    holding, release = tmp_path / "holding", tmp_path / "release"
    other = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import pathlib, time
            from vault.db import Database
            db = Database.from_url("sqlite:///{db_file}")
            with db.transaction() as s:
                s.connection().exec_driver_sql("INSERT INTO t VALUES ('other')")
                pathlib.Path("{holding}").touch()
                while not pathlib.Path("{release}").exists():
                    time.sleep(0.01)
        """)],
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    try:
        _wait_for(holding)
        # The other process's unit holds the file lock for as long as it is open.
        assert _held_elsewhere(lock_path(db_file))
        polls: list[float] = []
        real_sleep = time.sleep
        monkeypatch.setattr(sqlite_writer.time, "sleep", lambda s: (polls.append(s), real_sleep(s)))
        done = threading.Event()

        def write() -> None:
            with db.transaction() as s:
                s.connection().exec_driver_sql("INSERT INTO t VALUES ('this')")
            done.set()

        writer = threading.Thread(target=write)
        writer.start()
        assert not done.wait(0.3)  # queued behind the other process
        assert polls and set(polls) == {sqlite_writer.POLL_SECONDS}  # on the file lock
        release.touch()
        assert done.wait(30)
        writer.join()
        assert other.wait(30) == 0
    finally:
        release.touch()
        other.wait(30)
    with db.reading() as s:
        rows = s.connection().exec_driver_sql("SELECT who FROM t ORDER BY rowid").all()
    assert [r[0] for r in rows] == ["other", "this"]
    assert not _held_elsewhere(lock_path(db_file))  # released with the commit
    db.dispose()


def test_nested_units_lock_the_file_once_and_release_it_last(tmp_path: Path) -> None:
    writer = SqliteWriter(tmp_path / "x.db", timeout=1.0)
    writer.acquire()
    writer.acquire()  # a nested unit in the same thread: no deadlock
    writer.release()
    assert _held_elsewhere(lock_path(tmp_path / "x.db"))
    writer.release()
    assert not _held_elsewhere(lock_path(tmp_path / "x.db"))
    writer.close()


def test_a_writer_that_cannot_get_the_file_lock_goes_on_to_sqlite(tmp_path: Path) -> None:
    """A lock held by something that never lets go costs the timeout, then SQLite decides."""
    path = lock_path(tmp_path / "x.db")
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        writer = SqliteWriter(tmp_path / "x.db", timeout=0.05)
        writer.acquire()  # returns after the timeout instead of hanging
        assert not writer._holds_file
        writer.release()
        writer.close()
    finally:
        os.close(fd)
