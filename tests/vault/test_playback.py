"""Playback (GET /v1/recordings/{id}/content): bytes, Range, audit, integrity, concurrency.

Runs on both backends (SQLite + local directory, PostgreSQL + SeaweedFS) through the in-process
TestClient, on an ffmpeg-generated clip; one test drives a real ``callvault serve``. Grants are
made directly with ``grants.issue_grant``: the access-request flow is tested elsewhere.
"""

from __future__ import annotations

import dataclasses
import gc
import io
import json
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import col, select

from crypto import streaming
from crypto.errors import KeyProviderError
from tests.support.clock import FakeClock
from tests.support.server import run_serve
from vault import audit, media
from vault.access import grants
from vault.app import create_app
from vault.authz import Actor
from vault.context import Context
from vault.errors import (
    IntegrityError,
    PermissionDeniedError,
    RangeNotSatisfiableError,
    StoreUnavailableError,
)
from vault.identity import authentication, principals
from vault.identity.owners import owner_of
from vault.identity.tenants import create_tenant
from vault.models import AuditEvent, Grant, Recording, RecordingStatus
from vault.recordings import metadata as recordings
from vault.recordings import playback, windows
from vault.recordings.ingest import ingest as ingest_recording
from vault.recordings.ranges import parse_range
from vault.setup import initialise

PROBLEM = "application/problem+json"
TYPE = "https://callvault.dev/problems/"
SEG = streaming.SEGMENT_PLAINTEXT  # 1,048,560 plaintext bytes per full segment
FIRST = streaming.FIRST_SEGMENT_PLAINTEXT
MiB = 1 << 20


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A 4 s H.264/AAC clip of about 4.7 MiB (five segments), made once per session."""
    path = media.make_test_clip(
        tmp_path_factory.mktemp("media") / "clip.mp4",
        seconds=4, size="640x480", video_bitrate="10M",
    )  # fmt: skip
    data = path.read_bytes()
    assert len(data) > 4 * SEG  # several segments, so ranges cross boundaries
    return data


class CountingStore:
    """Wraps the real store and records every ``read_range`` (and can run a hook first)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[int, int]] = []
        self.opened: list[tuple[int, int]] = []
        self.before_read: Callable[[], None] | None = None
        self.corrupt: Callable[[int, bytes], bytes] | None = None

    def read_range(self, key: str, *, version_id: str | None, offset: int, length: int) -> bytes:
        if self.before_read is not None:
            self.before_read()
        self.calls.append((offset, length))
        data = self.inner.read_range(key, version_id=version_id, offset=offset, length=length)
        return self.corrupt(offset, data) if self.corrupt else data

    def open_range(self, key: str, *, version_id: str | None, offset: int, length: int) -> Any:
        if self.before_read is not None:
            self.before_read()
        self.opened.append((offset, length))
        body = self.inner.open_range(key, version_id=version_id, offset=offset, length=length)
        return _Altered(body, offset, self.corrupt) if self.corrupt else body

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _Altered:
    """A streaming body whose bytes go through ``corrupt(offset, data)`` on their way."""

    def __init__(self, body: Any, offset: int, corrupt: Callable[[int, bytes], bytes]) -> None:
        self.body, self.at, self.corrupt, self.length = body, offset, corrupt, body.length

    def read(self, n: int) -> bytes:
        data = self.body.read(n)
        self.at += len(data)
        return self.corrupt(self.at - len(data), data)

    def close(self) -> None:
        self.body.close()


