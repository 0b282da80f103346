"""After a restore from a backup: ``restore reconcile``."""

from __future__ import annotations

import typer

from vault.cli._common import context, restore_app
from vault.cli_errors import clean_errors


@restore_app.command("reconcile")
@clean_errors
def restore_reconcile() -> None:
    """Re-apply every erasure and disposal from the signed records in the object store.

    Exit 0 when every record verified, 1 when one was refused (each is named on stderr).
    """
    from vault.retention import reconcile

    ctx = context()
    try:
        result = reconcile.reconcile(ctx, now=ctx.now())
    finally:
        ctx.close()
    for refused in result.refused:
        typer.echo(f"refused: {refused}", err=True)
    typer.echo(f"restore reconcile: {result.summary()}")
    if not result.ok:
        raise typer.Exit(1)
