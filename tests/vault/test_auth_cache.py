"""The 1 s cache of verified API keys: bounded in time and size, and a revocation reaches every
API process within it (two real ``callvault serve`` processes on one PostgreSQL)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.support.clock import FakeClock
from tests.support.postgres import temp_database
from tests.support.server import run_serve
from tests.vault.test_access import make_principal, make_tenant
from vault.api.auth_cache import AuthCache
from vault.app import create_app
from vault.authz import Actor
from vault.context import Context
from vault.identity import principals
from vault.models import Role

T0 = datetime(2026, 11, 26, tzinfo=UTC)
ALICE = Actor(id=uuid.uuid4(), name="alice", role=Role.engineer, owner="o")


def test_an_entry_lives_at_most_its_ttl_and_never_more_than_one_second() -> None:
    with pytest.raises(ValueError):
        AuthCache(timedelta(seconds=1.5))
    cache = AuthCache(timedelta(seconds=1))
    cache.put("cvk_a", ALICE, T0)
    assert cache.get("cvk_a", T0 + timedelta(milliseconds=999)) == ALICE
    assert cache.get("cvk_a", T0 + timedelta(seconds=1)) is None
    assert cache.get("cvk_b", T0) is None
    cache.put("cvk_a", ALICE, T0)
    assert cache.get("cvk_a", T0 - timedelta(seconds=2)) is None  # a clock that went back
    off = AuthCache(timedelta(0))
    off.put("cvk_a", ALICE, T0)
    assert off.get("cvk_a", T0) is None


def test_the_cache_is_bounded() -> None:
    cache = AuthCache(timedelta(seconds=1), max_entries=3)
    for i in range(10):
        cache.put(f"cvk_{i}", ALICE, T0)
    assert [cache.get(f"cvk_{i}", T0) is not None for i in range(10)] == [False] * 7 + [True] * 3


def test_a_revoked_key_is_refused_once_its_second_is_over(
    make_ctx: Callable[..., Context], clock: FakeClock
) -> None:
    ctx = make_ctx(db="sqlite", store="local", clock=clock, auth_cache_seconds=1.0)
    make_tenant(ctx, "acme")
    _, key = make_principal(ctx, "alice", "engineer", tenants=["acme"])
    client = TestClient(create_app(ctx.settings, ctx=ctx))
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/grants", headers=auth).status_code == 200
    with ctx.db.transaction() as s:
        principals.revoke_principal(s, actor=Actor.operator(), name="alice", now=ctx.now())
    clock.advance(timedelta(milliseconds=500))
    assert client.get("/v1/grants", headers=auth).status_code == 200  # within its second
    clock.advance(timedelta(milliseconds=500))
    assert client.get("/v1/grants", headers=auth).status_code == 401
    assert client.get("/v1/grants", headers={"Authorization": "Bearer cvk_x"}).status_code == 401


def test_revocation_reaches_two_api_processes_within_one_second(
    pg_url: str, tmp_path: Path
) -> None:
    with contextlib.ExitStack() as stack:
        db_url = stack.enter_context(temp_database(pg_url))
        env = {
            "CALLVAULT_DATABASE_URL": db_url,
            "CALLVAULT_KEY_PROVIDER": f"local:{tmp_path / 'keys'}",
            "CALLVAULT_BLOB_STORE": f"file:{tmp_path / 'data' / 'blobs'}",
        }
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        a = stack.enter_context(run_serve(env, tmp_path / "a"))
        b = stack.enter_context(run_serve(env, tmp_path / "b"))
        admin = {"Authorization": f"Bearer {a.admin_key}"}
        assert httpx.post(f"{a.url}/v1/tenants", json={"name": "acme"}, headers=admin).is_success

        def cli(*args: str) -> str:
            exe = Path(sys.executable).with_name("callvault")
            return subprocess.run(
                [str(exe), *args], cwd=tmp_path, env={**os.environ, **env},
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip

        key = cli("principal", "add", "alice", "--role", "engineer", "--owner",
                  "alice@acme.example", "--tenant", "acme").strip().splitlines()[-1]  # fmt: skip
        auth = {"Authorization": f"Bearer {key}"}
        for server in (a, b):  # both processes now hold alice in their cache
            assert httpx.get(f"{server.url}/v1/grants", headers=auth).status_code == 200
        cli("principal", "revoke", "alice")
        time.sleep(1.0)  # the bound: no process may still accept the key after it
        for server in (a, b):
            r = httpx.get(f"{server.url}/v1/grants", headers=auth)
            assert r.status_code == 401, server.url


def test_serve_with_two_workers_answers_and_revocation_reaches_both(
    tmp_path: Path,
) -> None:
    """``serve --workers 2``: each worker builds its own context from the environment; a key
    revoked through the CLI is refused by every worker once its second is over."""
    env = {
        "CALLVAULT_DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'callvault.db'}",
        "CALLVAULT_KEY_PROVIDER": f"local:{tmp_path / 'keys'}",
        "CALLVAULT_BLOB_STORE": f"file:{tmp_path / 'data' / 'blobs'}",
    }
    with run_serve(env, tmp_path, args=["--workers", "2"]) as server:
        admin = {"Authorization": f"Bearer {server.admin_key}"}
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        with httpx.Client() as client:  # new connections spread over both workers
            for _ in range(8):
                assert client.get(f"{server.url}/v1/recordings", headers=admin).status_code == 200
        exe = Path(sys.executable).with_name("callvault")
        subprocess.run(
            [str(exe), "principal", "revoke", "bootstrap-admin"], cwd=tmp_path,
            env={**os.environ, **env}, capture_output=True, check=True,
        )  # fmt: skip
        time.sleep(1.0)
        for _ in range(8):
            assert httpx.get(f"{server.url}/v1/recordings", headers=admin).status_code == 401