@dataclass
class Env:
    ctx: Context
    client: TestClient
    clock: FakeClock
    store: CountingStore
    keys: dict[str, str]
    actors: dict[str, Actor]
    clip: bytes
    rid: uuid.UUID
    extra: dict[str, Any] = field(default_factory=dict)

    def h(self, who: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}", **extra}

    def grant(
        self,
        who: str = "eng",
        rid: uuid.UUID | None = None,
        *,
        purpose: str = "troubleshooting",
        minutes: float = 60,
        starts_in: float = 0,
    ) -> uuid.UUID:
        actor = self.actors[who]
        start = self.clock() + timedelta(minutes=starts_in)
        with self.ctx.db.transaction() as s:
            g = grants.issue_grant(
                s, principal_id=actor.id, owner=actor.owner, purpose=purpose,
                recording_ids=[rid or self.rid], not_before=start,
                expires_at=start + timedelta(minutes=minutes),
            )  # fmt: skip
            return g.id

    def revoke(self, grant_id: uuid.UUID) -> None:
        """Revocation as the access service does it: its own committed transaction."""
        with self.ctx.db.transaction() as s:
            g = s.get(Grant, grant_id)
            assert g is not None
            g.revoked_at = self.ctx.now()
            s.add(g)

    def url(self, rid: uuid.UUID | None = None) -> str:
        return f"/v1/recordings/{rid or self.rid}/content"

    def get(
        self, who: str = "eng", *, grant: uuid.UUID | None = None, rid: uuid.UUID | None = None,
        **headers: str,
    ) -> httpx.Response:  # fmt: skip
        params = {"grant": str(grant)} if grant else None
        return self.client.get(self.url(rid), params=params, headers=self.h(who, **headers))

    def ingest(self, data: bytes, *, content_type: str = "video/mp4") -> uuid.UUID:
        rec = ingest_recording(
            self.ctx, actor=Actor.operator(), tenant="acme",
            purposes=["troubleshooting", "fraud"], call_id="call-1", recorded_at=None,
            content_type=content_type, chunks=[data], expected_length=len(data),
        )  # fmt: skip
        return rec.id

    def events(self, action: str) -> list[dict[str, Any]]:
        with self.ctx.db.session() as s:
            rows = s.exec(
                select(AuditEvent.canonical)
                .where(AuditEvent.action == action)
                .order_by(col(AuditEvent.seq))
            ).all()
        return [json.loads(r) for r in rows]

    def status(self, rid: uuid.UUID | None = None) -> str:
        with self.ctx.db.session() as s:
            rec = s.get(Recording, rid or self.rid)
            assert rec is not None
            return rec.status


def _principal(ctx: Context, name: str, role: str, **scope: Any) -> str:
    owner = owner_of(ctx.keys, f"{name}@example.com")
    with ctx.db.transaction() as s:
        _, key = principals.add_principal(
            s, actor=Actor.operator(), name=name, role=role, owner=owner,
            tenants=scope.get("tenants", []), all_tenants=bool(scope.get("all_tenants")),
            now=ctx.now(),
        )  # fmt: skip
    return key


@pytest.fixture
def env(ctx: Context, clock: FakeClock, clip: bytes) -> Iterator[Env]:
    admin = initialise(ctx, now=ctx.now())
    assert admin
    with ctx.db.transaction() as s:
        for name in ("acme", "globex"):
            create_tenant(s, actor=Actor.operator(), name=name, region=None,
                                     now=ctx.now())  # fmt: skip
    keys = {
        "admin": admin,
        "eng": _principal(ctx, "eng", "engineer", tenants=["acme"]),
        "eng2": _principal(ctx, "eng2", "engineer", tenants=["acme"]),
        "eng-globex": _principal(ctx, "eng-globex", "engineer", tenants=["globex"]),
        "security": _principal(ctx, "security", "security", all_tenants=True),
    }
    with ctx.db.session() as s:
        actors = {
            k: authentication.authenticate(s, api_key=v, now=ctx.now()) for k, v in keys.items()
        }
    store = CountingStore(ctx.store)
    ctx.store = store  # the app below holds this very ctx
    app = create_app(ctx.settings, ctx=ctx)
    with TestClient(app) as client:
        e = Env(ctx=ctx, client=client, clock=clock, store=store, keys=keys, actors=actors,
                clip=clip, rid=uuid.UUID(int=0))  # fmt: skip
        e.rid = e.ingest(clip)
        store.calls.clear()
        yield e


def _consume(
    resp: httpx.Response, on_chunk: Callable[[int], None] | None = None
) -> tuple[bytes, BaseException | None]:
    """Read a streamed body chunk by chunk; return what arrived and how it ended."""
    got = bytearray()
    try:
        for chunk in resp.iter_raw():
            got += chunk
            if on_chunk is not None:
                on_chunk(len(got))
    except Exception as exc:
        return bytes(got), exc
    return bytes(got), None


def _caused_by(exc: BaseException | None, kind: type[BaseException]) -> bool:
    """Starlette re-raises an error after the response started wrapped in a RuntimeError."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, kind):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _problem(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"] == TYPE + code


def test_media_helpers(tmp_path: Path) -> None:
    """vault.media: a small WebM clip probes as such; junk is a MediaError with ffmpeg's words."""
    webm = media.make_test_clip(tmp_path / "c.webm", seconds=1, fmt="webm")
    info = media.probe(webm)
    assert info["video_codec"] == "vp8" and info["audio_codec"] == "opus"
    assert (info["width"], info["height"]) == (320, 240)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(media.MediaError, match=r"Invalid data|moov atom"):
        media.probe(junk)
    with pytest.raises(ValueError):
        media.make_test_clip(tmp_path / "x.avi", fmt="avi")


