"""Hand-offs end to end: the worker issues, the sub-processor claims the token once, downloads
once (Range resume until complete), 403 after, 410 after expiry; the rules that hold a hand-off
back; another sub-processor's key; removal; transfers across regions."""

from __future__ import annotations

import json
from datetime import timedelta

import pyrage
import pytest
from sqlmodel import select

from tests.jobs.helpers import events
from tests.vault.subprocessors.conftest import MEDIA, OP, World, add_sp
from vault.models import Export, Handoff
from vault.privacy import restriction
from vault.recordings import metadata as recordings

PROBLEM = "https://callvault.dev/problems/"


def _only_handoff(world: World) -> dict:
    (item,) = world.handoffs()
    return item


def _exports(world: World) -> list[Export]:
    with world.ctx.db.session() as s:
        return list(s.exec(select(Export)).all())


def _handoff_rows(world: World) -> list[Handoff]:
    with world.ctx.db.session() as s:
        return list(s.exec(select(Handoff)).all())


def test_a_handoff_downloads_once_with_resume_and_decrypts_to_the_media(world: World) -> None:
    assert world.run_job().issued == 1
    item = _only_handoff(world)
    assert item["state"] == "open" and item["recording_id"] == str(world.rid)
    token = world.token(item["id"])

    half = item["size"] // 2
    first = world.media(item["id"], token, f"bytes=0-{half - 1}")
    assert first.status_code == 206
    rest = world.media(item["id"], token, f"bytes={half}-")
    assert rest.status_code == 206
    assert pyrage.decrypt(first.content + rest.content, [world.identity]) == MEDIA

    again = world.media(item["id"], token)
    assert again.status_code == 403 and again.json()["type"] == PROBLEM + "export-used"
    assert _only_handoff(world)["state"] == "completed"
    # The receipt names the sub-processor's principal (an opaque id), bytes and hash.
    (done,) = events(world.ctx, "export.complete", item_export(world))
    receipt = json.loads(done.canonical)
    assert receipt["details"]["bytes"] == item["size"]
    assert receipt["details"]["export_sha256"] == item["sha256"]
    assert receipt["actor"] != "system:cli" and "scribe" not in receipt["actor"]
    (issued,) = events(world.ctx, "handoff.issue")
    assert token not in issued.canonical and "call-1" not in issued.canonical


def item_export(world: World) -> str:
    (row,) = _handoff_rows(world)
    return str(row.export_id)


def test_the_token_is_given_once_and_never_in_a_url(lite: World) -> None:
    lite.run_job()
    item = _only_handoff(lite)
    lite.token(item["id"])
    r = lite.client.post(f"/v1/handoffs/{item['id']}/claim", headers=lite.h("sp"))
    assert r.status_code == 409 and r.json()["type"] == PROBLEM + "handoff-state"
    (row,) = _handoff_rows(lite)
    assert row.sealed_token is None and row.claimed_at is not None
    # Without the token, or with a wrong one: the same 403.
    for token in (None, "x" * 43):
        r = lite.media(item["id"], token)
        assert r.status_code == 403 and r.json()["type"] == PROBLEM + "export-denied"


def test_an_expired_handoff_is_410(lite: World) -> None:
    lite.run_job()
    item = _only_handoff(lite)
    token = lite.token(item["id"])
    lite.clock.advance(minutes=60)
    r = lite.media(item["id"], token)
    assert r.status_code == 410 and r.json()["type"] == PROBLEM + "export-gone"
    assert _only_handoff(lite)["state"] == "expired"


def test_an_unclaimed_token_is_forgotten_after_expiry(lite: World) -> None:
    lite.run_job()
    lite.clock.advance(minutes=59)
    assert lite.run_job().tokens_forgotten == 0
    lite.clock.advance(minutes=1)
    assert lite.run_job().tokens_forgotten == 1
    (row,) = _handoff_rows(lite)
    assert row.sealed_token is None
    r = lite.client.post(f"/v1/handoffs/{row.id}/claim", headers=lite.h("sp"))
    assert r.status_code == 409
    assert lite.run_job().tokens_forgotten == 0


