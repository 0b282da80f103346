"""Engine, the unit of work, read-only sessions and migrations.

**Unit of work.** Services add and flush; they never commit. :meth:`Database.transaction` is the
one place that commits: the API's request dependency, each job step and each CLI command run
their work inside one. Services whose work must call the store or the key provider between steps
(ingest, playback, disposal, the KEK cycle, checkpoints, erasure) take the runtime context and
run each step as a unit of its own; the others take the caller's session. Two kinds of hooks
hang off a unit of work (any session this module opens honours them):

- :func:`after_commit` runs work that must not happen inside a transaction (object-store and
  key-provider calls) once the unit has committed;
- :func:`detached` runs a write in a short transaction of its own once the unit has ended,
  committed *or rolled back*: the events that must survive the request's failure (denials,
  an expiry noticed on the way) go there, never into the request's transaction.

**No transaction across a remote call.** Every transaction is counted against the runtime
context (a ``contextvars`` context) that opened it, and :func:`vault.txcount.open_transactions`
reports the count: tests wrap the store and the key provider with a guard that fails when either
is called while the count is not zero. Helper threads join their parent's count through
:func:`vault.txcount.carry`.

SQLite runs in WAL mode with a busy timeout, and every write transaction starts with ``BEGIN
IMMEDIATE``: it takes the write lock up front, so ``serve`` and ``worker`` can share the file.
Read-only sessions begin deferred and never queue for the write lock. PostgreSQL runs at READ
COMMITTED; rules that need more take row locks explicitly. Its read-only sessions run on a pool
of their own, read-only and in autocommit (:func:`_postgres_reads`).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool
from sqlmodel import Session

from vault.async_reads import AsyncReads
from vault.errors import DatabaseUnavailableError, MisconfiguredError
from vault.pool import ping_when_idle
from vault.sqlite_reads import LoopReads
from vault.txcount import track

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY = "callvault_read_only"
_AFTER_COMMIT = "callvault.after_commit"
_DETACHED = "callvault.detached"

T = TypeVar("T")


# --- engine -----------------------------------------------------------------------------------


def create_engine(database_url: str, *, echo: bool = False, create: bool = True) -> Engine:
    """The engine; bound parameters (wrapped DEKs, call ids) never appear in its errors or logs.

    A SQLite file is created (mode 0600, like the keyring) only with ``create``; otherwise a
    missing file is a ``MisconfiguredError`` that says to run ``callvault init``.
    """
    if database_url.startswith("sqlite:"):
        path = database_url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            _sqlite_file(Path(path), create=create)
        engine = sa.create_engine(
            database_url,
            echo=echo,
            hide_parameters=True,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        _install_sqlite_hooks(engine)
    else:
        engine = sa.create_engine(database_url, echo=echo, hide_parameters=True, pool_size=10)
        ping_when_idle(engine)
    track(engine)
    return engine


def _postgres_reads(engine: Engine) -> Engine:
    """PostgreSQL's read-only units (issue #12): connections of their own, in autocommit and
    read-only. A unit of reads needs no BEGIN nor ROLLBACK (two round trips) at READ COMMITTED,
    where every statement is its own snapshot anyway; psycopg's prepared statements survive,
    which it drops at every ROLLBACK; and a write or a row lock tried in a read-only unit is an
    error instead of being rolled back unseen."""
    reads = sa.create_engine(
        engine.url, echo=engine.echo, hide_parameters=True, pool_size=5,
        isolation_level="AUTOCOMMIT",
        connect_args={"options": "-c default_transaction_read_only=on"},
    )  # fmt: skip
    ping_when_idle(reads)
    track(reads)
    # A lost server seen by either pool renews both: the other's idle connections are as dead.
    for seen, other in ((engine, reads), (reads, engine)):
        event.listen(seen, "handle_error", _renew_on_disconnect(other))
    return reads


def _sqlite_loop_reads(engine: Engine) -> LoopReads | None:
    """SQLite's reads on the event loop (:mod:`vault.sqlite_reads`): an engine of their own
    without a pool, so each loop's connection is its own and closes with it. None for an
    in-memory database (another engine would see another database)."""
    if engine.url.database in (None, "", ":memory:"):
        return None
    reads = sa.create_engine(
        engine.url, echo=engine.echo, hide_parameters=True, poolclass=NullPool,
        connect_args={"check_same_thread": False, "timeout": 0},
    )  # fmt: skip
    _install_sqlite_hooks(reads, busy_timeout_ms=0)  # busy: never wait on the loop
    track(reads)
    return LoopReads(reads.execution_options(**{READ_ONLY: True}))


def _renew_on_disconnect(other: Engine) -> Callable[[Any], None]:
    def renew(context: Any) -> None:
        if context.is_disconnect:
            other.dispose()

    return renew


def _sqlite_file(path: Path, *, create: bool) -> None:
    if path.exists():
        return
    if not create:
        raise MisconfiguredError(
            f"no database at {path}: run `callvault init` here first, or set CALLVAULT_DATABASE_URL"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # SQLite's WAL files follow it


def _install_sqlite_hooks(engine: Engine, *, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # Read-only sessions (hot paths such as the per-segment grant re-check) begin deferred,
        # so they never queue for the write lock.
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def is_postgres(session_or_engine: Session | Engine | sa.Connection) -> bool:
    bind = (
        session_or_engine.get_bind()
        if isinstance(session_or_engine, Session)
        else session_or_engine
    )
    return bind.dialect.name == "postgresql"


def single_statement_connection(session: Session) -> sa.Connection:
    """The session's connection for a unit that is one statement (its own snapshot, and for a
    write its own commit, durable when it returns): on PostgreSQL in autocommit, which saves
    the BEGIN and COMMIT/ROLLBACK round trips (issue #12)."""
    if is_postgres(session) and not session.in_transaction():
        return session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    return session.connection()


# --- hooks on a unit of work ------------------------------------------------------------------


def after_commit(session: Session, fn: Callable[[], None]) -> None:
    """Run ``fn`` once this session's transaction has committed, outside any transaction (never
    on rollback). For calls to the object store or the key provider that follow from the
    committed change; a failure is logged: what they do must be repairable (the DB decides)."""
    _hooks(session, _AFTER_COMMIT).append(fn)


def detached(session: Session, fn: Callable[[Session], None]) -> None:
    """Run ``fn(session)`` in a short transaction of its own once this session is closed,
    whether it committed or rolled back: for events that must survive the caller's failure."""
    _hooks(session, _DETACHED).append(fn)


def _hooks(session: Session, key: str) -> list[Any]:
    hooks = session.info.get(key)
    if hooks is None:
        raise RuntimeError("this session was not opened by vault.db.Database")
    return hooks  # type: ignore[no-any-return]


@contextmanager
def _unavailable() -> Iterator[None]:
    """A lost or refused connection is the domain's ``DatabaseUnavailableError`` (503), once,
    here: nothing above this floor sees a driver's exception."""
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise DatabaseUnavailableError.from_driver(exc.orig) from exc
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise DatabaseUnavailableError("database connection lost") from exc
        raise


class UnitSession(Session):
    """A session that honours :func:`after_commit` and :func:`detached`."""

    def __init__(self, db: Database, bind: Any, *, writer: threading.RLock | None = None) -> None:
        info = {**db.session_info, _AFTER_COMMIT: [], _DETACHED: []}
        # expire_on_commit=False: services hand rows to callers after commit.
        super().__init__(bind, expire_on_commit=False, info=info)
        self._callvault_db = db
        # SQLite's one writer (see Database): held from the start of the unit to its commit or
        # rollback, never across the hooks that follow (store calls, detached writes).
        self._writer = writer
        if writer is not None:
            writer.acquire()

    def _release_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._release_writer()
        hooks, self.info[_AFTER_COMMIT] = self.info[_AFTER_COMMIT], []
        for fn in hooks:
            try:
                fn()
            except Exception:
                log.warning("an after-commit step failed", exc_info=True)

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._release_writer()
        self.info[_AFTER_COMMIT] = []  # what was to follow the commit never happened

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release_writer()
        self.info[_AFTER_COMMIT] = []
        writes, self.info[_DETACHED] = self.info.get(_DETACHED, []), []
        for write in writes:
            try:
                with self._callvault_db.transaction() as own:
                    write(own)
            except Exception:
                log.warning("a detached write failed", exc_info=True)


class Database:
    """The engine plus the unit of work; one per process, held by the runtime context."""

    def __init__(self, engine: Engine, *, session_info: dict[str, Any] | None = None) -> None:
        self.engine = engine
        # Process-wide helpers every session carries (the denial limiter).
        self.session_info = dict(session_info or {})
        # SQLite has one writer. Its busy handler makes a waiting writer sleep (up to 100 ms a
        # try), so sixteen concurrent audited reads queue for seconds; this process's writers
        # queue on a lock instead and each starts the moment the last one commits. Other
        # processes (the worker) still meet the busy timeout. Reentrant: a nested unit waits on
        # SQLite exactly as before.
        self._writer = threading.RLock() if engine.dialect.name == "sqlite" else None
        # Read-only units and single reads: on PostgreSQL a pool of their own (_postgres_reads),
        # and the event loop's reads (read_rows) connections of their own as well.
        self._reads: Engine
        self._async_reads: AsyncReads | None = None
        self._loop_reads: LoopReads | None = None
        if self.is_postgres:
            self._reads = _postgres_reads(engine)
            self._async_reads = AsyncReads(engine.url, engine.dialect)
        else:
            self._reads = engine.execution_options(**{READ_ONLY: True})
            self._loop_reads = _sqlite_loop_reads(engine)

    @classmethod
    def from_url(
        cls, url: str, *, session_info: dict[str, Any] | None = None, create: bool = True
    ) -> Database:
        return cls(create_engine(url, create=create), session_info=session_info)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def session(self) -> Session:
        return UnitSession(self, self.engine)

    def read_session(self) -> Session:
        """A session for reads only: on SQLite it does not take the write lock."""
        return UnitSession(self, self._reads)

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only unit: no commit; its detached writes (denials) run once it is closed."""
        with _unavailable(), self.read_session() as session:
            yield session

    @contextmanager
    def single_read(self) -> Iterator[sa.Connection]:
        """A bare connection (no ORM session) for a read that is one statement, its own
        snapshot: in autocommit on PostgreSQL (one round trip, no BEGIN nor ROLLBACK), deferred
        on SQLite. For the hottest reads (issue #12); it audits nothing."""
        with _unavailable(), self._reads.connect() as conn:
            yield conn

    async def read_rows(self, statement: sa.Executable, params: dict[str, Any]) -> Sequence[Any]:
        """The rows of one read-only statement, from async code, on the event loop: on PostgreSQL
        :mod:`vault.async_reads` (a prepared statement), on SQLite :mod:`vault.sqlite_reads`;
        an SQLite file that is busy (or in memory) is read through :meth:`single_read` on the
        thread pool. Like :meth:`single_read`, it audits nothing."""
        if self._async_reads is not None:
            return await self._async_reads.rows(statement, params)
        if self._loop_reads is not None:
            with _unavailable():
                rows = self._loop_reads.rows(statement, params)
            if rows is not None:
                return rows
        return await anyio.to_thread.run_sync(functools.partial(self._rows, statement, params))

    def _rows(self, statement: sa.Executable, params: dict[str, Any]) -> Sequence[Any]:
        with self.single_read() as conn:
            return conn.execute(statement, params).all()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commit on success, roll back on any error; then its hooks."""
        with _unavailable(), UnitSession(self, self.engine, writer=self._writer) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                try:
                    session.rollback()
                except Exception:  # a dead connection: the original error is the one to report
                    log.debug("rollback failed", exc_info=True)
                raise

    def check(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        self.engine.dispose()
        if self.is_postgres:
            self._reads.dispose()
        if self._async_reads is not None:
            self._async_reads.close()
        if self._loop_reads is not None:
            self._loop_reads.close()


# --- migrations -------------------------------------------------------------------------------


# The first revision whose upgrade needs owner pseudonyms from the key provider.
_OWNER_REFS_REVISION = "0005"
OwnerRefs = Callable[[Iterable[str]], dict[str, str]]


def _alembic_config(engine: Engine, owner_refs: dict[str, str] | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("vault") / "migrations"))
    cfg.attributes["engine"] = engine
    cfg.attributes["owner_refs"] = owner_refs or {}
    return cfg


def _owners_to_pseudonymise(engine: Engine) -> list[str]:
    """Owners stored in clear that the 0005 upgrade will pseudonymise (none once past it)."""
    revision = current_revision(engine)
    if revision is None or revision >= _OWNER_REFS_REVISION:
        return []
    with engine.connect() as conn:
        return list(conn.exec_driver_sql("SELECT DISTINCT owner FROM principal").scalars())


def migrate(engine: Engine, *, owner_refs: OwnerRefs | None = None) -> None:
    """Create or upgrade the schema to the newest revision; idempotent.

    ``owner_refs`` pseudonymises stored owners for revision 0005; it is called before the
    migration's transaction opens (a key-provider call never runs under a database lock).
    """
    from alembic import command

    owners = _owners_to_pseudonymise(engine)
    if owners and owner_refs is None:
        raise MisconfiguredError("upgrading past 0005 needs the key provider: run `callvault init`")
    refs = owner_refs(owners) if owners and owner_refs is not None else None
    command.upgrade(_alembic_config(engine, refs), "head")


def current_revision(engine: Engine) -> str | None:
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
