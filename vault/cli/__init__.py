"""The ``callvault`` command line (typer).

Errors are one line on stderr and exit code 2, never a traceback. Commands that print a secret
(an API key) print it alone on the last line, so scripts can take it with ``tail -n1``.
Each module registers its commands on the shared apps in ``_common``.
"""

from __future__ import annotations

from vault.cli import (  # noqa: F401  (they register their commands)
    admin,
    audit,
    devstack,
    privacy,
    records,
    reports,
    restore,
    server,
)
from vault.cli._common import app


@app.callback()
def main() -> None:
    """callvault: a secure vault for video-call recordings."""


__all__ = ["app"]
