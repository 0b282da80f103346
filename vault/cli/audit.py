"""The audit log from the command line: ``audit verify [--tenant]``, ``checkpoint``,
``sequence``."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

import typer

from vault.cli._common import audit_app, context, trusted_public_key
from vault.cli_errors import clean_errors, fail


@audit_app.command("verify")
@clean_errors
def audit_verify(
    tenant: Annotated[
        str | None, typer.Option(help="Verify this tenant's events over HTTP (needs --url).")
    ] = None,
    url: Annotated[str | None, typer.Option(help="The API's base URL, for --tenant.")] = None,
    api_key_file: Annotated[
        Path | None, typer.Option(help="A file holding the API key, for --tenant.")
    ] = None,
    public_key: Annotated[
        str | None,
        typer.Option(help="The trusted Ed25519 key (64 hex digits); else pinned or provider."),
    ] = None,
) -> None:
    """Exit 0 only when the log and every signature over it hold; else name the first bad seq.

    Without --tenant: in the database (every event, the tree, every signed head). With --tenant:
    from outside, over HTTP, with that tenant's auditor key."""
    if tenant is not None:
        _verify_tenant(tenant, url, api_key_file, public_key)
        return
    if url is not None or api_key_file is not None:
        fail("--url and --api-key-file go with --tenant")
    from vault.audit import logcheck, signed_rows

    ctx = context()
    try:
        # Trust only the given, pinned or provider's key, never the copy beside the exports.
        key = (
            signed_rows.parse_public_key(public_key, what="--public-key")
            if public_key
            else signed_rows.trusted_public_key(ctx)
        )
        # A read-only session: on SQLite a long verification does not block writers.
        with ctx.db.reading() as session:
            result = logcheck.verify_all(session, public_key=key)
    finally:
        ctx.close()
    if result.ok:
        typer.echo(
            f"audit log ok: {result.events.checked} events, tree size {result.events.tree_size}, "
            f"{result.heads_checked} signed tree heads, {result.checkpoints_checked} legacy "
            "checkpoints"
        )
        return
    where = "" if result.head_id is None else f" (tree head {result.head_id})"
    if result.checkpoint_id is not None:
        where = f" (checkpoint {result.checkpoint_id})"
    typer.echo(f"audit log BROKEN at seq {result.first_bad_seq}{where}: {result.reason}", err=True)
    raise typer.Exit(1)


def _verify_tenant(
    tenant: str, url: str | None, api_key_file: Path | None, public_key: str | None
) -> None:
    from vault.audit import remote

    if url is None or api_key_file is None:
        fail("--tenant needs --url and --api-key-file")
        return
    try:
        tenant_id = uuid.UUID(tenant)
    except ValueError:
        fail("--tenant must be the tenant's id (a UUID)")
        return
    try:
        api_key = api_key_file.read_text().strip()
    except OSError as exc:
        fail(f"cannot read --api-key-file: {exc.strerror}")
        return
    # An outside auditor needs no database nor key provider, only the pinned key.
    key = trusted_public_key(public_key)
    result = remote.verify_tenant(remote.Client(url, api_key), tenant=tenant_id, public_key=key)
    if result.ok:
        typer.echo(
            f"tenant {tenant_id} ok: {result.included} events included in the signed tree of "
            f"size {result.tree_size} ({result.events - result.included} newer), "
            f"{result.heads} signed tree heads consistent"
        )
        return
    at = "" if result.first_bad_seq is None else f" at seq {result.first_bad_seq}"
    typer.echo(f"tenant {tenant_id} audit BROKEN{at}: {result.reason}", err=True)
    raise typer.Exit(1)


@audit_app.command("checkpoint")
@clean_errors
def audit_checkpoint() -> None:
    """Sequence what is committed, sign a tree head now and export it to the object store."""
    from vault.audit import heads

    ctx = context()
    try:
        head = heads.write_head(ctx, now=ctx.now())
    finally:
        ctx.close()
    if head is None:
        typer.echo("audit tree already covered by the newest signed head; nothing to sign")
        return
    if head.object_key is None:
        typer.echo(
            f"tree head {head.id} signs size {head.tree_size}, but its export to the object "
            "store failed (see the log); it is retried on the next run", err=True,
        )  # fmt: skip
        raise typer.Exit(1)
    typer.echo(f"tree head {head.id} signs size {head.tree_size}: {head.object_key}")


@audit_app.command("sequence")
@clean_errors
def audit_sequence() -> None:
    """Take every committed audit event into the Merkle tree now (the audit-sequence job)."""
    from vault.audit import tree

    ctx = context()
    try:
        taken = tree.sequence(ctx.db, wait=True)
    finally:
        ctx.close()
    typer.echo(f"{taken} audit event(s) sequenced")
