"""Redaction end to end, on PostgreSQL, SeaweedFS, the bundled ffmpeg and the face model.

Every derivative is checked from outside: decrypted from the store and inspected with ffmpeg,
its manifest verified under the trusted key. Sabotaged steps must be caught by the verification
and leave nothing behind; no plaintext may remain anywhere on disk.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from crypto import streaming
from tests.support.calls import SECRETS, make_audio_only, make_call, make_testsrc_webm
from tests.support.clock import FakeClock
from tests.vault.test_recordings import all_objects, assert_chain_ok, events, make_tenant
from vault import media
from vault.audit import checkpoints
from vault.authz import Actor
from vault.context import Context
from vault.errors import ConflictError, InvalidInputError, UnknownProfileError
from vault.models import (
    Manifest,
    Recording,
    RecordingPurpose,
    RecordingStatus,
    Redaction,
    RedactionStatus,
)
from vault.recordings.ingest import ingest
from vault.redaction import faces, frames, queue, service
from vault.redaction.manifest import verify_manifest

OP = Actor.operator()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    base = tmp_path_factory.mktemp("clips")
    made = {
        "call": make_call(base / "call.mp4"),
        "webm": make_testsrc_webm(base / "src.webm"),
        "audio": make_audio_only(base / "a.m4a"),
    }
    return {name: path.read_bytes() for name, path in made.items()}


@pytest.fixture
def pg(make_ctx: Callable[..., Context], clock: FakeClock) -> Context:
    return make_ctx(db="postgres", store="s3", clock=clock)


def store(ctx: Context, body: bytes, *, content_type: str = "video/mp4",
          purposes: tuple[str, ...] = ("troubleshooting",)) -> Recording:  # fmt: skip
    make_tenant(ctx) if not _tenant_exists(ctx) else None
    return ingest(
        ctx, actor=OP, tenant="acme", purposes=list(purposes), call_id="call-7f3a",
        recorded_at=None, content_type=content_type,
        chunks=[body[i : i + 65536] for i in range(0, len(body), 65536)],
    )  # fmt: skip


def _tenant_exists(ctx: Context) -> bool:
    from vault.models import Tenant

    with ctx.db.reading() as s:
        return s.exec(select(Tenant.id).where(Tenant.name == "acme")).first() is not None


def redact(ctx: Context, rec: Recording, profile: str,
           purposes: tuple[str, ...] = ("troubleshooting",)) -> Redaction:  # fmt: skip
    with ctx.db.transaction() as s:
        rid = queue.request(
            s, actor=OP, policy=ctx.policy, recording_id=rec.id, profile=profile,
            purposes=list(purposes), now=ctx.now(),
        ).id  # fmt: skip
    service.run_queue(ctx, now=ctx.now(), only=[rid])
    with ctx.db.reading() as s:
        red = s.get(Redaction, rid)
        assert red is not None
        s.expunge(red)
        return red


def plaintext(ctx: Context, rec_id: uuid.UUID) -> bytes:
    with ctx.db.reading() as s:
        rec = s.get(Recording, rec_id)
        assert rec is not None and rec.wrapped_dek is not None
    dek = ctx.keys.unwrap_dek(rec.wrapped_dek, tenant_id=rec.tenant_id, recording_id=rec.id)
    blob = ctx.store.read_range(rec.object_key, version_id=rec.version_id, offset=0,
                                length=rec.ciphertext_size or 0)  # fmt: skip
    return b"".join(streaming.decrypt_range(
        lambda off, n: blob[off : off + n], dek=dek, recording_id=rec.id,
        ciphertext_size=len(blob), start=0, end=streaming.plaintext_size(len(blob)),
    ))  # fmt: skip


def inspect_bytes(body: bytes, tmp: Path) -> media.MediaInfo:
    path = tmp / f"{uuid.uuid4().hex}.mp4"
    path.write_bytes(body)
    try:
        return media.inspect(str(path))
    finally:
        path.unlink()


def the_manifest(ctx: Context, rec_id: uuid.UUID) -> dict[str, Any]:
    with ctx.db.reading() as s:
        row = s.get(Manifest, rec_id)
        assert row is not None
        canonical, signature = row.canonical, row.signature
    return verify_manifest(checkpoints.trusted_public_key(ctx), canonical, signature)


def _disk_files() -> set[str]:
    found = set()
    for root in {tempfile.gettempdir(), "/dev/shm"}:
        for dirpath, _, names in os.walk(root):
            found.update(os.path.join(dirpath, n) for n in names)
    return found


@pytest.fixture
def no_plaintext_left(clips: dict[str, bytes]) -> Iterator[None]:
    """No file created during the test survives it in the temp dirs (/tmp, /dev/shm)."""
    before = _disk_files()
    yield
    markers = [SECRETS["title"].encode(), clips["call"][4096:4160]]
    for path in _disk_files() - before:
        try:
            content = Path(path).read_bytes()
        except OSError:
            continue
        assert not any(m in content for m in markers), f"plaintext left in {path}"


# --- the shipped profiles -----------------------------------------------------------------------


def test_network_diagnostics_makes_a_verified_signed_deidentified_derivative(
    pg: Context, clips: dict[str, bytes], tmp_path: Path, no_plaintext_left: None
) -> None:
    parent = store(pg, clips["call"])
    red = redact(pg, parent, "network-diagnostics")
    assert red.status == RedactionStatus.verified and red.progress == 100, red.failed_check
    with pg.db.reading() as s:
        child = s.get(Recording, red.derivative_id)
        assert child is not None
        purposes = s.exec(select(RecordingPurpose).where(
            RecordingPurpose.recording_id == child.id)).all()  # fmt: skip
    assert child.parent_id == parent.id and child.status == RecordingStatus.stored
    assert child.call_id is None and child.content_type == "video/mp4"
    # De-identifying: it may outlive the original, by the purpose's derivative retention.
    rules = pg.policy.purpose("troubleshooting")
    assert [(p.purpose, p.expires_at) for p in purposes] == [
        ("troubleshooting", pg.now() + rules.derivative_retention)
    ]
    body = plaintext(pg, child.id)
    info = inspect_bytes(body, tmp_path)
    assert sorted(s.kind for s in info.streams) == ["audio", "video"] and not info.chapters
    assert info.all_tags() == []
    for secret in SECRETS.values():
        assert secret.encode() not in body
    doc = the_manifest(pg, child.id)
    assert doc["type"] == "callvault.redaction-manifest" and doc["version"] == 1
    assert doc["parent_id"] == str(parent.id) and doc["profile"]["deidentifying"] is True
    assert doc["input"]["ciphertext_sha256"] == parent.ciphertext_sha256
    assert doc["output"]["sha256"] == child.sha256
    assert doc["tools"]["face_model"] == {"name": faces.MODEL_NAME, "sha256": faces.MODEL_SHA256}
    assert doc["input"]["tag_keys"]["title"] == 2  # the keys and counts, never the values
    text = json.dumps(doc)
    assert not any(v in text for v in SECRETS.values()) and "deu" not in text
    checks = {c["check"]: c for c in doc["checks"]}
    assert set(checks) == {"streams", "video-duration", "audio-duration", "envelope-band",
                           "envelope-follows-rms", "no-input-tags", "no-faces-left", "pixelated"}
    assert all(c["passed"] for c in checks.values())
    assert checks["no-faces-left"]["frames_with_faces_in"] == 3  # the input had faces
    assert checks["pixelated"]["detail"] <= frames.PIXEL_TOLERANCE
    [ok] = events(pg, "redaction.verified")
    assert json.loads(ok.canonical)["details"]["derivative_id"] == str(child.id)
    assert "call-7f3a" not in "".join(e.canonical for e in events(pg, "redaction.start"))
    assert_chain_ok(pg)


def test_faces_blurred_on_webm_drops_the_audio_and_never_outlives_the_original(
    pg: Context, clips: dict[str, bytes], tmp_path: Path
) -> None:
    parent = store(pg, clips["webm"], content_type="video/webm")
    red = redact(pg, parent, "faces-blurred")
    assert red.status == RedactionStatus.verified, red.failed_check
    body = plaintext(pg, red.derivative_id)  # type: ignore[arg-type]
    info = inspect_bytes(body, tmp_path)
    assert [s.kind for s in info.streams] == ["video"] and info.all_tags() == []
    with pg.db.reading() as s:
        mine = {p.purpose: p.expires_at for p in s.exec(select(RecordingPurpose)).all()
                if p.recording_id == red.derivative_id}  # fmt: skip
        theirs = {p.purpose: p.expires_at for p in s.exec(select(RecordingPurpose)).all()
                  if p.recording_id == parent.id}  # fmt: skip
    assert mine == theirs  # not de-identifying: no later than the original's
    checks = {c["check"] for c in the_manifest(pg, red.derivative_id)["checks"]}  # type: ignore[arg-type]
    assert "audio-duration" not in checks and "no-faces-left" in checks


# --- sabotage: verification must catch it and keep nothing --------------------------------------


@pytest.mark.parametrize(
    ("profile", "sabotage", "caught_by"),
    [
        ("faces-blurred", "blur_boxes", "no-faces-left"),
        ("network-diagnostics", "pixelate", "pixelated"),
        ("network-diagnostics", "envelope", "envelope-band"),
    ],
)
def test_a_sabotaged_step_is_caught_and_nothing_is_kept(
    pg: Context, clips: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, profile: str,
    sabotage: str, caught_by: str,
) -> None:  # fmt: skip
    parent = store(pg, clips["call"])
    objects_before = len(all_objects(pg.store))
    if sabotage == "blur_boxes":
        monkeypatch.setattr(faces, "blur_boxes", lambda *a, **k: None)
    elif sabotage == "pixelate":
        monkeypatch.setattr(frames, "pixelate", lambda *a, **k: None)
    else:  # the "envelope" passes the voice through with a little tone on top
        from vault.redaction import sound

        real = sound.Envelope.feed
        monkeypatch.setattr(sound.Envelope, "feed", lambda self, x: real(self, x) * 0.1 + x)
    red = redact(pg, parent, profile)
    assert red.status == RedactionStatus.failed and red.failed_check == caught_by
    assert red.derivative_id is None
    with pg.db.reading() as s:
        assert [r.id for r in s.exec(select(Recording)).all()] == [parent.id]
        assert s.exec(select(Manifest)).first() is None
    assert len(all_objects(pg.store)) == objects_before  # the derivative's object is gone
    [failed] = events(pg, "redaction.failed")
    assert json.loads(failed.canonical)["details"]["check"] == caught_by
    assert plaintext(pg, parent.id) == clips["call"]  # the original untouched


# --- bad input ---------------------------------------------------------------------------------


def test_bad_requests_get_clear_errors_and_change_nothing(
    pg: Context, clips: dict[str, bytes]
) -> None:
    parent = store(pg, clips["call"])

    def ask(profile: str, purposes: list[str], rid: uuid.UUID = parent.id) -> None:
        with pg.db.transaction() as s:
            queue.request(s, actor=OP, policy=pg.policy, recording_id=rid, profile=profile,
                          purposes=purposes, now=pg.now())  # fmt: skip

    with pytest.raises(UnknownProfileError, match="network-diagnostics"):
        ask("voices-only", ["troubleshooting"])
    with pytest.raises(InvalidInputError, match="not active"):
        ask("faces-blurred", ["fraud"])
    red = redact(pg, parent, "faces-blurred")
    assert red.derivative_id is not None
    with pytest.raises(ConflictError, match="already"):
        ask("faces-blurred", ["troubleshooting"], red.derivative_id)
    with pg.db.transaction() as s:
        s.exec(select(Recording).where(Recording.id == parent.id)).one().status = "disposed"
    with pytest.raises(ConflictError, match="only stored"):
        ask("faces-blurred", ["troubleshooting"])
    with pg.db.reading() as s:
        assert len(s.exec(select(Redaction)).all()) == 1


@pytest.mark.parametrize(
    ("body", "profile", "check"),
    [
        ("audio", "network-diagnostics", "profile-needs-video"),
        ("garbage", "faces-blurred", "input-not-media"),
    ],
)
def test_media_a_profile_cannot_handle_fails_by_name(
    pg: Context, clips: dict[str, bytes], body: str, profile: str, check: str
) -> None:
    data = clips["audio"] if body == "audio" else os.urandom(300_000)
    parent = store(pg, data, content_type="audio/mp4" if body == "audio" else "video/mp4")
    red = redact(pg, parent, profile)
    assert (red.status, red.failed_check) == (RedactionStatus.failed, check)
    assert plaintext(pg, parent.id) == data


def test_audio_only_recordings_can_lose_their_audio_words(
    make_ctx: Callable[..., Context], clock: FakeClock, clips: dict[str, bytes], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[redaction_profiles.voice-envelope]\noperations = [{ op = "mute", ranges = [[1, 2]] },'
        ' { op = "audio_envelope" }, { op = "strip_metadata" }]\n'
    )
    ctx = make_ctx(db="sqlite", store="local", clock=clock, policy_file=policy)
    parent = store(ctx, clips["audio"], content_type="audio/mp4")
    red = redact(ctx, parent, "voice-envelope")
    assert red.status == RedactionStatus.verified, red.failed_check
    checks = {c["check"]: c for c in the_manifest(ctx, red.derivative_id)["checks"]}  # type: ignore[arg-type]
    assert checks["muted-ranges"]["max_db"] <= -60 and checks["envelope-follows-rms"]["passed"]
    info = inspect_bytes(plaintext(ctx, red.derivative_id), tmp_path)  # type: ignore[arg-type]
    assert [s.kind for s in info.streams] == ["audio"]
    with ctx.db.reading() as s:
        assert s.get(Recording, red.derivative_id).content_type == "audio/mp4"  # type: ignore[union-attr]


# --- crashes -----------------------------------------------------------------------------------


class _Killed(BaseException):
    """The worker process dying: nothing after it runs (no cleanup either)."""


def test_a_run_killed_midway_is_taken_up_again_and_leaves_nothing_behind(
    pg: Context, clips: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    from jobs.tasks import run as run_job
    from vault.recordings import ingest as ingest_module

    parent = store(pg, clips["call"])
    with pg.db.transaction() as s:
        rid = queue.request(s, actor=OP, policy=pg.policy, recording_id=parent.id,
                            profile="network-diagnostics", purposes=["troubleshooting"],
                            now=pg.now()).id  # fmt: skip
    calls = {"n": 0}
    real = frames.pixelate

    def dies_on_frame_40(frame: Any, block: int) -> None:
        calls["n"] += 1
        if calls["n"] == 40:
            raise _Killed()
        real(frame, block)

    with monkeypatch.context() as m:
        m.setattr(frames, "pixelate", dies_on_frame_40)
        m.setattr(ingest_module, "_abandon", lambda *a, **k: None)  # a dead process cleans nothing
        with pytest.raises(_Killed):
            service.run_queue(pg, now=pg.now(), only=[rid])
    with pg.db.reading() as s:
        red = s.get(Redaction, rid)
        assert red is not None and red.status == RedactionStatus.running
        assert [r.status for r in s.exec(select(Recording)).all() if r.parent_id] == ["pending"]
    clock.advance(hours=2)  # past the redaction's lease and the pending-ingest threshold
    assert run_job("redact", pg, pg.now()).startswith("1 redaction(s) verified")
    run_job("sweep-orphans", pg, pg.now())
    with pg.db.reading() as s:
        red = s.get(Redaction, rid)
        assert red is not None and red.status == RedactionStatus.verified and red.attempts == 2
        rows = {r.id: r for r in s.exec(select(Recording)).all()}
    live = {r.object_key for r in rows.values() if r.status == RecordingStatus.stored}
    assert {r.status for r in rows.values() if r.parent_id and r.id != red.derivative_id} <= {
        "failed"
    }
    assert {o.object_name for o in all_objects(pg.store)} == live  # nothing orphaned
    assert pg.store.incomplete_uploads() == []
    assert_chain_ok(pg)


def test_a_flipped_byte_in_the_original_fails_the_redaction_and_raises_the_alarm(
    make_ctx: Callable[..., Context], clock: FakeClock, clips: dict[str, bytes]
) -> None:
    ctx = make_ctx(db="sqlite", store="local", clock=clock)
    parent = store(ctx, clips["call"])
    assert ctx.settings.blob_dir is not None
    path = ctx.settings.blob_dir.joinpath(*parent.object_key.split("/"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # a segment in the middle: ffmpeg has started by then
    path.write_bytes(bytes(data))
    red = redact(ctx, parent, "network-diagnostics")
    assert (red.status, red.failed_check) == (RedactionStatus.failed, "input-integrity")
    with ctx.db.reading() as s:
        rows = s.exec(select(Recording)).all()
    assert [(r.id, r.status) for r in rows] == [(parent.id, RecordingStatus.integrity_failed)]
    [alarm] = events(ctx, "integrity.alarm")
    assert json.loads(alarm.canonical)["details"]["source"] == "redaction"
