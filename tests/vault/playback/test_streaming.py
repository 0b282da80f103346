"""Playback while it streams (issue #12): a long read is one streaming GET; the grant is
re-checked within the bound (revocation, expiry, an ended purpose, disposal), in process and
against a real server."""

from __future__ import annotations

import gc
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from crypto import streaming
from tests.support.api import principal_key
from tests.support.server import run_serve
from tests.vault.playback.conftest import (
    FIRST,
    PROBLEM,
    SECOND_SEGMENT_BYTE,
    SEG,
    Env,
    MiB,
    _caused_by,
    _consume,
    _flipping,
    _problem,
)
from vault.access import grants
from vault.authz import Actor
from vault.context import Context
from vault.errors import (
    IntegrityError,
    PermissionDeniedError,
    StoreUnavailableError,
)
from vault.identity import authentication
from vault.identity.tenants import create_tenant
from vault.models import Grant, Recording, RecordingStatus
from vault.recordings import metadata as recordings
from vault.recordings import playback, windows
from vault.recordings.ingest import ingest as ingest_recording
from vault.setup import initialise

# --- a long read is one streaming GET (issue #12) -------------------------------------------------


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every read of the clip streams (in production only reads over STREAM_FROM do)."""
    monkeypatch.setattr(windows, "STREAM_FROM", 0)


@pytest.mark.usefixtures("streamed")
def test_an_abandoned_stream_stops_its_get(env: Env) -> None:
    """A client that goes away mid-download: once the response's iterator is dropped, its
    streaming GET's helper thread ends (no thread nor store connection is left behind)."""
    rid = env.ingest(bytes(12 * SEG))  # longer than the read-ahead: the GET is still running
    gid = env.grant(rid=rid)
    plan = playback.open_read(env.ctx, actor=env.actors["eng"], recording_id=rid,
                              grant_id=gid, range_header=None, now=env.ctx.now())  # fmt: skip
    chunks = playback.PlaintextStream(env.ctx, plan)
    assert next(chunks) == bytes(FIRST)
    helpers = [t for t in threading.enumerate() if t.name == "callvault-stream"]
    assert helpers and all(t.is_alive() for t in helpers)
    del chunks, plan  # what Starlette does with the body of a response whose client is gone
    gc.collect()
    for t in helpers:
        t.join(timeout=5)
    assert not any(t.is_alive() for t in helpers)


@pytest.mark.usefixtures("streamed")
def test_a_store_that_cannot_answer_a_streamed_read_is_a_503_problem(env: Env) -> None:
    """The streaming GET's failure reaches the client as the error table's 503, before any
    header or byte of media (and the read's event, already committed, stays)."""
    gid = env.grant()
    tried: list[str] = []

    def down() -> None:
        tried.append(threading.current_thread().name)
        raise StoreUnavailableError("connection refused")

    env.store.before_read = down
    r = env.get(grant=gid)
    _problem(r, 503, "store-unavailable")
    assert tried == ["callvault-stream"]  # the streaming GET failed, and nothing else was read
    assert env.status() == RecordingStatus.stored  # an outage is not an integrity failure


@pytest.mark.usefixtures("streamed")
def test_a_streamed_read_is_one_get_of_the_covering_segments(env: Env) -> None:
    gid = env.grant()
    r = env.get(grant=gid)
    assert r.status_code == 200 and r.content == env.clip
    with env.ctx.db.session() as s:
        rec = s.get(Recording, env.rid)
        assert rec is not None and rec.ciphertext_size is not None
    # One GET from the header to the end (plus the end-of-stream probe byte), nothing else.
    assert env.store.opened == [(0, rec.ciphertext_size + 1)] and env.store.calls == []
    env.store.opened.clear()
    a = FIRST + SEG + 5
    r = env.get(grant=gid, Range=f"bytes={a}-")
    assert r.status_code == 206 and r.content == env.clip[a:]
    assert env.store.opened == [
        (streaming.segment_offset(2), rec.ciphertext_size + 1 - streaming.segment_offset(2))
    ]


# --- concurrency: the grant is re-checked while streaming ----------------------------------------