# --- parse_range (pure) ---------------------------------------------------------------------------

SIZES = st.integers(min_value=1, max_value=10**13)
POS = st.integers(min_value=0, max_value=10**13)


@given(size=SIZES, first=POS, last=POS)
def test_parse_first_last(size: int, first: int, last: int) -> None:
    header = f"bytes={first}-{last}"
    if last < first or first >= size:
        with pytest.raises(RangeNotSatisfiableError):
            parse_range(header, size)
    else:
        assert parse_range(header, size) == (first, min(last + 1, size))


@given(size=SIZES, first=POS)
def test_parse_open_ended(size: int, first: int) -> None:
    if first >= size:
        with pytest.raises(RangeNotSatisfiableError):
            parse_range(f"bytes={first}-", size)
    else:
        assert parse_range(f"bytes={first}-", size) == (first, size)


@given(size=SIZES, n=POS)
def test_parse_suffix(size: int, n: int) -> None:
    if n == 0:
        with pytest.raises(RangeNotSatisfiableError):
            parse_range(f"bytes=-{n}", size)
    else:
        assert parse_range(f"bytes=-{n}", size) == (max(size - n, 0), size)


@given(size=st.integers(min_value=0, max_value=10**6), header=st.one_of(
    st.none(), st.text(max_size=40),
    st.from_regex(r"\A[Bb]ytes ?= ?[0-9]{0,25}-[0-9]{0,25}(, ?[0-9]{0,3}-[0-9]{0,3}){0,2}\Z"),
))  # fmt: skip
def test_parse_never_escapes(size: int, header: str | None) -> None:
    """Any header at all: the whole body, a range inside it, or a 416; nothing else."""
    try:
        got = parse_range(header, size)
    except RangeNotSatisfiableError:
        return
    if got is not None:
        start, end = got
        assert 0 <= start < end <= size


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("items=0-5", None),  # unknown unit: ignored (RFC 9110 §14.2)
        ("bytes=0-1,5-6", None),  # several ranges: whole body
        ("Bytes=2-3", (2, 4)),
        ("bytes= 2-3 ", (2, 4)),
        ("bytes=0-", (0, 100)),
        ("bytes=99-", (99, 100)),
        ("bytes=-1", (99, 100)),
        ("bytes=-1000", (0, 100)),
        ("bytes=90-" + "9" * 40, (90, 100)),  # huge last byte: clamped, not int()-ed
    ],
)
def test_parse_examples(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize(
    "header",
    ["bytes=100-", "bytes=-0", "bytes=5-2", "bytes=abc", "bytes=", "bytes=-", "bytes=0-1,x",
     "bytes", "bytes=1-2-3", "bytes=" + "9" * 5000 + "-"],
)  # fmt: skip
def test_parse_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiableError):
        parse_range(header, 100)


# --- the read-ahead windows (in memory, no store) -------------------------------------------------

_PLAIN = random.Random(1).randbytes(5 * SEG + 12_345)
_DEK, _RID = bytes(range(32)), uuid.UUID(int=42)


def _encrypted() -> bytes:
    out = io.BytesIO()
    streaming.encrypt(io.BytesIO(_PLAIN), out, dek=_DEK, recording_id=_RID)
    return out.getvalue()


_OBJECT = _encrypted()


@given(data=st.data())
def test_windows_serve_exactly_the_covering_segments(data: st.DataObject) -> None:
    size = len(_PLAIN)
    start = data.draw(st.integers(0, size - 1))
    end = data.draw(st.integers(start + 1, size))
    calls: list[tuple[int, int]] = []

    def read(offset: int, length: int) -> bytes:
        calls.append((offset, length))
        return _OBJECT[offset : offset + length]

    reader = windows.WindowReader(read, *windows.ciphertext_span(len(_OBJECT), start, end))
    pieces = streaming.decrypt_range(
        reader, dek=_DEK, recording_id=_RID, ciphertext_size=len(_OBJECT), start=start, end=end
    )
    got = b"".join(pieces)
    reader.close()
    assert got == _PLAIN[start:end]
    segments = math.ceil((end - start) / SEG) + 1
    assert len(calls) <= 1 + segments
    assert sum(n for _, n in calls) <= streaming.HEADER_SIZE + segments * streaming.SEGMENT_SIZE + 1
    assert _only_covering_segments(calls, start)


