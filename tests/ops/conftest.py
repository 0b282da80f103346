"""Fixtures for the operations tests: the vault ones (``make_ctx``, ``backend`` on sqlite+local
and postgres+s3, ...), re-exported from ``tests/vault/conftest.py`` as ``tests/jobs`` does."""

from __future__ import annotations

from tests.vault.conftest import (  # noqa: F401
    backend,
    local_store,
    make_ctx,
    pg_database,
    s3_admin,
    s3_bucket,
    s3_store,
)