def test_the_expiry_is_the_setting_at_most_an_hour(make_ctx, clock) -> None:  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    from vault.config import Settings

    with pytest.raises(ValidationError):
        Settings(_env_file=None, handoff_minutes=61)  # type: ignore[call-arg]
    from tests.vault.subprocessors.conftest import build_world

    ctx = make_ctx(db="sqlite", store="local", clock=clock, handoff_minutes=5)
    for world in build_world(ctx, clock):
        world.run_job()
        item = _only_handoff(world)
        assert item["expires_at"].startswith("2026-11-25T12:05")


def test_the_job_is_idempotent(lite: World) -> None:
    assert lite.run_job().issued == 1
    assert lite.run_job().issued == 0
    assert len(_handoff_rows(lite)) == 1 and len(_exports(lite)) == 1


def test_a_tenant_without_opt_in_gets_no_handoff(lite: World) -> None:
    lite.ingest(tenant="globex")  # globex never opted in
    lite.run_job()
    assert {r.recording_id for r in _handoff_rows(lite)} == {lite.rid}


def _opt_out(world: World) -> None:
    world.authorise(subprocessors=[
        {"subprocessor": "scribe", "opted_in": False, "instruction_ref": "ORDER-2"}
    ])  # fmt: skip


def _restrict(world: World) -> None:
    with world.ctx.db.transaction() as s:
        restriction.place_restriction(
            s, actor=OP, recording_id=world.rid, now=world.clock(),
            reason="the data subject objected to processing",
        )  # fmt: skip


def _end_purpose(world: World) -> None:
    with world.ctx.db.transaction() as s:
        recordings.end_purpose(s, actor=OP, recording_id=world.rid, purpose="transcription",
                               reason="customer asked", now=world.clock())  # fmt: skip


SPOILERS = {"opted-out": _opt_out, "restricted": _restrict, "purpose-ended": _end_purpose}


@pytest.mark.parametrize("spoil", sorted(SPOILERS))
def test_no_handoff_when_a_rule_does_not_hold(lite: World, spoil: str) -> None:
    SPOILERS[spoil](lite)
    assert lite.run_job().issued == 0
    assert _handoff_rows(lite) == [] and _exports(lite) == []


@pytest.mark.parametrize("spoil", sorted(SPOILERS))
def test_an_open_handoff_is_withdrawn_when_a_rule_stops_holding(lite: World, spoil: str) -> None:
    lite.run_job()
    item = _only_handoff(lite)
    token = lite.token(item["id"])
    SPOILERS[spoil](lite)
    r = lite.media(item["id"], token)
    assert r.status_code == 410 and r.json()["type"] == PROBLEM + "handoff-withdrawn"
    (export,) = _exports(lite)
    assert export.revoked_at is not None
    assert len(events(lite.ctx, "handoff.withdraw")) == 1


def test_a_recording_without_the_purpose_is_not_handed_off(lite: World) -> None:
    lite.ingest(purposes=("troubleshooting",))
    lite.run_job()
    assert {r.recording_id for r in _handoff_rows(lite)} == {lite.rid}


def test_another_subprocessors_key_sees_no_such_handoff(lite: World) -> None:
    lite.run_job()
    item = _only_handoff(lite)
    token = lite.token(item["id"])
    assert lite.handoffs("sp2") == []
    r = lite.media(item["id"], token, who="sp2")
    assert r.status_code == 404
    r = lite.client.post(f"/v1/handoffs/{item['id']}/claim", headers=lite.h("sp2"))
    assert r.status_code == 404
    denials = events(lite.ctx, "permission.denied")
    assert any(json.loads(e.canonical)["details"].get("reason") == "not-recipient"
               for e in denials)  # fmt: skip
    # The right key still works: the attempt consumed nothing.
    assert lite.media(item["id"], token).status_code == 200


