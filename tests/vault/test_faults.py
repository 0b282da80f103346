"""Faults on the real components, each on servers of its own (never the session's shared ones).

For every fault the client gets a clear error (a domain error: 503 over HTTP) or the right
answer, never a wrong byte; and after recovery and one sweep no pending row is older than the
threshold, no object or multipart upload is orphaned, every committed recording decrypts, and
the audit chain verifies.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import select

from crypto import streaming
from crypto.keys.transit import TransitKeyProvider
from tests.support.bao import run_bao
from tests.support.clock import FakeClock
from tests.support.postgres import find_pg_bin, throwaway_cluster, to_libpq
from tests.support.weed import run_weed
from vault import audit, kek
from vault import pool as pool_module
from vault.access import grants
from vault.authz import Actor
from vault.config import Settings
from vault.context import Context, build_context
from vault.db import migrate
from vault.errors import (
    DatabaseUnavailableError,
    KeyProviderUnavailableError,
    StoreUnavailableError,
)
from vault.identity.tenants import create_tenant
from vault.keys import Keys
from vault.models import Recording, RecordingStatus, utcnow
from vault.recordings import playback
from vault.recordings.ingest import ingest
from vault.recordings.sweep import sweep_orphans
from vault.retention import disposal
from vault.setup import initialise

S = RecordingStatus
MIB = 1 << 20
THRESHOLD = timedelta(hours=1)


def _context(tmp: Path, *, db: str, store: str = "local", **extra: Any) -> Context:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=db, blob_store=store if store != "local" else f"file:{tmp / 'data' / 'blobs'}",
        key_provider=f"local:{tmp / 'keys'}", **extra,
    )  # fmt: skip
    ctx = build_context(settings, clock=FakeClock(utcnow()), create_keys=True)
    migrate(ctx.db.engine)
    initialise(ctx, now=ctx.now())
    with ctx.db.transaction() as s:
        create_tenant(s, actor=Actor.operator(), name="acme", region=None, now=ctx.now())
    return ctx


def _ingest(ctx: Context, chunks: Any) -> Recording:
    return ingest(
        ctx, actor=Actor.operator(), tenant="acme", purposes=["troubleshooting"], call_id="c",
        recorded_at=None, content_type="video/mp4", chunks=chunks,
    )  # fmt: skip


def _grant(ctx: Context, rec: Recording) -> tuple[Actor, uuid.UUID]:
    reader = Actor(id=uuid.uuid4(), name="reader", role="engineer", owner="r@x",  # type: ignore[arg-type]
                   tenant_ids=frozenset({rec.tenant_id}))  # fmt: skip
    from vault.models import Principal

    now = ctx.now()
    with ctx.db.transaction() as s:
        s.add(Principal(id=reader.id, name="reader", role="engineer", owner_ref="r@x",
                        created_at=now))  # fmt: skip
        s.flush()
        gid = grants.issue_grant(
            s, principal_id=reader.id, owner="r@x", purpose="troubleshooting",
            recording_ids=[rec.id], not_before=now, expires_at=now + timedelta(hours=1),
        ).id  # fmt: skip
    return reader, gid


def _decrypts(ctx: Context, rec: Recording, data: bytes) -> None:
    assert rec.wrapped_dek and rec.ciphertext_size is not None
    dek = ctx.keys.unwrap_dek(rec.wrapped_dek, tenant_id=rec.tenant_id, recording_id=rec.id)

    def read_at(offset: int, length: int) -> bytes:
        return ctx.store.read_range(rec.object_key, version_id=rec.version_id, offset=offset,
                                    length=length)  # fmt: skip

    got = b"".join(streaming.decrypt_range(read_at, dek=dek, recording_id=rec.id,
                                           ciphertext_size=rec.ciphertext_size, start=0,
                                           end=len(data)))  # fmt: skip
    assert got == data


def _after_recovery(ctx: Context, originals: dict[uuid.UUID, bytes]) -> None:
    """One sweep past the threshold, then the invariants of the module docstring."""
    later = ctx.now() + THRESHOLD + timedelta(minutes=1)
    sweep_orphans(ctx, older_than=THRESHOLD, now=later)
    with ctx.db.session() as s:
        rows = list(s.exec(select(Recording)).all())
        assert audit.verify(s).ok
    assert not [r for r in rows if r.status == S.pending], "a pending row outlived the sweep"
    for rec in rows:
        if rec.status == S.stored:
            _decrypts(ctx, rec, originals[rec.id])
        elif rec.status == S.failed:
            assert not ctx.store.exists(rec.object_key)  # no orphaned object
    assert ctx.store.incomplete_uploads() == []


# --- the key provider -----------------------------------------------------------------------------


@pytest.fixture
def transit(tmp_path: Path) -> Iterator[tuple[Context, Callable[[bool], None]]]:
    """A context on a Transit of its own; ``pause(True)`` stops it (SIGSTOP: requests hang into
    their timeout, state survives), ``pause(False)`` resumes it."""
    with run_bao(tmp_path / "bao") as (url, token):
        ctx = _context(tmp_path, db=f"sqlite:///{tmp_path / 'data' / 'c.db'}")
        ctx.keys = Keys(TransitKeyProvider(url, token, key_prefix="f" + uuid.uuid4().hex[:8],
                                           timeout=1.5))  # fmt: skip
        initialise(ctx, now=ctx.now())
        pid = _bao_pid(url)

        def pause(stopped: bool) -> None:
            os.kill(pid, signal.SIGSTOP if stopped else signal.SIGCONT)

        try:
            yield ctx, pause
        finally:
            pause(False)
            ctx.close()


def _bao_pid(url: str) -> int:
    port = url.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"bao" in cmd and f"127.0.0.1:{port}".encode() in cmd:
                return int(entry.name)
    raise AssertionError("bao process not found")


def test_openbao_stopped_during_ingest_and_playback(
    transit: tuple[Context, Callable[[bool], None]],
) -> None:
    ctx, pause = transit
    data = os.urandom(3 * MIB)
    kept = _ingest(ctx, [data])
    reader, gid = _grant(ctx, kept)

    pause(True)
    try:
        with pytest.raises(KeyProviderUnavailableError):  # the wrap cannot be made: 503
            _ingest(ctx, [b"never stored"])
        with pytest.raises(KeyProviderUnavailableError):  # the DEK cannot be opened: 503
            playback.open_read(ctx, actor=reader, recording_id=kept.id, grant_id=gid,
                               range_header=None, now=ctx.now())  # fmt: skip
    finally:
        pause(False)
    # A read opened before the outage needs no key provider while it streams.
    plan = playback.open_read(ctx, actor=reader, recording_id=kept.id, grant_id=gid,
                              range_header=None, now=ctx.now())  # fmt: skip
    chunks = playback.PlaintextStream(ctx, plan)
    first = next(chunks)
    pause(True)
    try:
        assert first + b"".join(chunks) == data
    finally:
        pause(False)
    _after_recovery(ctx, {kept.id: data})


# --- the database ---------------------------------------------------------------------------------


class Cluster:
    """Stop and start the throwaway cluster in place (same data, port and socket directory)."""

    def __init__(self, base: str) -> None:
        import psycopg

        with psycopg.connect(to_libpq(base, "postgres"), autocommit=True) as conn:
            self.datadir = str(conn.execute("SHOW data_directory").fetchone()[0])  # type: ignore[index]
            self.port = str(conn.execute("SHOW port").fetchone()[0])  # type: ignore[index]
            conn.execute("CREATE DATABASE vault")
        self.url = f"{base}/vault"

    def _pg_ctl(self, *args: str) -> None:
        pg_ctl = str(Path(find_pg_bin("initdb")).with_name("pg_ctl"))
        options = (f"-p {self.port} -k {Path(self.datadir).parent} "
                   "-c listen_addresses=127.0.0.1 -c fsync=off")  # fmt: skip
        cmd = [pg_ctl, "-D", self.datadir, "-o", options, "-w", "-t", "60",
               "-l", str(Path(self.datadir).parent / "server.log"), *args]  # fmt: skip
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=90)

    def stop(self) -> None:
        self._pg_ctl("-m", "immediate", "stop")  # as a crash would: no clean shutdown

    def start(self) -> None:
        self._pg_ctl("start")


def test_postgres_restarted_during_ingest_and_purge(tmp_path: Path) -> None:
    with throwaway_cluster() as base:
        pg = Cluster(base)
        ctx = _context(tmp_path, db=pg.url)
        data = os.urandom(2 * MIB)
        kept = _ingest(ctx, [data])

        def body() -> Iterator[bytes]:
            yield b"begin" * 1000
            pg.stop()  # the pending row is committed; its pending -> stored cannot be
            yield b"rest of the body" * 1000

        with pytest.raises(DatabaseUnavailableError):
            _ingest(ctx, body())
        pg.start()
        second = _ingest(ctx, [data])  # the pool reconnects: the next ingest goes through

        # Purge, with the database gone between listing the candidates and claiming them.
        ctx.clock.advance(days=40)  # type: ignore[attr-defined]
        with pytest.raises(DatabaseUnavailableError):
            disposal.dispose(ctx, now=ctx.now(), after_listing=lambda _ids: pg.stop())
        pg.start()
        result = disposal.dispose(ctx, now=ctx.now())
        assert result.disposed == 2
        with ctx.db.session() as s:
            statuses = {r.id: r.status for r in s.exec(select(Recording)).all()}
        assert statuses[kept.id] == statuses[second.id] == S.disposed
        _after_recovery(ctx, {})
        ctx.close()


def test_a_pool_idle_across_a_postgres_restart_is_pinged_not_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ping on every checkout (issue #12), but a connection idle past the threshold is
    pinged first: a restart while the pool idled costs no request. Under the threshold a stale
    connection fails one request (503), and the pool is then renewed as a whole."""
    with throwaway_cluster() as base:
        pg = Cluster(base)
        ctx = _context(tmp_path, db=pg.url)
        _ingest(ctx, [b"a" * 1000])
        pg.stop()
        pg.start()
        monkeypatch.setattr(pool_module, "PING_AFTER_IDLE_SECONDS", 0.0)
        _ingest(ctx, [b"b" * 1000])  # pinged, replaced, no error
        pg.stop()
        pg.start()
        monkeypatch.setattr(pool_module, "PING_AFTER_IDLE_SECONDS", 3600.0)
        with pytest.raises(DatabaseUnavailableError), ctx.db.reading() as s:
            s.exec(select(Recording)).all()
        with ctx.db.reading() as s:
            assert len(s.exec(select(Recording)).all()) == 2

        # The event loop's reads (vault.async_reads): a kept connection outlives a restart
        # unnoticed (replaced on its next use); a server that is down is the 503.
        count = sa.text("SELECT count(*) AS n FROM recording")

        async def reads() -> int:
            await ctx.db.read_rows(count, {})
            await asyncio.to_thread(lambda: (pg.stop(), pg.start()))
            rows = await ctx.db.read_rows(count, {})
            await asyncio.to_thread(pg.stop)
            try:
                with pytest.raises(DatabaseUnavailableError):
                    await ctx.db.read_rows(count, {})
            finally:
                await asyncio.to_thread(pg.start)
            return int(rows[0].n)

        assert asyncio.run(reads()) == 2
        ctx.close()


