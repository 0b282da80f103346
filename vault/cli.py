"""The ``callvault`` command line (typer)."""

from __future__ import annotations

import typer

from vault import __version__

app = typer.Typer(help="callvault: a secure vault for video-call recordings.", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"callvault {__version__}")


@app.callback()
def main() -> None:
    """callvault: a secure vault for video-call recordings."""
