"""Fixtures for the vault tests: a real SeaweedFS S3 server and a real PostgreSQL.

Both servers start once per session. When one cannot be had the fixture fails the tests that
need it (``pytest.fail``): CI must never skip them silently.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import minio
import pytest

from tests.support.postgres import postgres_server, temp_database
from tests.support.weed import WeedServer, run_weed
from vault.storage import LocalBlobStore, S3BlobStore


@pytest.fixture(scope="session")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedServer]:
    try:
        cm = run_weed(tmp_path_factory.mktemp("weed"))
        server = cm.__enter__()
    except RuntimeError as exc:
        pytest.fail(f"SeaweedFS could not be started: {exc}", pytrace=False)
    try:
        yield server
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """Base URL (no database) of a real PostgreSQL server."""
    try:
        cm = postgres_server()
        url = cm.__enter__()
    except RuntimeError as exc:
        pytest.fail(f"PostgreSQL could not be had: {exc}", pytrace=False)
    try:
        yield url
    finally:
        cm.__exit__(None, None, None)


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