# --- bytes ----------------------------------------------------------------------------------------


def test_full_body_headers_and_playable(env: Env, tmp_path: Path) -> None:
    gid = env.grant()
    r = env.get(grant=gid)
    assert r.status_code == 200, r.text
    assert r.content == env.clip
    with env.ctx.db.session() as s:
        rec = s.get(Recording, env.rid)
        assert rec is not None
    assert r.headers["content-type"] == "video/mp4"  # as ingested
    assert r.headers["content-length"] == str(len(env.clip))
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["etag"] == f'"{rec.ciphertext_sha256}"'
    assert r.headers["x-content-type-options"] == "nosniff"
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp
    assert r.headers["cache-control"] == "no-store"
    assert "content-range" not in r.headers
    # What came out is still the video that went in.
    out = tmp_path / "served.mp4"
    out.write_bytes(r.content)
    info = media.probe(out)
    assert info["has_video"] and info["has_audio"] and info["video_codec"] == "h264"
    assert info["duration"] == pytest.approx(4.0, abs=0.1)


def test_random_ranges(env: Env) -> None:
    gid = env.grant()
    size = len(env.clip)
    rng = random.Random(4)
    cases = [(0, 0), (FIRST - 1, FIRST), (FIRST, FIRST + SEG - 1), (size - 1, size - 1)]
    for _ in range(12):
        a = rng.randrange(size)
        cases.append((a, min(size - 1, a + rng.choice([1, 100, SEG, 2 * SEG + 7]))))
    for a, b in cases:
        r = env.get(grant=gid, Range=f"bytes={a}-{b}")
        assert r.status_code == 206, (a, b, r.text)
        assert r.headers["content-range"] == f"bytes {a}-{b}/{size}"
        assert r.headers["content-length"] == str(b - a + 1)
        assert r.content == env.clip[a : b + 1], (a, b)


