"""Fixtures for the worker, job and KEK-lifecycle tests (helpers live in ``helpers.py``).

The vault fixtures (``make_ctx``, ``ctx`` on sqlite+local and postgres+s3, ...) are re-exported
from ``tests/vault/conftest.py``. ``clock`` starts at the real current time here: KEK versions
carry real creation times (the keyring's, Transit's), and subprocess workers run on the real
clock.
"""

from __future__ import annotations

import pytest

from tests.support.clock import FakeClock
from tests.vault.conftest import (  # noqa: F401
    backend,
    ctx,
    local_store,
    make_ctx,
    pg_database,
    s3_admin,
    s3_bucket,
    s3_store,
)
from vault.models import utcnow


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(utcnow().replace(microsecond=0))