# --- the object store -----------------------------------------------------------------------------


def test_seaweedfs_killed_mid_playback_cuts_the_stream_without_a_wrong_byte(
    tmp_path: Path,
) -> None:
    with run_weed(tmp_path / "weed") as weed:
        weed.client().make_bucket("faults", object_lock=True)
        ctx = _context(
            tmp_path, db=f"sqlite:///{tmp_path / 'data' / 'c.db'}", store="s3://faults",
            s3_endpoint=weed.endpoint, s3_access_key=weed.access_key,
            s3_secret_key=weed.secret_key,
        )  # fmt: skip
        data = os.urandom(24 * MIB)
        rec = _ingest(ctx, [data[i : i + MIB] for i in range(0, len(data), MIB)])
        reader, gid = _grant(ctx, rec)
        plan = playback.open_read(ctx, actor=reader, recording_id=rec.id, grant_id=gid,
                                  range_header=None, now=ctx.now())  # fmt: skip
        got = bytearray()
        with pytest.raises(StoreUnavailableError):
            for i, chunk in enumerate(playback.PlaintextStream(ctx, plan)):
                got += chunk
                if i == 0:
                    os.kill(weed.pid, signal.SIGKILL)
        assert 0 < len(got) < len(data)
        assert bytes(got) == data[: len(got)]  # a cut stream, never a wrong byte
        ctx.close()


# --- reads and the KEK ----------------------------------------------------------------------------


def test_kek_rotated_and_retired_while_a_long_read_streams(tmp_path: Path) -> None:
    ctx = _context(tmp_path, db=f"sqlite:///{tmp_path / 'data' / 'c.db'}")
    data = os.urandom(6 * MIB)
    rec = _ingest(ctx, [data])
    reader, gid = _grant(ctx, rec)
    plan = playback.open_read(ctx, actor=reader, recording_id=rec.id, grant_id=gid,
                              range_header=None, now=ctx.now())  # fmt: skip
    chunks = playback.PlaintextStream(ctx, plan)
    first = next(chunks)
    done = threading.Event()

    def cycle() -> None:
        result = kek.kek_cycle(ctx, now=ctx.now(), force=True, holder="faults")
        assert result.rotated_to == 2 and result.retired == [1]
        done.set()

    worker = threading.Thread(target=cycle)
    worker.start()
    worker.join(60)
    assert done.is_set()
    assert first + b"".join(chunks) == data  # the stream completes, correct
    with ctx.db.session() as s:
        row = s.get(Recording, rec.id)
        assert row is not None and row.kek_version == 2
    _after_recovery(ctx, {rec.id: data})
    ctx.close()