def test_removal_revokes_open_handoffs_and_the_subprocessors_keys(lite: World) -> None:
    lite.run_job()
    item = _only_handoff(lite)
    token = lite.token(item["id"])
    r = lite.client.post("/v1/subprocessors/scribe/remove", json={"reason": "contract ended"},
                         headers=lite.h("admin"))  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["removed_at"] is not None
    (export,) = _exports(lite)
    assert export.revoked_at is not None and export.revoke_reason == "subprocessor-removed"
    assert lite.media(item["id"], token).status_code == 401  # its principal is revoked
    (removed,) = events(lite.ctx, "subprocessor.remove")
    details = json.loads(removed.canonical)["details"]
    assert details["handoffs_revoked"] == 1 and details["principals_revoked"] == 1
    # Nothing new is handed off to a removed entry.
    lite.ingest()
    assert lite.run_job().issued == 0


def test_a_crossregion_handoff_without_a_transfer_authorisation_is_refused(lite: World) -> None:
    add_sp(lite.ctx, "farscribe", pyrage.x25519.Identity.generate(), region="us")
    lite.authorise(subprocessors=[
        {"subprocessor": "farscribe", "opted_in": True, "instruction_ref": "ORDER-3"}
    ])  # fmt: skip
    done = lite.run_job()
    assert done.issued == 0 and done.transfer_refused == 1
    assert _handoff_rows(lite) == [] and _exports(lite) == []


def _far_transfer(world: World) -> None:
    """A sub-processor in another region, opted in, with the transfer listed."""
    add_sp(world.ctx, "farscribe", pyrage.x25519.Identity.generate(), region="us")
    world.authorise(
        subprocessors=[{"subprocessor": "farscribe", "opted_in": True,
                        "instruction_ref": "ORDER-3"}],
        transfers=[{"destination": "us", "mechanism": "SCC 2021/914 module 3",
                    "instruction_ref": "ORDER-3"}],
    )  # fmt: skip


def test_a_listed_transfer_is_handed_off_and_audited_with_both_regions(lite: World) -> None:
    _far_transfer(lite)
    assert lite.run_job().issued == 1
    (row,) = _handoff_rows(lite)
    assert (row.source_region, row.destination_region) == ("eu", "us")
    (event,) = events(lite.ctx, "handoff.transfer")
    details = json.loads(event.canonical)["details"]
    assert details["from_region"] == "eu" and details["to_region"] == "us"
    assert details["mechanism"] == "SCC 2021/914 module 3"


def test_a_tenant_without_a_region_needs_a_transfer_too(lite: World) -> None:
    from vault.identity.tenants import create_tenant

    with lite.ctx.db.transaction() as s:
        create_tenant(s, actor=OP, name="nowhere", region=None, now=lite.clock())
    lite.authorise("nowhere", subprocessors=[
        {"subprocessor": "scribe", "opted_in": True, "instruction_ref": "ORDER-4"}
    ])  # fmt: skip
    lite.ingest(tenant="nowhere")
    done = lite.run_job()
    assert done.issued == 1 and done.transfer_refused == 1  # acme's only
    assert {r.recording_id for r in _handoff_rows(lite)} == {lite.rid}


