"""A real PostgreSQL for tests: the machine's server if one answers, else a throwaway cluster.

``postgres_server()`` yields a base SQLAlchemy URL without a database
(``postgresql+psycopg://USER@127.0.0.1:PORT``). ``temp_database(base_url)`` yields the URL of a
fresh, uniquely named database and drops it afterwards. Both raise ``PostgresStartError`` (a
``RuntimeError``) when no server can be had; fixtures fail on that, never skip.

``CALLVAULT_TEST_POSTGRES_URL`` overrides the discovery with a base URL of your own.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from tests.support.net import free_port

HOST = "127.0.0.1"
DEFAULT_PORT = 5432
# (user, database) pairs tried on the default port: the CI image has a "root" role and a "test"
# database; a stock Debian cluster has only "postgres".
_CANDIDATES = (("root", "test"), ("postgres", "postgres"))
START_TIMEOUT = 60
STOP_TIMEOUT = 30.0
ENV_OVERRIDE = "CALLVAULT_TEST_POSTGRES_URL"


class PostgresStartError(RuntimeError):
    """No PostgreSQL answered and a throwaway cluster could not be started."""


def to_libpq(url: str, dbname: str | None = None) -> str:
    """``postgresql+psycopg://u@h:p[/db]`` -> ``postgresql://u@h:p/dbname`` for psycopg."""
    parts = urlsplit(url)
    path = f"/{dbname}" if dbname is not None else parts.path
    return urlunsplit(("postgresql", parts.netloc, path, parts.query, ""))


def _with_database(base_url: str, dbname: str) -> str:
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", parts.query, ""))


def _answers(conninfo: str) -> bool:
    try:
        with psycopg.connect(conninfo, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _existing_server() -> str | None:
    for user, dbname in _CANDIDATES:
        conninfo = f"host={HOST} port={DEFAULT_PORT} user={user} dbname={dbname}"
        if _answers(conninfo):
            return f"postgresql+psycopg://{user}@{HOST}:{DEFAULT_PORT}"
    return None


def find_pg_bin(name: str) -> str:
    """``initdb``/``pg_ctl``: Debian keeps them in /usr/lib/postgresql/VERSION/bin, off PATH."""
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
        reverse=True,
    )
    if candidates:
        return candidates[0]
    found = shutil.which(name)
    if found is None:
        raise PostgresStartError(f"`{name}` not found (apt-get install postgresql)")
    return found


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb refuses to run as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "ab") as out:
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise PostgresStartError(f"{' '.join(cmd)} failed ({result.returncode}):\n{tail}")


def _postmaster_pid(datadir: Path) -> int | None:
    try:
        return int((datadir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_by_pid(pid: int) -> None:
    os.kill(pid, signal.SIGINT)  # "fast" shutdown: roll back sessions, then exit
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[str]:
    """initdb + pg_ctl start in a temp dir on a free port; stopped by PID and removed after."""
    initdb = find_pg_bin("initdb")
    pg_ctl = str(Path(initdb).with_name("pg_ctl"))
    tmp = Path(tempfile.mkdtemp(prefix="callvault-pg-"))
    datadir = tmp / "data"
    log = tmp / "postgres.log"
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(tmp, entry.pw_uid, entry.pw_gid)
    pid: int | None = None
    try:
        _run(
            _as_postgres(
                [
                    initdb,
                    "-D",
                    str(datadir),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            log,
        )
        port = free_port()
        options = f"-p {port} -k {tmp} -c listen_addresses={HOST} -c fsync=off"
        _run(
            _as_postgres(
                [
                    pg_ctl,
                    "-D",
                    str(datadir),
                    "-l",
                    str(tmp / "server.log"),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    str(START_TIMEOUT),
                    "start",
                ]
            ),
            log,
        )
        pid = _postmaster_pid(datadir)
        url = f"postgresql+psycopg://postgres@{HOST}:{port}"
        if not _answers(to_libpq(url, "postgres")):
            raise PostgresStartError(f"throwaway cluster on port {port} does not answer")
        yield url
    finally:
        pid = pid or _postmaster_pid(datadir)
        if pid is not None:
            _stop_by_pid(pid)
        shutil.rmtree(tmp, ignore_errors=True)


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
    if not _answers(admin):
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
