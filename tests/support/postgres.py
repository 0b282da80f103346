"""A real PostgreSQL for tests: the machine's server if one answers, else a throwaway cluster.

``postgres_server()`` yields a base SQLAlchemy URL without a database
(``postgresql+psycopg://USER@127.0.0.1:PORT``). ``temp_database(base_url)`` yields the URL of a
fresh, uniquely named database and drops it afterwards. Both raise ``PostgresStartError`` (a
``RuntimeError``) when no server can be had; fixtures fail on that, never skip.

``CALLVAULT_TEST_POSTGRES_URL`` overrides the discovery with a base URL of your own. The
throwaway cluster is :func:`vault.devstack.postgres.run_postgres`, the one ``callvault
dev-stack`` runs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from vault.devstack.postgres import (
    PostgresStartError,
    answers,
    find_pg_bin,
    run_postgres,
    to_libpq,
)

__all__ = [
    "PostgresStartError",
    "find_pg_bin",
    "postgres_server",
    "temp_database",
    "throwaway_cluster",
    "to_libpq",
]

HOST = "127.0.0.1"
DEFAULT_PORT = 5432
# (user, database) pairs tried on the default port: the CI image has a "root" role and a "test"
# database; a stock Debian cluster has only "postgres".
_CANDIDATES = (("root", "test"), ("postgres", "postgres"))
ENV_OVERRIDE = "CALLVAULT_TEST_POSTGRES_URL"


def _with_database(base_url: str, dbname: str) -> str:
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", parts.query, ""))


def _existing_server() -> str | None:
    for user, dbname in _CANDIDATES:
        conninfo = f"host={HOST} port={DEFAULT_PORT} user={user} dbname={dbname}"
        if answers(conninfo):
            return f"postgresql+psycopg://{user}@{HOST}:{DEFAULT_PORT}"
    return None


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[str]:
    """A cluster of its own on a free port (base URL); stopped by PID and removed after."""
    with run_postgres() as cluster:
        yield cluster.url


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a base URL: the override, the server on 127.0.0.1:5432, or a throwaway cluster."""
    override = os.environ.get(ENV_OVERRIDE)
    if override:
        yield override
        return
    existing = _existing_server()
    if existing is not None:
        yield existing
        return
    with throwaway_cluster() as url:
        yield url


@contextlib.contextmanager
def temp_database(base_url: str) -> Iterator[str]:
    """Create a uniquely named database on ``base_url``'s server, yield its URL, drop it."""
    name = f"cv_test_{secrets.token_hex(6)}"
    admin = to_libpq(base_url, "postgres")
    if not answers(admin):
        admin = to_libpq(base_url, "template1")  # a cluster whose "postgres" db was dropped
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_database(base_url, name)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            # FORCE: a test that leaked a connection must not leave the database behind.
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
