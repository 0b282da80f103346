"""Engine, sessions and migrations.

SQLite runs in WAL mode with a busy timeout, and every transaction starts with ``BEGIN
IMMEDIATE``: it takes the write lock up front, so ``serve`` and ``worker`` can share the file
without "database is locked" surprises halfway through a transaction. PostgreSQL runs at READ
COMMITTED; rules that need more take row locks explicitly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session

SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY = "callvault_read_only"


def create_engine(database_url: str, *, echo: bool = False) -> Engine:
    if database_url.startswith("sqlite:"):
        path = database_url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            database_url,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        _install_sqlite_hooks(engine)
        return engine
    return sa.create_engine(database_url, echo=echo, pool_pre_ping=True, pool_size=10)


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
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


class Database:
    """The engine plus a session factory; one per process, held by the app or the worker."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, url: str) -> Database:
        return cls(create_engine(url))

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def session(self) -> Session:
        # expire_on_commit=False: services hand rows to callers after commit.
        return Session(self.engine, expire_on_commit=False)

    def read_session(self) -> Session:
        """A session for reads only: on SQLite it does not take the write lock."""
        return Session(self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commit on success, roll back on any error."""
        with self.session() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def check(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        self.engine.dispose()


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("vault") / "migrations"))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to the newest revision; idempotent."""
    from alembic import command

    command.upgrade(_alembic_config(engine), "head")


def current_revision(engine: Engine) -> str | None:
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
