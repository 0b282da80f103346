"""What every command shares: the typer apps, and the context built from the environment."""

from __future__ import annotations

from collections.abc import Callable

import typer

from vault.cli_errors import settings_from_env
from vault.config import Settings
from vault.context import Context, build_context

app = typer.Typer(help="callvault: a secure vault for video-call recordings.", no_args_is_help=True)
tenant_app = typer.Typer(help="Tenants.", no_args_is_help=True)
principal_app = typer.Typer(help="Principals and their API keys.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)
keys_app = typer.Typer(help="Key-encryption keys (KEKs).", no_args_is_help=True)
jobs_app = typer.Typer(help="Scheduled jobs, run by hand.", no_args_is_help=True)
restore_app = typer.Typer(help="After restoring a backup.", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")
app.add_typer(principal_app, name="principal")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(jobs_app, name="jobs")
app.add_typer(restore_app, name="restore")


def settings() -> Settings:
    return settings_from_env()


def context(*, create_keys: bool = False) -> Context:
    # Only init and serve create what is missing: another command run in the wrong directory
    # says so instead of leaving an empty ./callvault-data behind.
    return build_context(settings(), create_keys=create_keys)


def initialise(ctx: Context, *, deliver_key: Callable[[str], None] | None = None) -> str | None:
    from vault.setup import initialise as run

    return run(ctx, now=ctx.now(), deliver_key=deliver_key)


def trusted_public_key(given: str | None) -> bytes:
    """The audit key a verifying command trusts: ``--public-key``, else the pinned
    ``CALLVAULT_AUDIT_PUBLIC_KEY`` (no database nor key provider needed), else the provider's;
    never a key found in a file or beside the exports."""
    from vault.audit import signed_rows

    if given:
        return signed_rows.parse_public_key(given, what="--public-key")
    pinned = settings().audit_public_key
    if pinned:
        return signed_rows.parse_public_key(pinned, what="CALLVAULT_AUDIT_PUBLIC_KEY")
    ctx = context()
    try:
        return signed_rows.trusted_public_key(ctx)
    finally:
        ctx.close()
