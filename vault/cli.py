"""The ``callvault`` command line (typer).

Errors are one line on stderr and exit code 2, never a traceback. Commands that print a secret
(an API key) print it alone on the last line, so scripts can take it with ``tail -n1``.
"""

from __future__ import annotations

import mimetypes
import signal
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from vault import __version__, logs
from vault.allocator import keep_freed_memory
from vault.authz import Actor
from vault.cli_errors import clean_errors, fail, mask, settings_from_env
from vault.config import Settings
from vault.context import Context, build_context

app = typer.Typer(help="callvault: a secure vault for video-call recordings.", no_args_is_help=True)
tenant_app = typer.Typer(help="Tenants.", no_args_is_help=True)
principal_app = typer.Typer(help="Principals and their API keys.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit chain.", no_args_is_help=True)
keys_app = typer.Typer(help="Key-encryption keys (KEKs).", no_args_is_help=True)
jobs_app = typer.Typer(help="Scheduled jobs, run by hand.", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")
app.add_typer(principal_app, name="principal")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(jobs_app, name="jobs")

def _settings() -> Settings:
    return settings_from_env()


def _context(*, create_keys: bool = False) -> Context:
    # Only init and serve create what is missing: another command run in the wrong directory
    # says so instead of leaving an empty ./callvault-data behind.
    return build_context(_settings(), create_keys=create_keys)


def _initialise(ctx: Context) -> str | None:
    from vault.setup import initialise

    return initialise(ctx, now=ctx.now())


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"callvault {__version__}")


@app.command()
@clean_errors
def init() -> None:
    """Create or migrate the schema and the keyring; print a bootstrap admin key once."""
    ctx = _context(create_keys=True)
    try:
        key = _initialise(ctx)
    finally:
        ctx.close()
    typer.echo(f"callvault initialised: database {mask(ctx.settings.database_url)}")
    if key:
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

    settings = _settings()
    _check_port(host, port)  # before anything is said or started
    keep_freed_memory()
    ctx = build_context(settings, create_keys=True)
    key = _initialise(ctx)
    if key:
        typer.echo("bootstrap admin API key (shown once; store it safely):")
        typer.echo(key)
    # One process serves through this context; with --workers each worker builds its own
    # from the same environment (the Python work of streaming is bound by one core per process).
    api = create_app(settings, ctx=ctx) if workers == 1 else None
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
    """Run the scheduler alone (every job at CALLVAULT_JOB_INTERVAL_SECONDS, kek-cycle hourly)."""
    import logging

    from jobs.scheduler import build_scheduler

    logs.configure(logging.INFO)
    ctx = _context()
    ctx.db.check()
    scheduler = build_scheduler(ctx, blocking=True)
    signal.signal(signal.SIGTERM, lambda *_: scheduler.shutdown(wait=False))
    interval = ctx.settings.job_interval_seconds
    typer.echo(f"callvault {__version__} worker: jobs every {interval:g} s", err=True)
    try:
        scheduler.start()
    except KeyboardInterrupt:
        pass
    finally:
        ctx.close()


# --- jobs and keys --------------------------------------------------------------------------------


@jobs_app.command("run")
@clean_errors
def jobs_run(
    name: Annotated[str, typer.Argument(help="A job name, or `all` for every job in order.")],
    force: Annotated[
        bool, typer.Option("--force", help="kek-cycle: rotate now, whatever the KEK's age.")
    ] = False,
) -> None:
    """Run one job now (or `all` of them once) and print a one-line summary per job."""
    from jobs import tasks

    if name != "all" and name not in tasks.JOBS:
        fail(f"unknown job {name!r}; choose one of {', '.join(tasks.JOBS)} or all")
    ctx = _context()
    try:
        if name != "all":
            typer.echo(f"{name}: {tasks.run(name, ctx, ctx.now(), force=force)}")
            return
        failed = 0
        for outcome in tasks.run_all(ctx, ctx.now(), force=force):
            failed += not outcome.ok
            typer.echo(f"{outcome.name}: {'' if outcome.ok else 'FAILED: '}{outcome.summary}")
    finally:
        ctx.close()
    if failed:
        raise typer.Exit(1)


@keys_app.command("rotate")
@clean_errors
def keys_rotate() -> None:
    """Add a new KEK version now (the kek-cycle job then rewraps DEKs and retires old ones)."""
    from vault import kek as keys

    ctx = _context()
    try:
        version = keys.rotate(ctx, now=ctx.now())
    finally:
        ctx.close()
    typer.echo(f"KEK rotated: newest version is {version}")


@keys_app.command("retire")
@clean_errors
def keys_retire() -> None:
    """Destroy the KEK versions that no live DEK uses any more."""
    from vault import kek as keys

    ctx = _context()
    try:
        retired = keys.retire_unused(ctx, now=ctx.now())
    finally:
        ctx.close()
    if retired:
        typer.echo(f"KEK versions retired (destroyed): {', '.join(map(str, retired))}")
    else:
        typer.echo("no KEK version to retire")


# --- tenants and principals -----------------------------------------------------------------------


@tenant_app.command("add")
@clean_errors
def tenant_add(name: str, region: Annotated[str | None, typer.Option()] = None) -> None:
    """Register a tenant."""
    from vault.identity.tenants import create_tenant

    ctx = _context()
    with ctx.db.transaction() as session:
        tenant = create_tenant(
            session, actor=Actor.operator(), name=name, region=region, now=ctx.now()
        )
    typer.echo(f"tenant {tenant.name} {tenant.id}")


