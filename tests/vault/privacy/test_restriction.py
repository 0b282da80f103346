"""Restriction of processing, end to end on both databases: no new access, running grants and
streams end, break-glass stays possible but flagged, lifting restores access, retention runs."""

from __future__ import annotations

import uuid

import pytest
from sqlmodel import select

from tests.vault.privacy.conftest import SEG, Vault, caused_by, consume, problem
from vault.access import grants
from vault.errors import PermissionDeniedError
from vault.models import Grant, Restriction
from vault.privacy import restriction
from vault.recordings import metadata as recordings
from vault.recordings import playback
from vault.retention import disposal


def _metadata(v: Vault, rid: uuid.UUID) -> dict:
    r = v.client.get(f"/v1/recordings/{rid}", headers=v.h("privacy"))
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def rid(vault: Vault, media: bytes) -> uuid.UUID:
    return vault.ingest(media, call_id="call-7")


def test_a_restricted_recording_refuses_requests_and_approvals(
    vault: Vault, rid: uuid.UUID
) -> None:
    pending = vault.request(rid)
    assert pending.status_code == 201, pending.text
    assert _metadata(vault, rid)["restricted"] is False

    placed = vault.restrict(rid)
    assert placed.status_code == 201, placed.text
    assert _metadata(vault, rid)["restricted"] is True

    problem(vault.request(rid), 409, "recording-restricted")
    approve = vault.post("approver", f"/v1/access-requests/{pending.json()['id']}/approve", {})
    problem(approve, 409, "recording-restricted")
    # The placement is audited with its reason; it is not a status: the recording stays stored.
    (event,) = vault.events("restriction.place")
    assert event["target"] == str(rid)
    assert event["details"]["reason"] == "data subject contests accuracy (art. 18)"
    assert _metadata(vault, rid)["status"] == "stored"


def test_restriction_revokes_running_grants_and_stops_the_stream(
    vault: Vault, rid: uuid.UUID, media: bytes
) -> None:
    gid = vault.grant("eng", rid)
    plan = playback.open_read(vault.ctx, actor=vault.actors["eng"], recording_id=rid,
                              grant_id=gid, range_header=None, now=vault.ctx.now())  # fmt: skip
    chunks = playback.PlaintextStream(vault.ctx, plan)
    first = next(chunks)
    assert first and media.startswith(first)
    placed = vault.restrict(rid)  # its own committed transaction, mid-stream
    assert placed.json()["grants_revoked"] == 1
    vault.clock.advance(playback.RECHECK_EVERY)  # the streaming re-check bound
    with pytest.raises(PermissionDeniedError):
        next(chunks)
    with vault.ctx.db.session() as s:
        grant = s.get(Grant, gid)
        assert grant is not None and grant.revoked_at is not None
    (revoked,) = vault.events("grant.revoke")
    assert revoked["target"] == str(gid)
    assert revoked["details"]["reason"].startswith("restriction of processing: ")
    r = vault.client.get(f"/v1/recordings/{rid}/content", headers=vault.h("eng"))
    problem(r, 403, "forbidden")


def test_a_grant_issued_in_a_race_with_the_restriction_still_opens_nothing(
    vault: Vault, rid: uuid.UUID
) -> None:
    """The rule lives in the re-check too: a request grant that slipped past the placement
    (issued behind the service's back here) neither opens nor keeps streaming."""
    assert vault.restrict(rid).status_code == 201
    gid = vault.grant("eng", rid)
    with vault.ctx.db.session() as s:
        assert not grants.still_valid(s, grant_id=gid, recording_id=rid, now=vault.ctx.now())
    r = vault.client.get(f"/v1/recordings/{rid}/content", params={"grant": str(gid)},
                         headers=vault.h("eng"))  # fmt: skip
    problem(r, 403, "forbidden")