def test_the_issue_rechecks_the_rules_after_producing(lite: World, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from vault import exports
    from vault.subprocessors import handoffs

    real = exports.produce

    def produce_then_restrict(*a, **kw):  # type: ignore[no-untyped-def]
        out = real(*a, **kw)
        _restrict(lite)  # a privacy officer restricts it while the export was made
        return out

    monkeypatch.setattr(handoffs.exports, "produce", produce_then_restrict)
    done = lite.run_job()
    assert done.cancelled == 1 and done.issued == 0
    (export,) = _exports(lite)
    assert export.revoked_at is not None
    (row,) = _handoff_rows(lite)
    assert row.status == "cancelled" and row.failure == "recording-restricted"
    assert lite.handoffs() == []


def test_a_stale_pending_claim_is_retaken(lite: World) -> None:
    with lite.ctx.db.transaction() as s:
        s.add(Handoff(subprocessor_id=_sp_id(lite), recording_id=lite.rid,
                      tenant_id=_tenant_id(lite), status="pending", created_at=lite.clock(),
                      lease_until=lite.clock() + timedelta(minutes=15)))  # fmt: skip
    assert lite.run_job().issued == 0  # its worker may still be at it
    lite.clock.advance(minutes=16)
    assert lite.run_job().issued == 1
    assert _only_handoff(lite)["state"] == "open"


def test_a_stale_claim_whose_rule_no_longer_holds_is_cancelled(lite: World) -> None:
    with lite.ctx.db.transaction() as s:
        s.add(Handoff(subprocessor_id=_sp_id(lite), recording_id=lite.rid,
                      tenant_id=_tenant_id(lite), status="pending", created_at=lite.clock(),
                      lease_until=lite.clock()))  # fmt: skip
    _opt_out(lite)
    assert lite.run_job().issued == 0
    (row,) = _handoff_rows(lite)
    assert row.status == "cancelled" and row.failure == "not-opted-in"
    assert _exports(lite) == []


def _sp_id(world: World):  # type: ignore[no-untyped-def]
    from vault.models import Subprocessor

    with world.ctx.db.session() as s:
        return s.exec(select(Subprocessor.id).where(Subprocessor.name == "scribe")).one()


def _tenant_id(world: World):  # type: ignore[no-untyped-def]
    from tests.vault.subprocessors.conftest import recording

    return recording(world.ctx, world.rid).tenant_id


def test_two_workers_at_once_make_one_handoff_per_recording(make_ctx, clock) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL: the claim's SKIP LOCKED and the unique pair, under two concurrent runs."""
    import threading

    from tests.vault.subprocessors.conftest import build_world
    from vault.subprocessors import handoffs

    ctx = make_ctx(db="postgres", store="local", clock=clock)
    for world in build_world(ctx, clock):
        extra = [world.ingest() for _ in range(3)]
        barrier, results = threading.Barrier(2), []

        def work(barrier: threading.Barrier = barrier, results: list = results) -> None:
            barrier.wait()
            results.append(handoffs.run(ctx, now=clock()))

        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert sum(r.issued for r in results) == 4 and len(results) == 2
        rows = _handoff_rows(world)
        assert sorted(str(r.recording_id) for r in rows) == sorted(
            str(x) for x in [world.rid, *extra]
        )


def _subject_access(world: World, tenant: str = "acme") -> dict:
    r = world.client.post("/v1/subject-access", headers=world.h("dpo"),
                          json={"tenant": tenant, "call_ids": ["call-1"]})  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()


def test_subject_access_lists_what_a_subprocessor_was_given(world: World) -> None:
    assert _subject_access(world)["handoffs"] == []  # nothing issued yet
    assert world.run_job().issued == 1
    (given,) = _subject_access(world)["handoffs"]
    item = _only_handoff(world)
    assert given["handoff_id"] == item["id"] and given["recording_id"] == str(world.rid)
    # The sub-processor as its public list shows it; never the contract, the token or its key.
    assert (given["subprocessor"], given["purpose"], given["region"]) == (
        "scribe", "transcription", "eu")  # fmt: skip
    assert given["state"] == "open" and given["downloaded_at"] is None
    assert given["transfer"] is None and given["expires_at"] > given["issued_at"]
    world.media(item["id"], world.token(item["id"]))
    answer = _subject_access(world)
    (given,) = answer["handoffs"]
    assert given["state"] == "completed" and given["downloaded_at"] is not None
    assert "DPA-2026-017" not in json.dumps(answer)
    # Counted in the audit event, which names no call id.
    last = events(world.ctx, "privacy.subject_access")[-1]
    assert json.loads(last.canonical)["details"]["handoffs"] == 1
    assert "call-1" not in last.canonical
    # Another tenant's subject access under the same call id shows none of it.
    world.ingest(tenant="globex")
    assert _subject_access(world, tenant="globex")["handoffs"] == []


def test_subject_access_shows_a_handoffs_transfer_across_regions(lite: World) -> None:
    _far_transfer(lite)
    assert lite.run_job().issued == 1
    (given,) = _subject_access(lite)["handoffs"]
    assert given["subprocessor"] == "farscribe" and given["region"] == "us"
    assert given["transfer"] == {"from": "eu", "to": "us", "mechanism": "SCC 2021/914 module 3"}
