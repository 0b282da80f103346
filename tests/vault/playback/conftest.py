"""Playback's fixtures (issue #3, #12): a vault on both backends (SQLite + local directory,
PostgreSQL + SeaweedFS) behind the in-process TestClient, with an ffmpeg-generated clip ingested
and a store that counts (and can corrupt) what it reads; grants made directly with
``grants.issue_grant`` (the access-request flow is tested elsewhere); and the helpers the
playback tests share."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from crypto import streaming
from tests.jobs.helpers import event_documents
from tests.support.api import principal_key
from tests.support.clock import FakeClock
from vault import media
from vault.access import grants
from vault.app import create_app
from vault.authz import Actor
from vault.context import Context
from vault.identity import authentication
from vault.identity.tenants import create_tenant
from vault.models import Grant, Recording
from vault.recordings import playback
from vault.recordings.ingest import ingest as ingest_recording
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
        return event_documents(self.ctx, action)

    def status(self, rid: uuid.UUID | None = None) -> str:
        with self.ctx.db.session() as s:
            rec = s.get(Recording, rid or self.rid)
            assert rec is not None
            return rec.status



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
        "eng": principal_key(ctx, "eng", "engineer", ["acme"]),
        "eng2": principal_key(ctx, "eng2", "engineer", ["acme"]),
        "eng-globex": principal_key(ctx, "eng-globex", "engineer", ["globex"]),
        "security": principal_key(ctx, "security", "security", []),
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


def _segment_offset(plaintext_offset: int) -> int:
    """Object offset of the ciphertext segment that holds this plaintext byte."""
    if plaintext_offset < FIRST:
        return streaming.HEADER_SIZE
    index = 1 + (plaintext_offset - FIRST) // SEG
    first_ct = streaming.SEGMENT_SIZE - streaming.STREAM_HEADER_SIZE
    return streaming.HEADER_SIZE + first_ct + (index - 1) * streaming.SEGMENT_SIZE


# A byte well inside the second ciphertext segment.
SECOND_SEGMENT_BYTE = _segment_offset(FIRST) + 1000


def _on_decrypt(monkeypatch: pytest.MonkeyPatch, hook: Callable[[], None]) -> None:
    """Run ``hook`` when playback starts decrypting, i.e. before its first plaintext byte."""
    real = streaming.decrypt_range

    def spy(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        hook()
        yield from real(*args, **kwargs)

    monkeypatch.setattr(playback.streaming, "decrypt_range", spy)


def _flipping(target: int) -> Callable[[int, bytes], bytes]:
    """A store's ``corrupt`` hook that flips the object's byte at ``target`` as it passes."""

    def flip(offset: int, data: bytes) -> bytes:
        if offset <= target < offset + len(data):
            b = bytearray(data)
            b[target - offset] ^= 0x80
            return bytes(b)
        return data

    return flip