@principal_app.command("add")
@clean_errors
def principal_add(
    name: str,
    role: Annotated[
        str, typer.Option(help="admin|ingest|engineer|approver|security|privacy|auditor|monitor")
    ],
    owner: Annotated[str, typer.Option(help="The person or service behind the key (email).")],
    tenant: Annotated[
        list[str] | None, typer.Option("--tenant", help="Tenant in scope (repeat).")
    ] = None,
    all_tenants: Annotated[
        bool, typer.Option("--all-tenants", help="Scope over every tenant.")
    ] = False,
    expires_days: Annotated[float | None, typer.Option(help="Key lifetime in days.")] = None,
) -> None:
    """Create a principal and print its API key (alone on the last line)."""
    from vault.identity import principals
    from vault.identity.owners import owner_of

    ctx = _context()
    now = ctx.now()
    expires_at = now + timedelta(days=expires_days) if expires_days else None
    owner_id = owner_of(ctx.keys, owner)  # the provider call, before the transaction
    with ctx.db.transaction() as session:
        principal, key = principals.add_principal(
            session, actor=Actor.operator(), name=name, role=role, owner=owner_id,
            tenants=tenant or [], all_tenants=all_tenants, now=now, expires_at=expires_at,
            rng=ctx.rng,
        )  # fmt: skip
    typer.echo(f"principal {principal.name} ({principal.role}) {principal.id}")
    typer.echo(key)


@principal_app.command("revoke")
@clean_errors
def principal_revoke(name: str) -> None:
    """Revoke a principal and all its keys."""
    from vault.identity import principals

    ctx = _context()
    with ctx.db.transaction() as session:
        principals.revoke_principal(session, actor=Actor.operator(), name=name, now=ctx.now())
    typer.echo(f"principal {name} revoked")


@principal_app.command("set-role")
@clean_errors
def principal_set_role(name: str, role: Annotated[str, typer.Option()]) -> None:
    """Change a principal's role."""
    from vault.identity import principals

    ctx = _context()
    with ctx.db.transaction() as session:
        principals.set_role(session, actor=Actor.operator(), name=name, role=role, now=ctx.now())
    typer.echo(f"principal {name} now has role {role}")


@principal_app.command("clear-owner")
@clean_errors
def principal_clear_owner(name: str) -> None:
    """Forget the e-mail behind a principal; four-eyes and the audit chain keep its pseudonym."""
    from vault.identity import principals

    ctx = _context()
    with ctx.db.transaction() as session:
        principals.clear_owner(session, actor=Actor.operator(), name=name, now=ctx.now())
    typer.echo(f"principal {name}: owner e-mail cleared")


# --- recordings and audit -------------------------------------------------------------------------


def _file_chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(size):
            yield chunk


@app.command()
@clean_errors
def ingest(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    tenant: Annotated[str, typer.Option()],
    purposes: Annotated[str, typer.Option(help="Comma-separated purposes.")],
    call_id: Annotated[str | None, typer.Option()] = None,
    content_type: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Ingest a media file as an operator (audited as system:cli)."""
    from vault.recordings.ingest import ingest as ingest_recording

    ctx = _context()
    ctype = content_type or mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    rec = ingest_recording(
        ctx, actor=Actor.operator(), tenant=tenant,
        purposes=[p for p in purposes.split(",") if p.strip()], call_id=call_id,
        recorded_at=None, content_type=ctype, chunks=_file_chunks(file),
        expected_length=file.stat().st_size,
    )  # fmt: skip
    typer.echo(f"recording {rec.id} stored ({rec.size} bytes, sha256 {rec.sha256})")
    typer.echo(str(rec.id))


@audit_app.command("verify")
@clean_errors
def audit_verify() -> None:
    """Exit 0 only when the chain and its signed checkpoints hold; else name the first bad seq."""
    from vault.audit import checkpoints

    ctx = _context()
    try:
        # Trust only the pinned key or the provider's, never the copy beside the exports.
        public_key = checkpoints.trusted_public_key(ctx)
        # A read-only session: on SQLite a long verification does not block writers.
        with ctx.db.reading() as session:
            result = checkpoints.verify_all(session, public_key=public_key)
    finally:
        ctx.close()
    if result.ok:
        typer.echo(
            f"audit chain ok: {result.chain.checked} events, head seq {result.chain.head_seq}, "
            f"{result.checkpoints_checked} signed checkpoints"
        )
        return
    where = "" if result.checkpoint_id is None else f" (checkpoint {result.checkpoint_id})"
    message = f"audit chain BROKEN at seq {result.first_bad_seq}{where}: {result.reason}"
    typer.echo(message, err=True)
    raise typer.Exit(1)


@audit_app.command("checkpoint")
@clean_errors
def audit_checkpoint() -> None:
    """Sign the chain head now and export the checkpoint to the object store."""
    from vault.audit import checkpoints

    ctx = _context()
    try:
        cp = checkpoints.write_checkpoint(ctx, now=ctx.now())
    finally:
        ctx.close()
    if cp is None:
        typer.echo("audit head already checkpointed; nothing to sign")
        return
    if cp.object_key is None:
        typer.echo(
            f"checkpoint {cp.id} signs seq {cp.head_seq}, but its export to the object store "
            "failed (see the log); it is retried on the next run", err=True,
        )  # fmt: skip
        raise typer.Exit(1)
    typer.echo(f"checkpoint {cp.id} signs seq {cp.head_seq}: {cp.object_key}")


@app.callback()
def main() -> None:
    """callvault: a secure vault for video-call recordings."""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