def test_break_glass_stays_possible_and_is_flagged(
    vault: Vault, rid: uuid.UUID, media: bytes
) -> None:
    assert vault.restrict(rid).status_code == 201
    r = vault.post("security", "/v1/break-glass", {
        "recording_ids": [str(rid)], "purpose": "security", "incident_ref": "INC-9",
        "reason": "active account takeover under investigation", "duration_minutes": 30,
    })  # fmt: skip
    assert r.status_code == 201, r.text
    grant = r.json()
    assert grant["restricted"] is True
    read = vault.client.get(f"/v1/recordings/{rid}/content", params={"grant": grant["id"]},
                            headers=vault.h("security"))  # fmt: skip
    assert read.status_code == 200 and read.content == media
    (opened,) = vault.events("grant.break_glass")
    assert opened["details"]["restricted"] is True
    assert opened["details"]["restricted_recording_ids"] == [str(rid)]
    # The after-review shows it: in the review queue and in the review's audit event.
    queue = vault.client.get("/v1/grants", params={"needs_review": "true"},
                             headers=vault.h("security2")).json()  # fmt: skip
    assert [(g["id"], g["restricted"]) for g in queue] == [(grant["id"], True)]
    done = vault.post("security2", f"/v1/grants/{grant['id']}/review",
                      {"comment": "justified: takeover confirmed"})  # fmt: skip
    assert done.status_code == 200, done.text
    (review,) = vault.events("grant.break_glass.review")
    assert review["details"]["restricted"] is True


def test_lifting_restores_access(vault: Vault, rid: uuid.UUID, media: bytes) -> None:
    assert vault.restrict(rid).status_code == 201
    lifted = vault.restrict(rid, lift=True)
    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["lifted_at"] is not None
    assert _metadata(vault, rid)["restricted"] is False
    req = vault.request(rid)
    assert req.status_code == 201, req.text
    ok = vault.post("approver", f"/v1/access-requests/{req.json()['id']}/approve", {})
    assert ok.status_code == 200 and ok.json()["status"] == "approved", ok.text
    read = vault.client.get(f"/v1/recordings/{rid}/content", headers=vault.h("eng"))
    assert read.status_code == 200 and read.content == media
    (event,) = vault.events("restriction.lift")
    assert event["details"]["reason"] == "data subject contests accuracy (art. 18)"
    # Restricting again works: one active restriction at a time, as many as needed over time.
    assert vault.restrict(rid).status_code == 201


def test_retention_keeps_running_on_a_restricted_recording(vault: Vault, rid: uuid.UUID) -> None:
    assert vault.restrict(rid).status_code == 201
    ctx = vault.ctx
    with ctx.db.transaction() as s:
        for purpose in ("troubleshooting", "security"):
            recordings.end_purpose(
                s, actor=vault.actors["privacy"], recording_id=rid, purpose=purpose,
                reason=None, now=ctx.now(),
            )  # fmt: skip
    assert disposal.dispose(ctx, now=ctx.now()).disposed == 1
    assert _metadata(vault, rid)["status"] == "disposed"


def test_restriction_refuses_bad_input_and_the_wrong_people(vault: Vault, rid: uuid.UUID) -> None:
    path = f"/v1/recordings/{rid}/restriction"
    problem(vault.post("privacy", path, {"reason": "short"}), 422, "invalid-input")
    problem(vault.post("privacy", path, {}), 422, "invalid-input")
    problem(vault.post("privacy", path, {"reason": "x" * 3000}), 422, "invalid-input")
    problem(vault.restrict(uuid.uuid4()), 404, "not-found")
    problem(vault.restrict(rid, "privacy-globex"), 404, "not-found")  # out of scope, as missing
    problem(vault.restrict(rid, "eng"), 403, "forbidden")
    problem(vault.restrict(rid, lift=True), 409, "conflict")  # nothing to lift
    assert vault.restrict(rid).status_code == 201
    problem(vault.restrict(rid), 409, "conflict")  # already restricted
    with vault.ctx.db.session() as s:
        assert len(s.exec(select(Restriction)).all()) == 1


def test_restriction_stops_a_running_http_stream(
    vault: Vault, rid: uuid.UUID, media: bytes
) -> None:
    """As the HTTP streaming tests do: the restriction commits while the client reads."""
    gid = vault.grant("eng", rid)
    placed: list[int] = []

    def on_chunk(total: int) -> None:
        if not placed:
            with vault.ctx.db.transaction() as s:
                restriction.place_restriction(
                    s, actor=vault.actors["privacy"], recording_id=rid,
                    reason="data subject contests accuracy (art. 18)", now=vault.ctx.now(),
                )  # fmt: skip
            placed.append(total)
        vault.clock.advance(playback.RECHECK_EVERY)  # time passes while the client reads

    url = f"/v1/recordings/{rid}/content"
    with vault.client.stream("GET", url, params={"grant": str(gid)}, headers=vault.h("eng")) as r:
        assert r.status_code == 200
        got, err = consume(r, on_chunk)
    assert caused_by(err, PermissionDeniedError), err
    assert got == media[: len(got)] and len(got) < len(media)
    assert len(got) - placed[0] <= 2 * SEG  # at most the segments already in flight
