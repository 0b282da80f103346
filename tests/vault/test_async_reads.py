"""Reads on the event loop (``vault.async_reads``, PostgreSQL; issue #12): nothing can write
through them, at most ``CONNECTIONS`` serve one loop however many reads wait, a kept connection
that the server dropped is replaced without an error, a cancelled read leaves no broken
connection behind, and a server that cannot be reached is the 503 ``DatabaseUnavailableError``
without a password in its message (over HTTP: the error table's problem+json)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.support.api import principal_key
from tests.support.net import free_port
from vault.app import create_app
from vault.async_reads import APPLICATION_NAME, CONNECTIONS, AsyncReads
from vault.context import Context
from vault.errors import DatabaseUnavailableError
from vault.setup import initialise


@pytest.fixture
def pg(make_ctx: Callable[..., Context]) -> Context:
    return make_ctx(db="postgres", store="local")


def _admin(ctx: Context) -> psycopg.Connection[Any]:
    url = ctx.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(url, autocommit=True)


def _ours(admin: psycopg.Connection[Any], ctx: Context) -> int:
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND datname = %s",
        (APPLICATION_NAME, ctx.db.engine.url.database),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_nothing_can_be_written_through_them(pg: Context) -> None:
    async def attempt() -> None:
        await pg.db.read_rows(sa.text("CREATE TABLE smuggled (x int)"), {})

    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        asyncio.run(attempt())
    with _admin(pg) as admin:
        assert admin.execute("SELECT to_regclass('smuggled')").fetchone() == (None,)


def test_one_loop_uses_at_most_its_connections_however_many_reads_wait(pg: Context) -> None:
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        with _admin(pg) as admin:
            while not stop.is_set():
                seen.append(_ours(admin, pg))
                stop.wait(0.01)

    async def many() -> list[Any]:
        sleep = sa.text("SELECT pg_sleep(0.05), :i AS i")
        return await asyncio.gather(*(pg.db.read_rows(sleep, {"i": i}) for i in range(20)))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        answers = asyncio.run(many())
    finally:
        stop.set()
        watcher.join()
    assert [rows[0].i for rows in answers] == list(range(20))  # each its own answer, in order
    assert max(seen) == CONNECTIONS  # 20 reads of 50 ms: every slot was used, and no more


def test_a_kept_connection_the_server_dropped_is_replaced_without_an_error(pg: Context) -> None:
    pid = sa.text("SELECT pg_backend_pid() AS pid")

    async def twice(between: Callable[[], None]) -> list[Any]:
        first = await pg.db.read_rows(pid, {})
        between()
        return [first, await pg.db.read_rows(pid, {})]

    def drop_ours() -> None:
        with _admin(pg) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s AND datname = %s",
                (APPLICATION_NAME, pg.db.engine.url.database),
            )

    first, second = asyncio.run(twice(drop_ours))
    assert first[0].pid != second[0].pid  # the kept one was gone: a new one answered


def test_a_cancelled_read_leaves_no_broken_connection(pg: Context) -> None:
    pid = sa.text("SELECT pg_backend_pid() AS pid")

    async def cancel_between() -> tuple[Any, Any]:
        before = await pg.db.read_rows(pid, {})  # one connection, kept: the next read takes it
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pg.db.read_rows(sa.text("SELECT pg_sleep(3)"), {}), 0.2)
        return before, await pg.db.read_rows(pid, {})

    before, after = asyncio.run(cancel_between())
    assert before[0].pid != after[0].pid  # cancelled mid-statement: closed, not used again


def test_an_unreachable_server_is_database_unavailable_without_the_password(pg: Context) -> None:
    url = sa.make_url(f"postgresql+psycopg://vault:s3cret-pw@127.0.0.1:{free_port()}/none")
    reads = AsyncReads(url, pg.db.engine.dialect)
    with pytest.raises(DatabaseUnavailableError) as caught:
        asyncio.run(reads.rows(sa.text("SELECT 1"), {}))
    assert "s3cret-pw" not in str(caught.value)
    assert caught.value.code == "database-unavailable"


def test_the_metadata_get_with_its_database_gone_is_a_503_problem(
    pg: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over HTTP: the event-loop path's outage is the error table's 503 problem, with nothing of
    the connection string in it."""
    admin = initialise(pg, now=pg.now())
    with TestClient(create_app(pg.settings, ctx=pg)) as client:
        client.post("/v1/tenants", json={"name": "acme"},
                    headers={"Authorization": f"Bearer {admin}"})  # fmt: skip
        ingest = {"Authorization": f"Bearer {principal_key(pg, 'ing', 'ingest', ['acme'])}"}
        eng = {"Authorization": f"Bearer {principal_key(pg, 'eng', 'engineer', ['acme'])}"}
        r = client.post(
            "/v1/recordings", params={"tenant": "acme", "purposes": "troubleshooting"},
            content=b"media" * 100, headers={**ingest, "Content-Type": "video/mp4"},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        path = f"/v1/recordings/{r.json()['id']}"
        assert client.get(path, headers=eng).status_code == 200
        gone = sa.make_url(f"postgresql+psycopg://vault:s3cret-pw@127.0.0.1:{free_port()}/none")
        monkeypatch.setattr(pg.db, "_async_reads", AsyncReads(gone, pg.db.engine.dialect))
        r = client.get(path, headers=eng)
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "https://callvault.dev/problems/database-unavailable"
    assert "s3cret-pw" not in r.text and "127.0.0.1" not in r.text
