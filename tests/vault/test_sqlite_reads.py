"""Reads on the event loop on SQLite (``vault.sqlite_reads``; issue #12): the metadata GET's
statement runs on the loop, not on the thread pool, and answers what the thread pool's read
answers; nothing can write through it; it holds no snapshot between reads (a checkpoint can
truncate the WAL right after); and a file locked by another connection never stalls the loop:
the read goes to the thread pool, which waits for the lock, while the loop keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio.to_thread
import pytest
import sqlalchemy as sa

from tests.jobs.helpers import ingest, make_tenant
from vault.authz import Actor
from vault.context import Context
from vault.errors import DatabaseUnavailableError
from vault.recordings import metadata


@pytest.fixture
def lite(make_ctx: Callable[..., Context]) -> Context:
    return make_ctx(db="sqlite", store="local")


def _path(ctx: Context) -> str:
    database = ctx.db.engine.url.database
    assert database
    return database


def _raw(ctx: Context) -> contextlib.closing[sqlite3.Connection]:
    """A plain connection to the file, in autocommit, closed on exit (sqlite3's own context
    manager only commits)."""
    return contextlib.closing(sqlite3.connect(_path(ctx), isolation_level=None))


def _statement(ctx: Context) -> tuple[sa.Executable, dict[str, Any]]:
    rec = ingest(ctx, make_tenant(ctx), b"x" * 100)
    op = Actor.operator()
    return metadata._get_statement(op.all_tenants), metadata._get_params(op, rec.id)


def test_the_read_runs_on_the_loop_and_answers_as_the_thread_pool_does(
    lite: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    statement, params = _statement(lite)
    with lite.db.single_read() as conn:
        expected = conn.execute(statement, params).all()
    assert expected

    async def no_hop(*_: object, **__: object) -> None:
        raise AssertionError("the read took the thread pool")

    monkeypatch.setattr(anyio.to_thread, "run_sync", no_hop)

    async def read() -> tuple[list[Any], str]:
        rows = list(await lite.db.read_rows(statement, params))
        return rows, threading.current_thread().name

    rows, thread = asyncio.run(read())
    assert rows == expected
    assert thread == threading.main_thread().name


def test_nothing_can_be_written_through_them(lite: Context) -> None:
    async def attempt() -> None:
        await lite.db.read_rows(sa.text("CREATE TABLE smuggled (x int)"), {})

    with pytest.raises(DatabaseUnavailableError):
        asyncio.run(attempt())
    with _raw(lite) as raw:
        found = raw.execute("SELECT name FROM sqlite_master WHERE name = 'smuggled'").fetchall()
    assert found == []


def test_no_snapshot_is_held_between_reads(lite: Context) -> None:
    statement, params = _statement(lite)

    async def read_twice() -> None:
        await lite.db.read_rows(statement, params)
        with _raw(lite) as raw:  # a write after the read leaves WAL frames
            raw.execute("CREATE TABLE IF NOT EXISTS scratch (x int)")
        with _raw(lite) as raw:
            busy, _, _ = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0  # a reader holding a snapshot would make this checkpoint busy
        await lite.db.read_rows(statement, params)  # the kept connection still reads

    asyncio.run(read_twice())


def test_a_locked_file_sends_the_read_to_the_thread_pool_and_the_loop_keeps_running(
    lite: Context,
) -> None:
    statement, params = _statement(lite)
    with lite.db.single_read() as conn:
        expected = conn.execute(statement, params).all()
    lite.db.engine.dispose()  # an exclusive lock needs the file to itself for a moment
    locker = sqlite3.connect(_path(lite), check_same_thread=False, isolation_level=None, timeout=5)
    locker.execute("PRAGMA locking_mode = EXCLUSIVE")
    locker.execute("BEGIN EXCLUSIVE")
    locker.execute("CREATE TABLE IF NOT EXISTS scratch (x int)")  # holds the file from now
    hold = 0.8

    def release() -> None:
        time.sleep(hold)
        locker.execute("COMMIT")
        locker.close()

    async def read_while_locked() -> tuple[list[Any], int, float]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        threading.Thread(target=release).start()
        started = time.monotonic()
        rows = list(await lite.db.read_rows(statement, params))
        waited = time.monotonic() - started
        stop.set()
        await task
        return rows, ticks, waited

    rows, ticks, waited = asyncio.run(read_while_locked())
    assert rows == expected
    assert waited >= hold * 0.8  # it did wait for the lock (on the thread pool) ...
    assert ticks >= 20  # ... and the loop ran all along (~80 ticks in 0.8 s; 0 if blocked)
