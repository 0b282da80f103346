"""``callvault report evidence`` (as the local operator, over every tenant or one) and
``callvault report verify FILE`` (against the given, pinned or provider's key: never a key found
in the file or beside the exports)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from vault.authz import Actor
from vault.cli._common import app, context, trusted_public_key
from vault.cli_errors import clean_errors, fail

report_app = typer.Typer(help="Reports for the privacy office.", no_args_is_help=True)
app.add_typer(report_app, name="report")

FORMATS = ("json", "html", "pdf")


def _when(text: str, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option} must be an ISO 8601 time with a timezone, e.g. 2026-01-01T00:00:00Z")
        raise
    if value.tzinfo is None:
        fail(f"{option} needs a timezone, e.g. 2026-01-01T00:00:00Z")
    return value


@report_app.command("evidence")
@clean_errors
def report_evidence(
    start: Annotated[str, typer.Option("--from", help="Period start (ISO 8601, with zone).")],
    end: Annotated[str, typer.Option("--to", help="Period end, exclusive.")],
    tenant: Annotated[
        str | None, typer.Option(help="One tenant (name or id); else every tenant.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="json (signed) | html | pdf")] = "json",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here (json: else stdout).")
    ] = None,
) -> None:
    """Compute, sign and write the evidence report for the period."""
    from vault.reports import evidence, render_html, render_pdf, service

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}")
    if fmt == "pdf" and output is None:
        fail("--format pdf needs -o FILE")
    period = _when(start, "--from"), _when(end, "--to")
    ctx = context()
    try:
        body, signed = service.issue(
            ctx, actor=Actor.operator(), tenant=tenant, start=period[0], end=period[1],
            now=ctx.now(), fmt=fmt,
        )  # fmt: skip
    finally:
        ctx.close()
    sha256 = evidence.statement_sha256(signed)
    if fmt == "json":
        import json

        data = (json.dumps(signed, indent=1) + "\n").encode()
    elif fmt == "html":
        data = render_html.render(body, sha256=sha256).encode()
    else:
        data = render_pdf.render(body, sha256=sha256)
    if output is None:
        typer.echo(data.decode(), nl=False)
        return
    output.write_bytes(data)
    typer.echo(f"evidence report ({fmt}, statement sha256 {sha256}) written to {output}")


@report_app.command("verify")
@clean_errors
def report_verify(
    file: Annotated[Path, typer.Argument(help="A report file written with --format json.")],
    public_key: Annotated[
        str | None,
        typer.Option(help="The trusted Ed25519 key (64 hex digits); else pinned or provider."),
    ] = None,
) -> None:
    """Exit 0 only when the file is an evidence report signed by the trusted audit key."""
    from vault.audit import signing
    from vault.reports import evidence

    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}")
        return
    key = trusted_public_key(public_key)
    try:
        doc = evidence.verify(key, text)
    except signing.SignedDocumentError as exc:
        typer.echo(f"evidence report REJECTED: {exc.reason}", err=True)
        raise typer.Exit(1) from None
    scope = "all tenants" if doc["scope"]["all_tenants"] else f"tenant {doc['scope']['tenant']}"
    typer.echo(
        f"evidence report ok: {doc['period']['from']} to {doc['period']['to']}, {scope}, "
        f"generated {doc['generated_at']}"
    )
