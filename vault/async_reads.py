"""One-statement reads on the event loop, for PostgreSQL (issue #12: the metadata GET).

The hottest read is one Core statement. Run on the thread pool through SQLAlchemy, it pays a
hop to a worker thread and back, SQLAlchemy's execution and result machinery and, on a connection
that an ORM session has just rolled back, a fresh plan (psycopg drops its prepared statements on
every ROLLBACK). :class:`AsyncReads` runs such a statement on the caller's event loop instead,
with psycopg's async driver, as a server-side prepared statement on connections of its own.

- The statement is still built by SQLAlchemy (and so by its owners: :func:`vault.authz.visible`
  adds the scope): it is compiled once for PostgreSQL; each call only expands its parameters.
- Connections are read-only (``default_transaction_read_only``) and in autocommit: a statement
  is its own snapshot, as on :meth:`vault.db.Database.single_read`, and nothing can write.
- At most :data:`CONNECTIONS` per event loop, each used by one statement at a time; the idle
  ones are kept. A connection that failed is closed. A kept one found dead (the server
  restarted while it idled) is replaced once: the statement only reads, so running it again is
  safe. A server that cannot be reached is ``DatabaseUnavailableError`` (503).
- Nothing is audited here; callers use it for reads that are allowed and found, and take the
  session path, which audits, for the rest.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.rows import namedtuple_row
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import Compiled

from vault.errors import DatabaseUnavailableError

__all__ = ["APPLICATION_NAME", "CONNECTIONS", "AsyncReads"]

CONNECTIONS = 4  # per event loop (per API process): one statement at a time on each
CONNECT_TIMEOUT_SECONDS = 5
_OPTIONS = "-c default_transaction_read_only=on"
APPLICATION_NAME = "callvault-reads"  # how these connections show in pg_stat_activity


class _LoopConnections:
    def __init__(self, size: int) -> None:
        self.slots = asyncio.Semaphore(size)
        self.idle: list[psycopg.AsyncConnection[Any]] = []


class AsyncReads:
    """Read-only statements on the running event loop; see the module."""

    def __init__(self, url: sa.URL, dialect: Dialect, *, size: int = CONNECTIONS) -> None:
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._dialect = dialect
        self._size = size
        # By statement object: callers pass statements built once (one per scope shape).
        self._compiled: dict[Any, Compiled] = {}
        # Keyed by loop: an async connection belongs to the loop it was opened on.
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopConnections] = (
            weakref.WeakKeyDictionary()
        )

    async def rows(self, statement: sa.Executable, params: dict[str, Any]) -> Sequence[Any]:
        """Every row of ``statement`` (named tuples, by the statement's column labels)."""
        compiled = self._compiled.get(statement)
        if compiled is None:
            compiled = self._compiled[statement] = statement.compile(dialect=self._dialect)
        expanded = compiled.construct_expanded_state(params)
        loop = asyncio.get_running_loop()
        here = self._loops.get(loop)
        if here is None:
            here = self._loops[loop] = _LoopConnections(self._size)
        async with here.slots:
            while here.idle:  # a kept connection; one found dead is replaced
                conn = here.idle.pop()
                try:
                    found = await self._run(conn, expanded.statement, expanded.parameters)
                except psycopg.OperationalError:
                    continue
                here.idle.append(conn)
                return found
            conn = await self._connect()
            try:
                found = await self._run(conn, expanded.statement, expanded.parameters)
            except psycopg.OperationalError as exc:
                raise DatabaseUnavailableError.from_driver(exc) from exc
            here.idle.append(conn)
            return found

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        try:
            return await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, options=_OPTIONS,
                application_name=APPLICATION_NAME, connect_timeout=CONNECT_TIMEOUT_SECONDS,
            )  # fmt: skip
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailableError.from_driver(exc) from exc

    @staticmethod
    async def _run(
        conn: psycopg.AsyncConnection[Any], sql: str, params: Any
    ) -> list[Any]:
        try:
            async with conn.cursor(row_factory=namedtuple_row) as cur:
                await cur.execute(sql, params, prepare=True)
                return await cur.fetchall()
        except BaseException:
            # Failed, or cancelled mid-statement: its state is unknown, it is not kept.
            conn.pgconn.finish()
            raise

    def close(self) -> None:
        """Close every kept connection (from any thread; libpq's close does not block)."""
        for here in list(self._loops.values()):
            while here.idle:
                here.idle.pop().pgconn.finish()