def test_player_style_ranges(env: Env) -> None:
    """What browsers and players send: ``0-``, ``0-1`` probes, open-ended seeks, suffixes."""
    size = len(env.clip)
    clip = env.clip
    # No ?grant=: the caller's longest-lasting covering grant is used.
    env.grant(minutes=30)
    cases = {
        "bytes=0-": (0, size),  # Chrome's first request
        "bytes=0-1": (0, 2),  # Safari's probe
        f"bytes={size // 2}-": (size // 2, size),  # seek
        "bytes=-65536": (size - 65536, size),  # the tail (a moov atom at the end)
        f"bytes=-{size * 2}": (0, size),  # a suffix longer than the body
        f"bytes={size - 10}-{size + 10**6}": (size - 10, size),  # past the end: clamped
    }
    for header, (start, end) in cases.items():
        r = env.get(Range=header)
        assert r.status_code == 206, (header, r.text)
        assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{size}", header
        assert r.content == clip[start:end], header
    # Several ranges, or a unit we do not know: the whole body with 200.
    for header in ("bytes=0-1, 4-5", "frames=0-5"):
        r = env.get(Range=header)
        assert r.status_code == 200 and r.content == clip, header
    # If-Range: honoured only with our current ETag.
    etag = env.get(Range="bytes=0-0").headers["etag"]
    assert env.get(Range="bytes=5-9", **{"If-Range": etag}).content == clip[5:10]
    stale = env.get(Range="bytes=5-9", **{"If-Range": '"something-else"'})
    assert stale.status_code == 200 and stale.content == clip


@pytest.mark.parametrize("header", ["bytes={size}-", "bytes=-0", "bytes=9-3", "bytes=x-y"])
def test_unsatisfiable_range_is_416(env: Env, header: str) -> None:
    gid = env.grant()
    size = len(env.clip)
    r = env.get(grant=gid, Range=header.format(size=size))
    _problem(r, 416, "range-not-satisfiable")
    assert r.headers["content-range"] == f"bytes */{size}"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert env.events("recording.read") == []  # nothing was read
    assert env.store.calls == []


def test_a_range_fetches_only_its_segments(env: Env) -> None:
    """L bytes cost the header plus at most ceil(L / 1,048,560) + 1 segment reads."""
    gid = env.grant()
    size = len(env.clip)
    rng = random.Random(7)
    ranges = [(0, size), (0, 1), (FIRST - 1, FIRST + 1), (FIRST, FIRST + SEG), (size - 1, size),
              (FIRST + SEG - 5, FIRST + 2 * SEG + 5)]  # fmt: skip
    ranges += [(a, rng.randrange(a + 1, size + 1)) for a in rng.sample(range(size), 10)]
    for start, end in ranges:
        env.store.calls.clear()
        r = env.get(grant=gid, Range=f"bytes={start}-{end - 1}")
        assert r.content == env.clip[start:end]
        segments = math.ceil((end - start) / SEG) + 1  # the most L bytes can touch
        # (sorted: the first window may be fetched while the header is still being read)
        calls = sorted(env.store.calls)
        # At most one read for the header (or the header together with the first segments;
        # none once this object version's header is cached), then windows of whole segments;
        # never more reads, nor more bytes, than that bound.
        assert len([c for c in calls if c[0] == 0]) <= 1
        assert all(n >= streaming.HEADER_SIZE for at, n in calls if at == 0)
        assert len(calls) <= 1 + segments, (start, end, calls)
        fetched = sum(n for _, n in calls)
        # (+1: the end-of-stream probe byte asked for with the object's last segment)
        assert fetched <= streaming.HEADER_SIZE + segments * streaming.SEGMENT_SIZE + 1
        # Nothing before the first covering segment is read, apart from the header.
        assert _only_covering_segments(calls, start), (start, end, calls)


def test_a_seek_reads_the_header_once_per_object_version(env: Env) -> None:
    """The stream header (public ciphertext) is cached by object version: a second seek into
    the recording makes one GET, its window; a store without versions reads it every time."""
    gid = env.grant()
    with env.ctx.db.session() as s:
        versioned = s.get(Recording, env.rid).version_id is not None  # SeaweedFS, not disk
    seeks = [(FIRST + SEG + 7, FIRST + SEG + 1000), (FIRST + 2 * SEG + 3, FIRST + 2 * SEG + 90)]
    for n, (start, end) in enumerate(seeks):
        env.store.calls.clear()
        r = env.get(grant=gid, Range=f"bytes={start}-{end - 1}")
        assert r.content == env.clip[start:end]
        header_reads = [c for c in env.store.calls if c[0] == 0]
        assert len(header_reads) == (0 if versioned and n > 0 else 1), env.store.calls
    # A wrong cached header could not open a segment: decryption authenticates each one.
    key = next(iter(env.ctx.stream_headers._items), None)
    if key is not None:
        real = env.ctx.stream_headers._items[key]
        env.ctx.stream_headers._items[key] = real[:-1] + bytes([real[-1] ^ 1])
        with env.client.stream("GET", env.url(), params={"grant": str(gid)},
                               headers={**env.h("eng"), "Range": f"bytes={FIRST + SEG}-"}) as r:
            got, err = _consume(r)
        assert r.status_code != 206 or err is not None
        assert env.clip[FIRST + SEG : FIRST + SEG + 64] not in got


def _only_covering_segments(calls: list[tuple[int, int]], start: int) -> bool:
    """No read touches ciphertext before the segment holding ``start``, bar the header."""
    first = _segment_offset(start)
    return all(
        off >= first
        or (off == 0 and (n <= streaming.HEADER_SIZE or first == streaming.HEADER_SIZE))
        for off, n in calls
    )


def _segment_offset(plaintext_offset: int) -> int:
    """Object offset of the ciphertext segment that holds this plaintext byte."""
    if plaintext_offset < FIRST:
        return streaming.HEADER_SIZE
    index = 1 + (plaintext_offset - FIRST) // SEG
    first_ct = streaming.SEGMENT_SIZE - streaming.STREAM_HEADER_SIZE
    return streaming.HEADER_SIZE + first_ct + (index - 1) * streaming.SEGMENT_SIZE


# --- audit ----------------------------------------------------------------------------------------


def _on_decrypt(monkeypatch: pytest.MonkeyPatch, hook: Callable[[], None]) -> None:
    """Run ``hook`` when playback starts decrypting, i.e. before its first plaintext byte."""
    real = streaming.decrypt_range

    def spy(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        hook()
        yield from real(*args, **kwargs)

    monkeypatch.setattr(playback.streaming, "decrypt_range", spy)


def test_every_read_is_audited_before_the_first_byte(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    gid = env.grant(purpose="fraud")
    seen: list[int] = []

    def before_plaintext() -> None:  # the ciphertext may be on its way; no byte is decrypted
        reads = [e for e in env.events("recording.read") if e["grant_id"] == str(gid)]
        seen.append(len(reads))

    _on_decrypt(monkeypatch, before_plaintext)
    r = env.get(grant=gid, Range="bytes=100-2000000")
    assert r.status_code == 206
    assert seen == [1]  # the event was committed and visible to another session already
    (event,) = env.events("recording.read")
    assert event["grant_id"] == str(gid)
    assert event["purpose"] == "fraud"
    assert event["target"] == str(env.rid)
    assert event["actor"] == str(env.actors["eng"].id)
    assert event["details"]["range"] == [100, 2000001]  # end exclusive
    assert event["details"]["partial"] is True
    assert "call-1" not in json.dumps(event)  # audit rows outlive erasure
    env.get(grant=gid)
    whole = env.events("recording.read")[-1]["details"]
    assert whole["range"] == [0, len(env.clip)] and whole["partial"] is False
    with env.ctx.db.session() as s:
        assert audit.verify(s).ok


def test_read_refused_when_audit_cannot_be_written(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    gid = env.grant()
    real = audit.record
    decrypted: list[bool] = []

    def failing(session: Any, **kw: Any) -> Any:
        if kw.get("action") == "recording.read":
            raise sa.exc.OperationalError("INSERT", {}, Exception("disk full"))
        return real(session, **kw)

    monkeypatch.setattr(audit, "record", failing)
    _on_decrypt(monkeypatch, lambda: decrypted.append(True))
    r = env.get(grant=gid)
    _problem(r, 503, "audit-unavailable")
    assert env.clip[:64] not in r.content
    assert decrypted == []  # fail closed: not one segment was decrypted
    monkeypatch.undo()
    assert env.events("recording.read") == []
    assert env.get(grant=gid).content == env.clip  # and it works again once audit does


def test_a_revocation_between_authorisation_and_event_wins(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read's event is written only if the grant still holds, in the same statement: a
    revocation committed after the authorisation (here: while the DEK is unwrapped) is a 403,
    with no read event and not one byte decrypted."""
    gid = env.grant()
    provider = type(env.ctx.keys.provider)
    real = provider.unwrap
    decrypted: list[bool] = []

    def revoking(self: Any, *args: Any, **kwargs: Any) -> Any:
        env.revoke(gid)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(provider, "unwrap", revoking)
    _on_decrypt(monkeypatch, lambda: decrypted.append(True))
    _problem(env.get(grant=gid), 403, "forbidden")
    assert env.events("recording.read") == [] and decrypted == []


def test_key_provider_down_is_503(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    gid = env.grant()

    def down(*_: Any, **__: Any) -> bytes:
        raise KeyProviderError("unreachable")

    monkeypatch.setattr(type(env.ctx.keys.provider), "unwrap", down)
    _problem(env.get(grant=gid), 503, "key-provider-unavailable")
    assert env.events("recording.read") == [] and env.store.calls == []


# --- who may read ---------------------------------------------------------------------------------


def test_denials(env: Env) -> None:
    mine = env.grant("eng")
    theirs = env.grant("eng2")
    assert env.get("eng2", grant=theirs).status_code == 200
    _problem(env.get("eng", grant=theirs), 403, "forbidden")  # someone else's grant
    _problem(env.get("security"), 403, "forbidden")  # no grant at all (any role)
    _problem(env.get("admin"), 403, "forbidden")  # admin included
    _problem(env.get("eng-globex"), 404, "not-found")  # other tenant: as if missing
    _problem(env.get("eng-globex", grant=mine), 404, "not-found")
    _problem(env.get("eng", grant=uuid.uuid4()), 403, "forbidden")
    _problem(env.get("eng", rid=uuid.uuid4()), 404, "not-found")
    r = env.client.get(env.url(), params={"grant": str(mine)})
    _problem(r, 401, "unauthenticated")
    # A grant for another recording does not cover this one.
    other = env.ingest(b"other media" * 1000)
    _problem(env.get("eng", grant=mine, rid=other), 403, "forbidden")
    # Not yet valid, expired, revoked, purpose ended.
    later = env.grant("eng", starts_in=10)
    _problem(env.get("eng", grant=later), 403, "forbidden")
    short = env.grant("eng", minutes=1)
    env.clock.advance(minutes=2)
    _problem(env.get("eng", grant=short), 403, "forbidden")
    env.revoke(mine)
    _problem(env.get("eng", grant=mine), 403, "forbidden")
    fraud = env.grant("eng", purpose="fraud")
    assert env.get("eng", grant=fraud, Range="bytes=0-0").status_code == 206
    with env.ctx.db.transaction() as s:
        recordings.end_purpose(s, actor=Actor.operator(), recording_id=env.rid, purpose="fraud",
                               reason="test", now=env.ctx.now())  # fmt: skip
    _problem(env.get("eng", grant=fraud), 403, "forbidden")
    denied = env.events("permission.denied")
    assert denied and all(e["details"]["permission"] == "recording:content:read" for e in denied)
    assert len(env.events("recording.read")) == 2  # only the two successful reads


def test_disposed_recording_is_gone(env: Env) -> None:
    gid = env.grant()
    with env.ctx.db.transaction() as s:
        s.exec(sa.update(Recording).where(Recording.id == env.rid)  # type: ignore[arg-type]
               .values(status=RecordingStatus.disposed))  # fmt: skip
    _problem(env.get(grant=gid), 410, "gone")
    assert env.store.calls == []


# --- integrity ------------------------------------------------------------------------------------

# A byte well inside the second ciphertext segment.
SECOND_SEGMENT_BYTE = _segment_offset(FIRST) + 1000


def _tamper(env: Env, rid: uuid.UUID, offset: int) -> None:
    """Flip one stored byte. Locally: edit the file. On S3 a version cannot be changed in place:
    put a tampered copy as a new version, show that reads still pin the recorded version, then
    point the row at the tampered one (as someone with DB and S3 access could)."""
    with env.ctx.db.session() as s:
        rec = s.get(Recording, rid)
        assert rec is not None
    blob_dir = env.ctx.settings.blob_dir
    if blob_dir is not None:
        path = blob_dir.joinpath(*rec.object_key.split("/"))
        data = bytearray(path.read_bytes())
        data[offset] ^= 0x01
        path.write_bytes(bytes(data))
        return
    store = env.store.inner
    data = bytearray(store.read_range(rec.object_key, version_id=rec.version_id, offset=0,
                                      length=rec.ciphertext_size))  # fmt: skip
    data[offset] ^= 0x01
    put = store.client.put_object(store.bucket, rec.object_key, io.BytesIO(bytes(data)), len(data))
    assert put.version_id and put.version_id != rec.version_id
    gid = env.grant()
    assert env.get(grant=gid).content == env.clip  # still the recorded version
    with env.ctx.db.transaction() as s:
        row = s.get(Recording, rid)
        assert row is not None
        row.version_id = put.version_id
        s.add(row)


def test_tampered_segment_aborts_the_stream(env: Env) -> None:
    _tamper(env, env.rid, SECOND_SEGMENT_BYTE)
    gid = env.grant()
    with env.client.stream("GET", env.url(), params={"grant": str(gid)}, headers=env.h("eng")) as r:
        assert r.status_code == 200
        assert r.headers["content-length"] == str(len(env.clip))
        got, err = _consume(r)
    assert _caused_by(err, IntegrityError), err
    # The first segment authenticated and went out; the bad one never did.
    assert got == env.clip[:FIRST]
    (alarm,) = env.events("integrity.alarm")
    assert alarm["target"] == str(env.rid) and alarm["grant_id"] == str(gid)
    assert alarm["details"]["plaintext_offset"] == FIRST
    assert env.status() == RecordingStatus.integrity_failed
    # From now on the recording is refused outright, and the chain still verifies.
    _problem(env.get(grant=gid), 500, "integrity-failure")
    with env.ctx.db.session() as s:
        assert audit.verify(s).ok


def test_tampered_first_segment_of_a_range_is_a_clean_500(env: Env) -> None:
    _tamper(env, env.rid, SECOND_SEGMENT_BYTE)
    gid = env.grant()
    r = env.get(grant=gid, Range=f"bytes={FIRST + 10}-{FIRST + 20}")
    # The first segment is pulled before the headers go out: a problem, and no media at all.
    _problem(r, 500, "integrity-failure")
    assert len(env.events("integrity.alarm")) == 1
    assert env.status() == RecordingStatus.integrity_failed


def _flipping(target: int) -> Callable[[int, bytes], bytes]:
    """A store's ``corrupt`` hook that flips the object's byte at ``target`` as it passes."""

    def flip(offset: int, data: bytes) -> bytes:
        if offset <= target < offset + len(data):
            b = bytearray(data)
            b[target - offset] ^= 0x80
            return bytes(b)
        return data

    return flip


@pytest.mark.parametrize("streamed", [False, True], ids=["windows", "one-get"])
def test_flipped_byte_in_transit_is_caught(
    env: Env, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    """A store (or network) that returns altered bytes is caught the same way, whether the
    read came in windows or as one streaming GET."""
    if streamed:
        monkeypatch.setattr(windows, "STREAM_FROM", 0)
    gid = env.grant()
    env.store.corrupt = _flipping(SECOND_SEGMENT_BYTE + SEG)  # in the third segment
    with env.client.stream("GET", env.url(), params={"grant": str(gid)}, headers=env.h("eng")) as r:
        got, err = _consume(r)
    assert _caused_by(err, IntegrityError)
    assert got == env.clip[: FIRST + SEG]  # the bad segment never left
    assert env.status() == RecordingStatus.integrity_failed
    assert len(env.store.opened) == (1 if streamed else 0)


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
    key = _principal(ctx, "eng", "engineer", tenants=["acme"])
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


# --- early GETs (issue #12) -----------------------------------------------------------------------


def _gets_before_authorisation(env: Env, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each later read: whether its first GET started before its authorisation ended."""
    started = threading.Event()
    seen: list[bool] = []
    env.store.before_read = started.set
    real = playback.grants.authorize_read

    def authorise(*args: Any, **kwargs: Any) -> Any:
        # An early GET runs in a helper thread: give it time to reach the store.
        seen.append(started.wait(timeout=2 if env.ctx.read_locations._items else 0.2))
        return real(*args, **kwargs)

    monkeypatch.setattr(playback.grants, "authorize_read", authorise)
    env.extra["started"] = started
    return seen


def test_a_repeat_read_starts_its_get_beside_the_authorisation(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second read of a recording by the same actor fetches its ciphertext while the grant
    is being checked; the bytes and the audit trail are those of any read."""
    gid = env.grant()
    seen = _gets_before_authorisation(env, monkeypatch)
    for start in (FIRST + SEG + 11, 5, FIRST + 3 * SEG):
        env.extra["started"].clear()
        r = env.get(grant=gid, Range=f"bytes={start}-{start + 70_000}")
        assert r.status_code == 206 and r.content == env.clip[start : start + 70_001]
    assert seen == [False, True, True]
    assert len(env.events("recording.read")) == 3


def test_an_early_get_sends_nothing_when_the_read_is_refused(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revoked grant: the early GET happens, but no byte is decrypted or sent, no read event
    is written and the denial is audited. Another principal, who never read the recording under
    a grant, makes no GET at all."""
    gid = env.grant()
    assert env.get(grant=gid, Range="bytes=10-99").status_code == 206
    env.revoke(gid)
    decrypted: list[bool] = []
    _on_decrypt(monkeypatch, lambda: decrypted.append(True))
    env.store.calls.clear()
    _problem(env.get(grant=gid, Range="bytes=10-99"), 403, "forbidden")
    assert env.store.calls  # fetched early, then dropped
    assert decrypted == [] and len(env.events("recording.read")) == 1
    assert env.events("permission.denied")
    env.store.calls.clear()
    _problem(env.get("eng2", Range="bytes=10-99"), 403, "forbidden")
    _problem(env.get("eng-globex", Range="bytes=10-99"), 404, "not-found")
    assert env.store.calls == [] and decrypted == []


def test_an_early_get_of_another_object_version_is_dropped(env: Env) -> None:
    """The row found by the authorisation decides: a remembered location that no longer names
    the recorded version (or size) costs a wasted GET, never wrong bytes."""
    gid = env.grant()
    assert env.get(grant=gid, Range="bytes=0-9").content == env.clip[:10]
    key = (env.actors["eng"].id, env.rid)
    real = env.ctx.read_locations.get(key)
    assert real is not None
    for stale in (
        dataclasses.replace(real, version_id="not-a-version"),
        dataclasses.replace(real, object_key=f"{real.object_key}-gone"),
        dataclasses.replace(real, ciphertext_size=real.ciphertext_size + streaming.SEGMENT_SIZE),
    ):
        env.ctx.read_locations.put(key, stale)
        start = FIRST + SEG - 3
        r = env.get(grant=gid, Range=f"bytes={start}-{start + 99}")
        assert r.status_code == 206 and r.content == env.clip[start : start + 100]
        assert env.ctx.read_locations.get(key) == real  # the row's location, remembered again
