"""A real OpenBao dev server with Transit for tests: :mod:`vault.devstack.bao`, the one
``callvault dev-stack`` runs.

``run_bao(tmpdir)`` yields ``(url, token)``. It raises ``BaoStartError`` when the binary is
missing or the server does not come up; fixtures turn that into a test failure, never a skip
(CI must not silently lose the Transit tests).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from vault.devstack import bao
from vault.devstack.bao import BaoStartError, find_bao

__all__ = ["BaoStartError", "find_bao", "run_bao"]


@contextlib.contextmanager
def run_bao(tmpdir: Path | str) -> Iterator[tuple[str, str]]:
    """Run ``bao server -dev`` on a free loopback port; yields ``(url, token)``."""
    with bao.run_bao(tmpdir) as server:
        yield server.url, server.token
