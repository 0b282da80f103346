"""Running callvault: ``init``, ``serve`` and ``worker``."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from vault import __version__, logs
from vault.allocator import freeze_startup_heap, keep_freed_memory
from vault.cli._common import app, context, initialise, settings
from vault.cli_errors import clean_errors, fail, mask
from vault.context import Context, build_context


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"callvault {__version__}")


@app.command()
@clean_errors
def init(
    admin_key_file: Annotated[
        Path | None,
        typer.Option(
            "--admin-key-file",
            help="Write the bootstrap admin key to this file (mode 0600) instead of printing it "
            "(default: CALLVAULT_ADMIN_KEY_FILE).",
        ),
    ] = None,
) -> None:
    """Create or migrate the schema and the keyring; hand out a bootstrap admin key once."""
    ctx = context(create_keys=True)
    target = admin_key_file or ctx.settings.admin_key_file
    try:
        key = _initialise(ctx, target)
    finally:
        ctx.close()
    typer.echo(f"callvault initialised: database {mask(ctx.settings.database_url)}")
    _announce(key, target)


def _initialise(ctx: Context, target: Path | None) -> str | None:
    from vault.setup import write_secret_file

    deliver = None if target is None else lambda key: write_secret_file(target, key)
    return initialise(ctx, deliver_key=deliver)


def _announce(key: str | None, target: Path | None) -> None:
    """Say where the first admin key is; print it only when no file is configured."""
    if key and target is not None:
        typer.echo(f"bootstrap admin API key written to {target} (mode 0600)")
    elif key:
        typer.echo("bootstrap admin API key (shown once; store it safely):")
        typer.echo(key)


@app.command()
@clean_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8080,
    no_scheduler: Annotated[bool, typer.Option("--no-scheduler", help="Run the API only.")] = False,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="API processes on the port (about one per core).")
    ] = 1,
) -> None:
    """Run the API (and, in single-node mode, the scheduler). Initialises on first start."""
    import uvicorn

    from vault.app import create_app

    env = settings()
    _check_port(host, port)  # before anything is said or started
    keep_freed_memory()
    ctx = build_context(env, create_keys=True)
    _announce(_initialise(ctx, env.admin_key_file), env.admin_key_file)
    # One process serves through this context; with --workers each worker builds its own
    # from the same environment (the Python work of streaming is bound by one core per process).
    api = create_app(env, ctx=ctx) if workers == 1 else None
    scheduler = None
    if not no_scheduler:
        from jobs.scheduler import build_scheduler

        # Single-node mode: the jobs run in this process, beside the API.
        scheduler = build_scheduler(ctx, blocking=False)
        scheduler.start()
    typer.echo(f"callvault {__version__} listening on http://{host}:{port}", err=True)
    # uvicorn shuts down gracefully on SIGTERM and then re-raises it to the handler it found:
    # make that handler an orderly exit, so the scheduler is stopped and the context closed.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        logs.configure()
        # Our middleware writes the access line (route template, never the query string).
        quiet = {"log_level": "info", "access_log": False, "log_config": None}
        freeze_startup_heap()  # this process's own heap; each worker freezes its own
        if api is not None:
            uvicorn.run(api, host=host, port=port, **quiet)  # type: ignore[arg-type]
        else:
            uvicorn.run(
                "vault.app:from_env", factory=True, host=host, port=port, workers=workers, **quiet
            )  # type: ignore[arg-type]
    finally:
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        _flush_denials(ctx)
        ctx.close()


def _check_port(host: str, port: int) -> None:
    """Fail in one line when the address is taken, instead of announcing it and dying."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def _exit_on_sigterm(_signum: int, _frame: Any) -> None:
    raise SystemExit(0)


def _flush_denials(ctx: Context) -> None:
    """Write the denial aggregates still open at shutdown (best effort)."""
    from vault import audit

    try:
        audit.flush_denials(ctx.db, ctx.denials, now=ctx.now(), force=True)
    except Exception as exc:
        typer.echo(f"warning: could not write the last denial aggregates: {exc}", err=True)


@app.command()
@clean_errors
def worker() -> None:
    """Run the scheduler alone (every job at CALLVAULT_JOB_INTERVAL_SECONDS, kek-cycle hourly).

    It never migrates: on a database without the current schema it says so and exits 2, so a
    worker started before ``init`` restarts quietly instead of failing every job."""
    import logging

    from jobs.scheduler import build_scheduler

    ctx = context()
    try:
        _check_ready(ctx, full=False)
    except BaseException:
        ctx.close()
        raise
    logs.configure(logging.INFO)
    scheduler = build_scheduler(ctx, blocking=True)

    def _stop(_signum: int, _frame: Any) -> None:
        # Before start() there is no loop to end: leave at once (ctx closes below).
        if not scheduler.running:
            raise SystemExit(0)
        scheduler.shutdown(wait=False)

    interval = ctx.settings.job_interval_seconds
    try:
        signal.signal(signal.SIGTERM, _stop)
        typer.echo(f"callvault {__version__} worker: jobs every {interval:g} s", err=True)
        scheduler.start()
    except KeyboardInterrupt:
        pass
    finally:
        ctx.close()


@app.command()
@clean_errors
def check() -> None:
    """Exit 0 if the schema is current and the store and key provider answer (a healthcheck).

    Otherwise one line on stderr and exit 2."""
    ctx = context()
    try:
        _check_ready(ctx, full=True)
    finally:
        ctx.close()
    typer.echo("ok")


def _check_ready(ctx: Context, *, full: bool) -> None:
    from vault.setup import require_current_schema

    ctx.db.check()
    require_current_schema(ctx.db.engine)
    if full:
        for region in ctx.regions():
            ctx.store_for(region).check()
            ctx.keys_for(region).check()
