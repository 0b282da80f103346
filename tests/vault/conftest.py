"""Fixtures for the vault tests: a real SeaweedFS S3 server and a real PostgreSQL.

Both servers start once per session. When one cannot be had the fixture fails the tests that
need it (``pytest.fail``): CI must never skip them silently.
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import minio
import pytest

from tests.support.clock import FakeClock
from tests.support.postgres import temp_database
from tests.support.txguard import guard
from tests.support.weed import WeedServer
from vault.config import Settings
from vault.context import Context, build_context
from vault.db import migrate
from vault.storage import LocalBlobStore, S3BlobStore


@pytest.fixture
def pg_database(pg_url: str) -> Iterator[str]:
    """URL of a fresh database, dropped after the test."""
    with temp_database(pg_url) as url:
        yield url


@pytest.fixture
def s3_admin(weed: WeedServer) -> minio.Minio:
    """A plain minio client with the server's credentials, to look behind the store's back."""
    return weed.client()


def new_bucket_name() -> str:
    return f"cv-test-{secrets.token_hex(6)}"


@pytest.fixture
def s3_bucket(s3_admin: minio.Minio) -> str:
    """A fresh bucket with Object Lock (and so versioning). Never removed: objects under
    COMPLIANCE retention could not be, and the server's directory is temporary anyway."""
    name = new_bucket_name()
    s3_admin.make_bucket(name, object_lock=True)
    return name


@pytest.fixture
def s3_store(weed: WeedServer, s3_bucket: str) -> S3BlobStore:
    return S3BlobStore.from_settings(
        endpoint=weed.endpoint,
        access_key=weed.access_key,
        secret_key=weed.secret_key,
        bucket=s3_bucket,
        secure=False,
    )


@pytest.fixture
def local_store(tmp_path: Path) -> LocalBlobStore:
    store = LocalBlobStore(tmp_path / "blobs")
    store.ensure_bucket()
    return store


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> LocalBlobStore | S3BlobStore:
    """Each blob store in turn: the contract tests run against both."""
    return request.getfixturevalue(f"{request.param}_store")


# --- a whole vault context on chosen backends ---------------------------------------------------

BACKENDS = {"sqlite-local": ("sqlite", "local"), "postgres-s3": ("postgres", "s3")}


@pytest.fixture
def make_ctx(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Context]]:
    """Build a migrated Context on (sqlite|postgres) x (local|s3) with a local keyring.

    Each call gets its own database (dropped afterwards), bucket or directory, and keyring.
    """
    stack = contextlib.ExitStack()

    def make(
        *,
        db: str = "sqlite",
        store: str = "local",
        clock: Callable[[], datetime] | None = None,
        policy_file: Path | None = None,
        **settings_kwargs: Any,
    ) -> Context:
        base = Path(tempfile.mkdtemp(dir=tmp_path))
        if db == "sqlite":
            db_url = f"sqlite:///{base / 'data' / 'callvault.db'}"
        else:
            pg_url = request.getfixturevalue("pg_url")
            db_url = stack.enter_context(temp_database(pg_url))
        extra: dict[str, Any] = {}
        if store == "local":
            blob = f"file:{base / 'data' / 'blobs'}"
        else:
            weed: WeedServer = request.getfixturevalue("weed")
            bucket = new_bucket_name()
            weed.client().make_bucket(bucket, object_lock=True)
            blob = f"s3://{bucket}"
            extra = dict(
                s3_endpoint=weed.endpoint,
                s3_access_key=weed.access_key,
                s3_secret_key=weed.secret_key,
            )
        # In-process tests revoke and ask again at once on a frozen clock; the 1 s cache of
        # verified keys has its own tests (test_auth_cache.py, two real API processes).
        settings_kwargs.setdefault("auth_cache_seconds", 0.0)
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=db_url,
            blob_store=blob,
            key_provider=f"local:{base / 'keys'}",
            policy_file=policy_file,
            **extra,
            **settings_kwargs,
        )
        ctx = build_context(settings, clock=clock, create_keys=True)
        stack.callback(ctx.close)
        migrate(ctx.db.engine)
        ctx.store.ensure_bucket()
        # No store or key-provider call may run while a DB transaction is open, in any test.
        violations = guard(ctx)
        stack.callback(_no_violations, violations)
        return ctx

    yield make
    stack.close()


def _no_violations(violations: list[str]) -> None:
    assert not violations, "\n\n".join(violations)


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(db, store): SQLite with a local directory, and PostgreSQL with SeaweedFS."""
    return BACKENDS[request.param]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ctx(make_ctx: Callable[..., Context], backend: tuple[str, str], clock: FakeClock) -> Context:
    db, store = backend
    return make_ctx(db=db, store=store, clock=clock)
