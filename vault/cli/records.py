"""Recordings and the audit log from the command line: ``ingest``, ``audit verify|checkpoint``."""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from vault.authz import Actor
from vault.cli._common import app, audit_app, context
from vault.cli_errors import clean_errors

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

    ctx = context()
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

    ctx = context()
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

    ctx = context()
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
