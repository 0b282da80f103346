"""The transcript comes back as an encrypted derivative with lineage, whose only purpose is the
sub-processor's and which expires with the parent's purpose (and goes with its erasure)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlmodel import select

from tests.jobs.helpers import decrypt, events
from tests.vault.subprocessors.conftest import OP, World, recording
from vault.models import RecordingPurpose
from vault.recordings import metadata as recordings
from vault.retention import erasure
from vault.tags import AuditAction

PROBLEM = "https://callvault.dev/problems/"
TRANSCRIPT = b"WEBVTT\n\n00:00.000 --> 00:02.000\nhello\n"


def _downloaded(world: World) -> dict[str, Any]:
    world.run_job()
    (item,) = world.handoffs()
    token = world.token(item["id"])
    assert world.media(item["id"], token).status_code == 200
    return item


def _send(world: World, handoff_id: str, who: str = "sp", body: bytes = TRANSCRIPT) -> Any:
    headers = {**world.h(who), "Content-Type": "application/octet-stream"}
    return world.client.post(f"/v1/handoffs/{handoff_id}/transcript", content=body,
                             headers=headers)  # fmt: skip


def _purposes(world: World, rid: Any) -> dict[str, RecordingPurpose]:
    with world.ctx.db.session() as s:
        rows = s.exec(select(RecordingPurpose).where(RecordingPurpose.recording_id == rid)).all()
        return {p.purpose: p for p in rows}


def test_a_transcript_is_a_derivative_with_lineage_and_the_parents_expiry(world: World) -> None:
    item = _downloaded(world)
    r = _send(world, item["id"])
    assert r.status_code == 201, r.text
    tid = uuid.UUID(r.json()["transcript_id"])
    child = recording(world.ctx, tid)
    assert child.parent_id == world.rid and child.call_id is None
    assert decrypt(world.ctx, child) == TRANSCRIPT
    parent = _purposes(world, world.rid)
    mine = _purposes(world, child.id)
    assert set(mine) == {"transcription"}
    assert mine["transcription"].expires_at == parent["transcription"].expires_at
    (event,) = events(world.ctx, AuditAction.handoff_transcript.value)
    assert str(tid) in event.canonical and "hello" not in event.canonical
    # One transcript per hand-off.
    again = _send(world, item["id"])
    assert again.status_code == 409 and again.json()["type"] == PROBLEM + "handoff-state"


def test_no_transcript_before_the_media_was_downloaded(lite: World) -> None:
    lite.run_job()
    (item,) = lite.handoffs()
    r = _send(lite, item["id"])
    assert r.status_code == 409 and r.json()["type"] == PROBLEM + "handoff-state"


def test_another_subprocessor_cannot_send_the_transcript(lite: World) -> None:
    item = _downloaded(lite)
    assert _send(lite, item["id"], who="sp2").status_code == 404
    assert _send(lite, item["id"], who="eng").status_code == 403


def test_the_transcript_ends_with_the_parents_purpose(lite: World) -> None:
    item = _downloaded(lite)
    tid = uuid.UUID(_send(lite, item["id"]).json()["transcript_id"])
    with lite.ctx.db.transaction() as s:
        recordings.end_purpose(s, actor=OP, recording_id=lite.rid,
                               purpose="transcription", reason="customer asked",
                               now=lite.clock())  # fmt: skip
    assert lite.run_job().transcripts_ended == 1
    assert _purposes(lite, tid)["transcription"].ended_at == lite.clock()
    assert lite.run_job().transcripts_ended == 0  # idempotent


def test_no_transcript_once_the_parents_purpose_ended(lite: World) -> None:
    item = _downloaded(lite)
    with lite.ctx.db.transaction() as s:
        recordings.end_purpose(s, actor=OP, recording_id=lite.rid, purpose="transcription",
                               reason="customer asked", now=lite.clock())  # fmt: skip
    r = _send(lite, item["id"])
    assert r.status_code == 410 and r.json()["type"] == PROBLEM + "handoff-withdrawn"
    assert r.json()["reason"] == "purpose-not-active"


def test_erasing_the_parent_covers_the_transcript(lite: World) -> None:
    item = _downloaded(lite)
    tid = uuid.UUID(_send(lite, item["id"]).json()["transcript_id"])
    r = lite.client.post("/v1/erasure-requests", json={"recording_ids": [str(lite.rid)]},
                         headers=lite.h("dpo"))  # fmt: skip
    assert r.status_code == 202, r.text
    assert r.json()["recordings"] == 2  # the parent and its transcript
    erasure.process(lite.ctx, now=lite.clock())
    assert _purposes(lite, tid)["transcription"].ended_at is not None
