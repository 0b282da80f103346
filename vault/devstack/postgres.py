"""A throwaway PostgreSQL cluster: ``initdb`` in a temporary directory, ``pg_ctl start`` on a
free loopback port with trust authentication, stopped by its postmaster's PID and removed.

``initdb`` refuses to run as root, so as root the cluster is made and run by the ``postgres``
user (``runuser``) in a directory of its own under the system temp dir (a caller's directory
may sit below a 0700 parent the postgres user cannot enter). fsync is off: nothing here must
survive a power cut.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from vault.devstack.procs import HOST, alive, free_port, log_tail, stop_pid

START_TIMEOUT = 60
STOP_TIMEOUT = 30.0


class PostgresStartError(RuntimeError):
    """PostgreSQL's binaries are missing or the cluster did not start."""


@dataclass(frozen=True)
class PgCluster:
    url: str  # postgresql+psycopg://postgres@127.0.0.1:PORT (no database)
    pid: int
    datadir: Path
    log: Path  # the server's log (inside the temporary directory)


def to_libpq(url: str, dbname: str | None = None) -> str:
    """``postgresql+psycopg://u@h:p[/db]`` -> ``postgresql://u@h:p/dbname`` for psycopg."""
    parts = urlsplit(url)
    path = f"/{dbname}" if dbname is not None else parts.path
    return urlunsplit(("postgresql", parts.netloc, path, parts.query, ""))


def answers(conninfo: str) -> bool:
    try:
        with psycopg.connect(conninfo, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


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
        # A session of its own: a Ctrl-C in the terminal must not reach the postmaster, which
        # is stopped last, after everything that uses it.
        result = subprocess.run(
            cmd, stdout=out, stderr=subprocess.STDOUT, check=False, start_new_session=True
        )
    if result.returncode != 0:
        raise PostgresStartError(f"{' '.join(cmd)} failed ({result.returncode}):\n{log_tail(log)}")


def _postmaster_pid(datadir: Path) -> int | None:
    try:
        return int((datadir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def run_postgres(*, keep_log: Path | None = None) -> Iterator[PgCluster]:
    """initdb + pg_ctl start in a temp dir on a free port; stopped by PID and removed after
    (the server's log copied to ``keep_log`` first, when given)."""
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
        initdb_cmd = [initdb, "-D", str(datadir), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                      "--no-sync"]  # fmt: skip
        _run(_as_postgres(initdb_cmd), log)
        port = free_port()
        options = f"-p {port} -k {tmp} -c listen_addresses={HOST} -c fsync=off"
        start = [pg_ctl, "-D", str(datadir), "-l", str(tmp / "server.log"), "-o", options,
                 "-w", "-t", str(START_TIMEOUT), "start"]  # fmt: skip
        _run(_as_postgres(start), log)
        pid = _postmaster_pid(datadir)
        url = f"postgresql+psycopg://postgres@{HOST}:{port}"
        if pid is None or not answers(to_libpq(url, "postgres")):
            raise PostgresStartError(f"throwaway cluster on port {port} does not answer")
        yield PgCluster(url=url, pid=pid, datadir=datadir, log=tmp / "server.log")
    finally:
        pid = pid or _postmaster_pid(datadir)
        if pid is not None and alive(pid):
            # SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, then exit.
            stop_pid(pid, sig=signal.SIGINT, timeout=STOP_TIMEOUT)
        if keep_log is not None:
            with contextlib.suppress(OSError):
                keep_log.unlink(missing_ok=True)  # the symlink a caller showed meanwhile
                shutil.copyfile(tmp / "server.log", keep_log)
        shutil.rmtree(tmp, ignore_errors=True)
