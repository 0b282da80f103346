"""``callvault dev-stack``: the production topology natively on one machine, until Ctrl-C.

PostgreSQL, SeaweedFS (standing in for MinIO), OpenBao with Transit, ``init`` once, N API
processes and N workers (see :mod:`vault.devstack.stack`). SIGINT or SIGTERM stops everything by
PID, in order; a process that dies on its own stops the stack too (exit 1), so a broken stack is
never mistaken for a running one.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from vault.cli._common import app
from vault.cli_errors import clean_errors, fail, settings_from_env

MAX_PROCESSES = 8


class _Stop(Exception):
    """SIGINT or SIGTERM arrived: leave the stack's context, which stops everything."""


def _stop(_signum: int, _frame: Any) -> None:
    _ignore_signals()  # the shutdown itself must not be interrupted half-way
    raise _Stop


def _ignore_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _directory(given: Path | None) -> Path:
    if given is None:
        return Path(tempfile.mkdtemp(prefix="callvault-devstack-"))
    if given.exists() and (not given.is_dir() or any(given.iterdir())):
        fail(f"--dir {given} must be a new or empty directory (the stack is throwaway)")
    given.mkdir(mode=0o700, parents=True, exist_ok=True)
    return given


@app.command("dev-stack")
@clean_errors
def dev_stack(
    directory: Annotated[
        Path | None, typer.Option("--dir", help="New or empty directory (default: a temp dir).")
    ] = None,
    apis: Annotated[int, typer.Option(help="API processes (serve --no-scheduler).")] = 2,
    workers: Annotated[int, typer.Option(help="Worker processes (the scheduler).")] = 2,
) -> None:
    """Run PostgreSQL, SeaweedFS, OpenBao, N APIs and N workers on loopback until Ctrl-C."""
    from vault.devstack.stack import run_stack
    from vault.policy import load_policy

    if not 1 <= apis <= MAX_PROCESSES:
        fail(f"--apis must be between 1 and {MAX_PROCESSES} (got {apis})")
    if not 0 <= workers <= MAX_PROCESSES:
        fail(f"--workers must be between 0 and {MAX_PROCESSES} (got {workers})")
    load_policy(settings_from_env().policy_file)  # a bad CALLVAULT_* or policy: before starting
    where = _directory(directory)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    try:
        with run_stack(where, apis=apis, workers=workers, base_env=os.environ) as stack:
            _announce(stack)
            while (gone := stack.exited()) is None:
                time.sleep(0.5)
            _ignore_signals()
            typer.echo(f"error: {gone} exited; see {where / 'logs'}; stopping", err=True)
            code = 1
    except _Stop:
        pass
    except RuntimeError as exc:  # a service that would not start: its log tail says why
        _ignore_signals()
        typer.echo(f"error: {exc}", err=True)
        code = 1
    typer.echo(f"callvault dev-stack stopped; logs in {where / 'logs'}", err=True)
    raise typer.Exit(code)


def _announce(stack: Any) -> None:
    typer.echo(f"callvault dev-stack: {len(stack.apis)} API(s), {len(stack.workers)} worker(s)")
    for api in stack.apis:
        typer.echo(f"  {api.name}  {api.url}")
    typer.echo(f"  admin key file: {stack.admin_key_file}")
    typer.echo(f"  stack description: {stack.directory / 'stack.json'}")
    typer.echo(f"  CLI environment: . {stack.directory / 'env'}")
    typer.echo(f"  logs: {stack.directory / 'logs'}/")
    typer.echo("Ctrl-C (or SIGTERM) stops everything.", err=True)
