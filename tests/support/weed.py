"""A real SeaweedFS S3 server (``weed mini``) for tests: :mod:`vault.devstack.weed`, the one
``callvault dev-stack`` runs.

``run_weed(tmpdir)`` yields a ``WeedServer`` (endpoint, credentials, ``client()``); it raises
``WeedStartError`` (a ``RuntimeError``) when the server cannot start, which fixtures turn into a
failure, never a skip.
"""

from __future__ import annotations

from vault.devstack.weed import WeedServer, WeedStartError, find_weed, run_weed

__all__ = ["WeedServer", "WeedStartError", "find_weed", "run_weed"]
