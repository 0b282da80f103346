"""The production topology on one machine: PostgreSQL, SeaweedFS (for MinIO), OpenBao with
Transit, ``callvault init`` once, then N API processes (``serve --no-scheduler``) and N workers.

Every process shares one environment (``CALLVAULT_*``), listens on a free loopback port and
logs to ``DIR/logs/``. Stopping goes in the reverse order of starting: the APIs and workers
(all signalled at once, then reaped), then OpenBao, SeaweedFS and PostgreSQL, each by its PID,
so nothing is left behind. The services' data lives under ``DIR/data`` (PostgreSQL's in a
temporary directory of the postgres user) and is removed with them: the stack is throwaway.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from vault.devstack.bao import run_bao
from vault.devstack.postgres import run_postgres, to_libpq
from vault.devstack.procs import HOST, free_port, log_tail, spawn, wait_until
from vault.devstack.weed import run_weed

__all__ = ["BUCKET", "DATABASE", "Proc", "Stack", "StackError", "callvault_cmd", "run_stack"]

DATABASE = "callvault"
BUCKET = "callvault"
API_START_TIMEOUT = 90.0  # two interpreters importing at once on a busy 2-core machine
INIT_TIMEOUT = 120.0
APP_STOP_TIMEOUT = 20.0


class StackError(RuntimeError):
    """A part of the stack did not start; the message names it and ends with its log."""


@dataclass(frozen=True)
class Proc:
    name: str  # api-1, worker-2, postgres, seaweedfs, openbao
    pid: int
    log: str
    url: str | None = None


@dataclass
class Stack:
    directory: Path
    env: dict[str, str]  # every CALLVAULT_* setting the processes share
    admin_key_file: Path
    apis: list[Proc] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)
    services: list[Proc] = field(default_factory=list)
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    def exited(self) -> str | None:
        """The name of the first API or worker that has exited, if any."""
        return next((name for name, p in self.children.items() if p.poll() is not None), None)

    @property
    def api_urls(self) -> list[str]:
        return [p.url for p in self.apis if p.url]

    def describe(self) -> dict[str, object]:
        """What ``DIR/stack.json`` holds (it names secrets of this throwaway stack: mode 0600)."""
        return {
            "dir": str(self.directory),
            "pid": os.getpid(),
            "api_urls": self.api_urls,
            "admin_key_file": str(self.admin_key_file),
            "env": self.env,
            "apis": [asdict(p) for p in self.apis],
            "workers": [asdict(p) for p in self.workers],
            "services": [asdict(p) for p in self.services],
        }


def callvault_cmd() -> list[str]:
    """The ``callvault`` entry point of this interpreter's environment."""
    exe = Path(sys.executable).with_name("callvault")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "vault.cli"]


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _create_database(base_url: str) -> str:
    with psycopg.connect(to_libpq(base_url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    return f"{base_url}/{DATABASE}"


def _initialise(env: dict[str, str], directory: Path, log: Path) -> str:
    """``callvault init`` once; returns the bootstrap admin key (never shown on a terminal)."""
    with open(log, "ab") as err:
        result = subprocess.run(
            [*callvault_cmd(), "init"], cwd=directory, env=env, stdout=subprocess.PIPE,
            stderr=err, timeout=INIT_TIMEOUT, check=False, start_new_session=True,
        )  # fmt: skip
    lines = result.stdout.decode(errors="replace").strip().splitlines()
    if result.returncode != 0 or not lines or not lines[-1].startswith("cvk_"):
        raise StackError(f"callvault init failed ({result.returncode}):\n{log_tail(log)}")
    return lines[-1].strip()


def _healthy(url: str) -> bool:
    # An http://127.0.0.1 URL of the stack's own making.
    with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:  # noqa: S310
        return int(resp.status) == 200


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process at once (they shut down in parallel), reap, SIGKILL stragglers."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + APP_STOP_TIMEOUT
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def _stack_env(base: Mapping[str, str], *, db_url: str, s3: object, bao: object) -> dict[str, str]:
    settings = {
        "CALLVAULT_DATABASE_URL": db_url,
        "CALLVAULT_BLOB_STORE": f"s3://{BUCKET}",
        "CALLVAULT_S3_ENDPOINT": s3.endpoint,  # type: ignore[attr-defined]
        "CALLVAULT_S3_ACCESS_KEY": s3.access_key,  # type: ignore[attr-defined]
        "CALLVAULT_S3_SECRET_KEY": s3.secret_key,  # type: ignore[attr-defined]
        "CALLVAULT_S3_SECURE": "false",
        "CALLVAULT_KEY_PROVIDER": f"transit:{bao.url}",  # type: ignore[attr-defined]
        "CALLVAULT_TRANSIT_TOKEN": bao.token,  # type: ignore[attr-defined]
    }
    # The caller's own CALLVAULT_* settings (job interval, policy file...) reach every process;
    # the ones that wire the services together are the stack's.
    inherited = {k: v for k, v in base.items() if k.startswith("CALLVAULT_")}
    return {**inherited, **settings}


@contextlib.contextmanager
def run_stack(
    directory: Path, *, apis: int, workers: int, base_env: Mapping[str, str]
) -> Iterator[Stack]:
    """Start the whole stack under ``directory`` and yield it; stop everything on exit."""
    directory = directory.resolve()
    logs, data = directory / "logs", directory / "data"
    logs.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, data, ignore_errors=True)  # last: the services are gone
        pg_log = logs / "postgres.log"
        pg = stack.enter_context(run_postgres(keep_log=pg_log))
        pg_log.symlink_to(pg.log)  # replaced by a copy when the cluster is removed
        s3 = stack.enter_context(run_weed(data / "seaweedfs"))
        s3.client().make_bucket(BUCKET, object_lock=True)
        bao = stack.enter_context(run_bao(data / "openbao"))
        settings = _stack_env(base_env, db_url=_create_database(pg.url), s3=s3, bao=bao)
        env = {**base_env, **settings}
        key_file = directory / "admin.key"
        _write_private(key_file, _initialise(env, directory, logs / "init.log") + "\n")
        result = Stack(directory=directory, env=settings, admin_key_file=key_file)
        result.services = [
            Proc("postgres", pg.pid, str(pg_log), pg.url),
            Proc("seaweedfs", s3.pid, str(s3.log), f"http://{s3.endpoint}"),
            Proc("openbao", bao.pid, str(bao.log), bao.url),
        ]
        children: list[subprocess.Popen[bytes]] = []
        stack.callback(_stop_all, children)  # APIs and workers stop first
        for i in range(1, apis + 1):
            port, log = free_port(), logs / f"api-{i}.log"
            cmd = [*callvault_cmd(), "serve", "--host", HOST, "--port", str(port),
                   "--no-scheduler"]  # fmt: skip
            children.append(spawn(cmd, log=log, cwd=directory, env=env))
            result.apis.append(
                Proc(f"api-{i}", children[-1].pid, str(log), f"http://{HOST}:{port}")
            )
        for i in range(1, workers + 1):
            log = logs / f"worker-{i}.log"
            children.append(spawn([*callvault_cmd(), "worker"], log=log, cwd=directory, env=env))
            result.workers.append(Proc(f"worker-{i}", children[-1].pid, str(log)))
        for proc, api in zip(children, result.apis, strict=False):
            url = api.url or ""
            wait_until(lambda u=url: _healthy(u), proc=proc, timeout=API_START_TIMEOUT,  # type: ignore[misc]
                       what=api.name, log=Path(api.log), error=StackError, poll=0.2)  # fmt: skip
        for proc, worker in zip(children[apis:], result.workers, strict=True):
            if proc.poll() is not None:
                raise StackError(f"{worker.name} exited with {proc.returncode}:\n"
                                 f"{log_tail(Path(worker.log))}")  # fmt: skip
        named = zip(result.apis + result.workers, children, strict=True)
        result.children = {p.name: c for p, c in named}
        _write_private(directory / "stack.json", json.dumps(result.describe(), indent=2) + "\n")
        exports = "".join(f"export {k}='{v}'\n" for k, v in sorted(settings.items()))
        _write_private(directory / "env", exports)
        yield result
