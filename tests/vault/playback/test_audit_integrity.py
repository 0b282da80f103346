"""Playback's audit (every read committed before its first byte), who may read, and integrity
(a tampered or flipped byte is never sent)."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from crypto.errors import KeyProviderError
from tests.vault.playback.conftest import (
    FIRST,
    SECOND_SEGMENT_BYTE,
    SEG,
    Env,
    _caused_by,
    _consume,
    _flipping,
    _on_decrypt,
    _problem,
)
from vault import audit
from vault.authz import Actor
from vault.errors import (
    IntegrityError,
)
from vault.models import Recording, RecordingStatus
from vault.recordings import metadata as recordings
from vault.recordings import windows

# --- audit ----------------------------------------------------------------------------------------


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
