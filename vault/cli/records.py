"""Recordings from the command line: ``ingest`` (the audit commands are in :mod:`.audit`)."""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from vault.authz import Actor
from vault.cli._common import app, context
from vault.cli_errors import clean_errors

# --- recordings -------------------------------------------------------------------------


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