def test_revoke_ends_a_running_stream(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    gid = env.grant()
    checks: list[tuple[float, bool]] = []
    real = grants.still_valid

    def spy(session: Any, **kw: Any) -> bool:
        started = time.monotonic()  # a check that *starts* after the revocation must fail
        ok = real(session, **kw)
        checks.append((started, ok))
        return ok

    monkeypatch.setattr(grants, "still_valid", spy)
    revoked_at: list[float] = []
    received_at_revoke: list[int] = []

    def on_chunk(total: int) -> None:
        if not revoked_at:
            env.revoke(gid)  # committed in its own transaction, mid-stream
            revoked_at.append(time.monotonic())
            received_at_revoke.append(total)
        env.clock.advance(playback.RECHECK_EVERY)  # time passes while the client reads

    with env.client.stream("GET", env.url(), params={"grant": str(gid)}, headers=env.h("eng")) as r:
        assert r.status_code == 200
        got, err = _consume(r, on_chunk)
    assert _caused_by(err, PermissionDeniedError), err
    assert got == env.clip[: len(got)] and len(got) < len(env.clip)
    # Server side: the stream ended on a failed check, and no check that began after the
    # revocation had committed let a segment through...
    assert checks[-1][1] is False
    assert not any(ok for t, ok in checks if t > revoked_at[0])
    # ...and the client got at most the segments already in flight through the ASGI stack.
    assert len(got) - received_at_revoke[0] <= 2 * SEG
    _problem(env.get(grant=gid), 403, "forbidden")  # and the next request is refused


@pytest.mark.parametrize("streamed", [False, True], ids=["windows", "one-get"])
def test_revoke_stops_the_service_stream_within_the_recheck_bound(
    env: Env, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    """The grant's answer may be at most RECHECK_EVERY old when a segment leaves: with time
    frozen the next segment still goes, and the first one after the bound is refused (the
    read-ahead, windows or one streaming GET, changes nothing)."""
    if streamed:
        monkeypatch.setattr(windows, "STREAM_FROM", 0)
    gid = env.grant()
    _, chunks = _opened(env, gid)
    env.revoke(gid)
    assert next(chunks) == env.clip[FIRST : FIRST + SEG]  # the answer is still fresh
    env.clock.advance(playback.RECHECK_EVERY)
    with pytest.raises(PermissionDeniedError):
        next(chunks)


@pytest.mark.parametrize("per_segment_ms", [10, 40, 99, 100, 250])
def test_a_revocation_stops_the_stream_within_100_ms_or_one_segment_whichever_is_later(
    env: Env, per_segment_ms: int
) -> None:
    """Segments leaving every ``per_segment_ms`` (the clock is the test's): after a revocation
    the stream delivers at most 100 ms worth of segments plus the one in flight, on both
    databases; when a segment takes 100 ms or more, not one more segment."""
    step = timedelta(milliseconds=per_segment_ms)
    rid = env.ingest(bytes(14 * SEG))  # long enough for 100 ms of 10 ms segments
    gid = env.grant(rid=rid)
    plan = playback.open_read(env.ctx, actor=env.actors["eng"], recording_id=rid,
                              grant_id=gid, range_header=None, now=env.ctx.now())  # fmt: skip
    chunks = playback.PlaintextStream(env.ctx, plan)
    env.clock.advance(step)
    next(chunks)
    env.revoke(gid)
    after = 0
    with pytest.raises(PermissionDeniedError):
        while True:
            env.clock.advance(step)
            next(chunks)
            after += 1
    bound = math.ceil(playback.RECHECK_EVERY / step)
    assert after <= max(1, bound)
    if per_segment_ms >= 100:
        assert after == 0


def _opened(env: Env, gid: uuid.UUID) -> tuple[playback.ReadPlan, playback.PlaintextStream]:
    """The whole clip's read opened under ``gid``, its first segment already taken."""
    plan = playback.open_read(env.ctx, actor=env.actors["eng"], recording_id=env.rid,
                              grant_id=gid, range_header=None, now=env.ctx.now())  # fmt: skip
    chunks = playback.PlaintextStream(env.ctx, plan)
    assert next(chunks) == env.clip[:FIRST]
    return plan, chunks


def _until_at_hand(reader: windows.WindowReader) -> None:
    deadline = time.monotonic() + 10
    while not reader.ready():
        assert time.monotonic() < deadline, "the read-ahead never delivered the next segment"
        time.sleep(0.002)


@pytest.mark.parametrize("streamed", [False, True], ids=["windows", "one-get"])
def test_a_segment_at_hand_needs_neither_the_store_nor_the_database(
    env: Env, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    """What the response body decrypts on the event loop (issue #12): ``next_at_hand`` gives
    the next segment only once its ciphertext has arrived and while no re-check is due; it
    never waits for the store nor asks the database, and a due re-check is left to ``next()``,
    which still stops a revoked grant's stream."""
    if streamed:
        monkeypatch.setattr(windows, "STREAM_FROM", 0)
    gid = env.grant()
    plan, chunks = _opened(env, gid)
    asked: list[uuid.UUID] = []
    still_valid = playback._still_valid

    def spy(ctx: Context, p: playback.ReadPlan) -> bool:
        asked.append(p.grant_id)
        return still_valid(ctx, p)

    monkeypatch.setattr(playback, "_still_valid", spy)
    _until_at_hand(plan.reader)
    reads = (list(env.store.calls), list(env.store.opened))
    assert chunks.next_at_hand() == env.clip[FIRST : FIRST + SEG]
    assert asked == [] and (env.store.calls, env.store.opened) == reads
    env.revoke(gid)
    env.clock.advance(playback.RECHECK_EVERY)
    _until_at_hand(plan.reader)
    assert chunks.next_at_hand() is None  # at hand, but the grant's answer is due
    with pytest.raises(PermissionDeniedError):
        next(chunks)
    assert asked == [gid]
    chunks.close()


def test_a_finished_range_ends_at_hand(env: Env) -> None:
    """Once every byte of the range went out, the body learns the end without a worker thread
    (``next_at_hand`` raises StopIteration) and closing needs no wait."""
    gid = env.grant()
    plan = playback.open_read(env.ctx, actor=env.actors["eng"], recording_id=env.rid,
                              grant_id=gid, range_header=f"bytes=10-{FIRST + 99}",
                              now=env.ctx.now())  # fmt: skip
    chunks = playback.PlaintextStream(env.ctx, plan)
    assert not chunks.finished
    got = next(chunks)
    _until_at_hand(plan.reader)
    got += chunks.next_at_hand() or b""
    assert got == env.clip[10 : FIRST + 100] and chunks.finished
    with pytest.raises(StopIteration):
        chunks.next_at_hand()
    chunks.close()


@pytest.mark.parametrize("streamed", [False, True], ids=["windows", "one-get"])
def test_a_tampered_segment_at_hand_leaves_its_alarm_to_a_worker_thread(
    env: Env, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    """A segment that fails authentication is never given out at hand, and its alarm (a
    database write) is not written there either: ``next()`` records it once and aborts."""
    if streamed:
        monkeypatch.setattr(windows, "STREAM_FROM", 0)
    gid = env.grant()
    env.store.corrupt = _flipping(SECOND_SEGMENT_BYTE)  # in the second segment
    plan, chunks = _opened(env, gid)
    alarms: list[str] = []
    raise_alarm = playback._raise_alarm

    def spy(ctx: Context, p: playback.ReadPlan, *, offset: int, reason: str) -> None:
        alarms.append(reason)
        raise_alarm(ctx, p, offset=offset, reason=reason)

    monkeypatch.setattr(playback, "_raise_alarm", spy)
    _until_at_hand(plan.reader)
    assert chunks.next_at_hand() is None  # the bad segment, met at hand and held back
    assert chunks.next_at_hand() is None and alarms == []
    with pytest.raises(IntegrityError):
        next(chunks)
    assert alarms == ["segment-authentication"]
    assert env.status() == RecordingStatus.integrity_failed
    chunks.close()


def test_a_segment_still_on_its_way_is_not_at_hand(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the streaming GET has not delivered the next segment, ``next_at_hand`` says so
    (None) at once and consumes nothing: ``next()`` then waits for it and gets it intact."""
    monkeypatch.setattr(windows, "STREAM_FROM", 0)
    gid = env.grant()
    arrived = threading.Event()
    first_end = streaming.segment_offset(1)

    def hold_back(offset: int, data: bytes) -> bytes:
        if offset >= first_end:
            arrived.wait(10)
        return data

    env.store.corrupt = hold_back
    _, chunks = _opened(env, gid)
    t0 = time.monotonic()
    assert chunks.next_at_hand() is None
    assert time.monotonic() - t0 < 1  # it did not wait for the store
    arrived.set()
    assert next(chunks) == env.clip[FIRST : FIRST + SEG]
    chunks.close()


def test_expiry_ends_a_running_stream(env: Env) -> None:
    gid = env.grant(minutes=10)
    with env.client.stream("GET", env.url(), params={"grant": str(gid)}, headers=env.h("eng")) as r:
        assert r.status_code == 200
        got, err = _consume(r, lambda _: env.clock.advance(minutes=11) and None)
    assert _caused_by(err, PermissionDeniedError), err
    assert len(got) <= FIRST + 2 * SEG < len(env.clip)
    _problem(env.get(grant=gid), 403, "forbidden")
    # At the service level, strictly: the very next segment is refused.
    gid2 = env.grant(minutes=10)
    plan = playback.open_read(
        env.ctx, actor=env.actors["eng"], recording_id=env.rid, grant_id=gid2,
        range_header="bytes=0-", now=env.ctx.now(),
    )  # fmt: skip
    chunks = playback.PlaintextStream(env.ctx, plan)
    next(chunks)
    env.clock.advance(minutes=10)
    with pytest.raises(PermissionDeniedError):
        next(chunks)


def test_ended_purpose_and_disposal_end_a_running_stream(env: Env) -> None:
    for change, purpose in (("purpose", "troubleshooting"), ("disposal", "fraud")):
        gid = env.grant(purpose=purpose)
        plan = playback.open_read(env.ctx, actor=env.actors["eng"], recording_id=env.rid,
                                  grant_id=gid, range_header=None, now=env.ctx.now())  # fmt: skip
        chunks = playback.PlaintextStream(env.ctx, plan)
        next(chunks)
        with env.ctx.db.transaction() as s:
            if change == "purpose":
                recordings.end_purpose(
                    s, actor=Actor.operator(), recording_id=env.rid, purpose="troubleshooting",
                    reason=None, now=env.ctx.now(),
                )  # fmt: skip
            else:
                s.exec(sa.update(Recording).where(Recording.id == env.rid)  # type: ignore[arg-type]
                       .values(status=RecordingStatus.disposing))  # fmt: skip
        env.clock.advance(playback.RECHECK_EVERY)
        with pytest.raises(PermissionDeniedError):
            next(chunks)


# --- a real server --------------------------------------------------------------------------------


def test_revoke_mid_stream_against_real_server(
    make_ctx: Callable[..., Context], tmp_path: Path
) -> None:
    """uvicorn closes the connection short of Content-Length: the client sees a cut body."""
    ctx = make_ctx(db="sqlite", store="local")
    initialise(ctx, now=ctx.now())
    with ctx.db.transaction() as s:
        create_tenant(s, actor=Actor.operator(), name="acme", region=None,
                                 now=ctx.now())  # fmt: skip
    key = principal_key(ctx, "eng", "engineer", ["acme"])
    with ctx.db.session() as s:
        actor = authentication.authenticate(s, api_key=key, now=ctx.now())
    # Bigger than the loopback socket buffers, so most of it is still to come at revocation.
    data = os.urandom(40 * MiB)
    rec = ingest_recording(
        ctx, actor=Actor.operator(), tenant="acme", purposes=["security"], call_id=None,
        recorded_at=None, content_type="audio/ogg", chunks=[data], expected_length=len(data),
    )  # fmt: skip
    now = ctx.now()
    with ctx.db.transaction() as s:
        gid = grants.issue_grant(
            s, principal_id=actor.id, owner=actor.owner, purpose="security",
            recording_ids=[rec.id], not_before=now - timedelta(minutes=1),
            expires_at=now + timedelta(hours=1),
        ).id  # fmt: skip
    settings = ctx.settings
    env = {
        "CALLVAULT_DATABASE_URL": settings.database_url,
        "CALLVAULT_BLOB_STORE": settings.blob_store,
        "CALLVAULT_KEY_PROVIDER": settings.key_provider,
    }
    headers = {"Authorization": f"Bearer {key}"}
    with run_serve(env, tmp_path) as server:
        url = f"{server.url}/v1/recordings/{rec.id}/content"
        got = bytearray()
        with (
            httpx.Client(timeout=60) as client,
            client.stream("GET", url, params={"grant": str(gid)}, headers=headers) as r,
        ):
            assert r.status_code == 200
            assert r.headers["content-type"] == "audio/ogg"
            assert r.headers["x-content-type-options"] == "nosniff"
            assert int(r.headers["content-length"]) == len(data)
            stream = r.iter_raw(64 * 1024)
            got += next(stream)
            with ctx.db.transaction() as s:
                g = s.get(Grant, gid)
                assert g is not None
                g.revoked_at = ctx.now()
            with pytest.raises(httpx.RemoteProtocolError):
                for chunk in stream:
                    got += chunk
                    # A slow reader: the server blocks on the socket, and the first segment
                    # boundary 100 ms after its last check asks the database again.
                    time.sleep(0.002)
        assert 0 < len(got) < len(data)
        assert bytes(got) == data[: len(got)]
        again = httpx.get(url, params={"grant": str(gid)}, headers=headers)
        assert again.status_code == 403 and again.headers["content-type"] == PROBLEM
