"""Data residency end to end: an EEA tenant's media and keys stay in the EEA region, and reading
them from another region is a transfer the tenant must have authorised (vault.residency)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import timedelta

import pyrage
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from crypto import envelope
from crypto.age import parse_recipient
from crypto.errors import DecryptionError
from jobs.tasks import run as run_job
from tests.jobs.helpers import event_documents
from tests.vault.residency.conftest import EEA, HOME, Regions
from vault import exports, kek
from vault.app import create_app
from vault.authz import Actor
from vault.errors import (
    RegionNotConfiguredError,
    TransferNotAuthorisedError,
    WrappedKeyInvalidError,
)
from vault.models import AuditEvent, ExportKind, KekVersion, RecordingStatus, RegionKekVersion, Role
from vault.recordings import playback, scrub
from vault.retention import erasure, holds, holds_mirror

PROBLEM = "application/problem+json"
TYPE = "https://callvault.dev/problems/"
HOUR = timedelta(hours=1)


def _events(r: Regions, action: str) -> list[dict]:
    return event_documents(r.ctx, action)


def _read(r: Regions, actor: Actor, rid: uuid.UUID, grant_id: uuid.UUID) -> bytes:
    plan = playback.open_read(
        r.ctx, actor=actor, recording_id=rid, grant_id=grant_id, range_header=None,
        now=r.clock(),
    )  # fmt: skip
    return b"".join(playback.PlaintextStream(r.ctx, plan))


# --- where the media and the keys live --------------------------------------------------------


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_an_eea_recording_is_stored_only_in_the_eea_store(
    make_regions: Callable[..., Regions], db: str
) -> None:
    r = make_regions(db=db)
    eea, home = r.tenant("eu-customer", EEA), r.tenant("us-customer", None)
    data = os.urandom(70_000)
    rec = r.ingest(eea, data)
    other = r.ingest(home, b"home region media")
    assert (rec.region, other.region) == (EEA, None)
    assert r.objects(EEA) == [rec.object_key]  # one version, in the EEA bucket
    assert r.objects(HOME) == [other.object_key]  # nothing of the EEA tenant's at home
    # What is stored there is ciphertext that the recording's row describes.
    assert rec.ciphertext_size == r.ctx.store_for(EEA).size(rec.object_key, version_id=None)
    assert not r.ctx.store.exists(rec.object_key)


def test_its_dek_is_wrapped_by_the_eea_mount_which_alone_unwraps_it(regions: Regions) -> None:
    r = regions
    tenant = r.tenant("eu-customer", EEA)
    rec = r.ingest(tenant, b"x" * 1000)
    assert rec.wrapped_dek is not None
    ad = str(tenant.id).encode() + rec.id.bytes
    wrapped = envelope.decode_wrapped(rec.wrapped_dek)
    assert len(r.transit[EEA].unwrap(wrapped, tenant=str(tenant.id), associated_data=ad)) == 32
    # The home mount holds a key of the same name for this tenant once it wraps anything for it;
    # it is another key, and the EEA wrap does not open under it.
    r.transit[HOME].wrap(os.urandom(32), tenant=str(tenant.id), associated_data=ad)
    with pytest.raises(DecryptionError):
        r.transit[HOME].unwrap(wrapped, tenant=str(tenant.id), associated_data=ad)
    with pytest.raises(WrappedKeyInvalidError):
        r.ctx.keys.unwrap_dek(rec.wrapped_dek, tenant_id=tenant.id, recording_id=rec.id)
    with r.ctx.db.session() as s:  # the version is the EEA provider's, recorded as such
        assert s.get(RegionKekVersion, (EEA, rec.kek_version)) is not None


def test_ingest_for_a_region_no_longer_configured_stores_nothing(regions: Regions) -> None:
    r = regions
    tenant = r.tenant("eu-customer", EEA)
    r.ctx.regional_stores.pop(EEA)  # as if the operator dropped the region from the settings
    with pytest.raises(RegionNotConfiguredError):
        r.ingest(tenant, b"never stored")
    with r.ctx.db.session() as s:
        assert s.exec(select(AuditEvent).where(AuditEvent.action == "recording.create")).all() == []
    assert r.objects(EEA) == [] and r.objects(HOME) == []


# --- reads: same region, refused transfer, authorised transfer -----------------------------------


def test_playback_from_the_eea_region_is_no_transfer(regions: Regions) -> None:
    r = regions
    tenant = r.tenant("eu-customer", EEA)
    data = os.urandom(50_000)
    rec = r.ingest(tenant, data)
    reader, _ = r.principal("eu-engineer", tenant=tenant, region=EEA)
    assert _read(r, reader, rec.id, r.grant(reader, rec.id)) == data
    assert _events(r, "residency.transfer") == []


@pytest.mark.parametrize("reader_region", [HOME, None])
def test_a_read_from_another_region_is_refused_and_the_denial_audited(
    regions: Regions, reader_region: str | None
) -> None:
    r = regions
    tenant = r.tenant("eu-customer", EEA)
    rec = r.ingest(tenant, b"secret call")
    # A principal without a region reads from the home region.
    reader, _ = r.principal("us-engineer", tenant=tenant, region=reader_region)
    grant_id = r.grant(reader, rec.id)
    r.authorise_transfers(tenant, "ch")  # a transfer elsewhere does not cover this one
    with pytest.raises(TransferNotAuthorisedError):
        _read(r, reader, rec.id, grant_id)
    denied = _events(r, "permission.denied")
    assert [e["details"]["reason"] for e in denied] == ["transfer-not-authorised"]
    assert denied[0]["target"] == str(rec.id) and denied[0]["tenant_id"] == str(tenant.id)
    assert _events(r, "recording.read") == [] and _events(r, "residency.transfer") == []


def test_the_api_answers_a_refused_transfer_with_its_own_problem(regions: Regions) -> None:
    r = regions
    tenant = r.tenant("eu-customer", EEA)
    rec = r.ingest(tenant, b"secret call")
    reader, key = r.principal("us-engineer", tenant=tenant, region=HOME)
    grant_id = r.grant(reader, rec.id)
    with TestClient(create_app(r.ctx.settings, ctx=r.ctx)) as client:
        resp = client.get(
            f"/v1/recordings/{rec.id}/content", params={"grant": str(grant_id)},
            headers={"Authorization": f"Bearer {key}"},
        )  # fmt: skip
    assert resp.status_code == 403, resp.text
    assert resp.headers["content-type"] == PROBLEM
    assert resp.json()["type"] == TYPE + "transfer-not-authorised"
    assert b"secret call" not in resp.content


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_an_authorised_transfer_is_served_and_audited_with_both_regions(
    make_regions: Callable[..., Regions], db: str
) -> None:
    r = make_regions(db=db)
    tenant = r.tenant("eu-customer", EEA)
    data = os.urandom(30_000)
    rec = r.ingest(tenant, data)
    reader, _ = r.principal("us-engineer", tenant=tenant, region=HOME)
    r.authorise_transfers(tenant, HOME)
    assert _read(r, reader, rec.id, r.grant(reader, rec.id)) == data
    (transfer,) = _events(r, "residency.transfer")
    assert transfer["target"] == str(rec.id) and transfer["actor"] == reader.audit_name
    assert transfer["details"] == {
        "source_region": EEA, "destination_region": HOME, "mechanism": "SCC 2021/914 module 2",
        "instruction_ref": f"DPA-{HOME}-7", "via": "playback",
    }  # fmt: skip
    assert len(_events(r, "recording.read")) == 1
    # The object was read where it lives: the home bucket still holds nothing.
    assert r.objects(HOME) == []


def test_withdrawing_the_authorisation_stops_the_next_read(regions: Regions) -> None:
    """The check is made at read time: a grant issued while the transfer was allowed does not
    carry the permission forward."""
    r = regions
    tenant = r.tenant("eu-customer", EEA)
    rec = r.ingest(tenant, b"call")
    reader, _ = r.principal("us-engineer", tenant=tenant, region=HOME)
    r.authorise_transfers(tenant, HOME)
    grant_id = r.grant(reader, rec.id)
    assert _read(r, reader, rec.id, grant_id) == b"call"
    r.authorise_transfers(tenant)  # an approved change that lists no transfer
    with pytest.raises(TransferNotAuthorisedError):
        _read(r, reader, rec.id, grant_id)


# --- removal and keys, per region -------------------------------------------------------------


def test_disposal_removes_the_object_from_the_eea_store(regions: Regions) -> None:
    r = regions
    eea, home = r.tenant("eu-customer", EEA), r.tenant("us-customer", None)
    rec, other = r.ingest(eea, b"eea media"), r.ingest(home, b"home media")
    r.clock.advance(days=400)  # past every purpose's retention
    run_job("dispose", r.ctx, r.clock())
    assert r.row(rec.id).status == r.row(other.id).status == RecordingStatus.disposed
    assert r.objects(EEA) == []
    # What remains at home is the signed disposal record (opaque ids and hashes, no media).
    assert [o.split("/")[:2] for o in r.objects(HOME)] == [["retention", "disposal-records"]]


def test_erasure_removes_the_object_and_waits_for_the_eea_kek(regions: Regions) -> None:
    r = regions
    tenant = r.tenant("eu-customer", EEA)
    rec = r.ingest(tenant, b"eea media", call_id="call-7")
    privacy = Actor(id=uuid.uuid4(), name="dpo", role=Role.privacy, owner="dpo", all_tenants=True)
    with r.ctx.db.transaction() as s:
        req = erasure.create_request(
            s, actor=privacy, policy=r.ctx.policy, tenant=tenant.name, call_id="call-7",
            reason="data subject request", now=r.clock(),
        )  # fmt: skip
    erasure.process(r.ctx, now=r.clock())
    assert r.objects(EEA) == []
    assert r.row(rec.id).status == RecordingStatus.disposed
    with r.ctx.db.session() as s:
        assert erasure.get_request(s, actor=privacy, request_id=req.id, now=r.clock()).status == (
            "awaiting_kek"
        )
    r.clock.advance(minutes=5)
    kek.kek_cycle(r.ctx, now=r.clock(), force=True, holder="test")  # retires EEA v1
    erasure.process(r.ctx, now=r.clock())
    with r.ctx.db.session() as s:
        done = erasure.get_request(s, actor=privacy, request_id=req.id, now=r.clock())
    assert done.status == "complete"


def test_the_kek_cycle_rotates_and_rewraps_each_region_with_its_own_provider(
    regions: Regions,
) -> None:
    r = regions
    eea, home = r.tenant("eu-customer", EEA), r.tenant("us-customer", None)
    rec, other = r.ingest(eea, b"eea media"), r.ingest(home, b"home media")
    old = r.row(rec.id).wrapped_dek
    r.clock.advance(minutes=1)
    result = kek.kek_cycle(r.ctx, now=r.clock(), force=True, holder="test")
    assert (result.rotated_to, result.rewrapped, result.retired) == (2, 1, [1])
    assert (result.regions[EEA].rotated_to, result.regions[EEA].rewrapped) == (2, 1)
    assert result.regions[EEA].retired == [1]
    assert f"region {EEA}: rotated to v2" in result.summary()
    assert r.transit[EEA].live_versions() == r.transit[HOME].live_versions() == [2]
    moved = r.row(rec.id)
    assert moved.kek_version == 2 and moved.wrapped_dek != old and moved.region == EEA
    assert r.row(other.id).kek_version == 2
    r.ctx.keys_for(EEA).unwrap_dek(moved.wrapped_dek or "", tenant_id=eea.id, recording_id=rec.id)
    with r.ctx.db.session() as s:
        homes = {k.version: k.retired_at is not None for k in s.exec(select(KekVersion)).all()}
        regional = {
            (k.region, k.version): k.retired_at is not None
            for k in s.exec(select(RegionKekVersion)).all()
        }
    assert homes == {1: True, 2: False}
    assert regional == {(EEA, 1): True, (EEA, 2): False}
    rotations = [e["details"] for e in _events(r, "kek.rotate")]
    assert [d.get("region") for d in rotations] == [None, EEA]


def test_a_legal_hold_flags_the_object_in_its_own_regions_bucket(regions: Regions) -> None:
    r = regions
    tenant = r.tenant("eu-customer", EEA)
    rec = r.ingest(tenant, b"evidence")
    with r.ctx.db.transaction() as s:
        hold = holds.create_hold(
            s, actor=Actor.operator(), store=r.ctx.store_for, case_ref="CASE-9",
            reason="litigation", recording_ids=[rec.id], now=r.clock(),
        )  # fmt: skip
    client, bucket = r.buckets[EEA]
    assert client.is_object_legal_hold_enabled(bucket, rec.object_key, version_id=rec.version_id)
    # The repair job finds a flag lost behind the store's back in the EEA bucket.
    client.disable_object_legal_hold(bucket, rec.object_key, version_id=rec.version_id)
    assert holds_mirror.sync_object_locks(r.ctx) == 1
    assert client.is_object_legal_hold_enabled(bucket, rec.object_key, version_id=rec.version_id)
    with r.ctx.db.transaction() as s:
        holds.release_hold(
            s, actor=Actor.operator(), store=r.ctx.store_for, hold_id=hold.id, reason="settled",
            now=r.clock(),
        )  # fmt: skip
    assert not client.is_object_legal_hold_enabled(
        bucket, rec.object_key, version_id=rec.version_id
    )


def test_scrub_checks_each_recording_in_its_own_region(regions: Regions) -> None:
    r = regions
    eea, home = r.tenant("eu-customer", EEA), r.tenant("us-customer", None)
    r.ingest(eea, os.urandom(20_000))
    r.ingest(home, os.urandom(20_000))
    result = scrub.scrub(r.ctx, now=r.clock(), sample=10)
    assert (result.sampled, result.ok, result.failed, result.errors) == (2, 2, [], 0)


def test_an_export_of_an_eea_recording_stays_in_the_eea_store(regions: Regions) -> None:
    """A disclosure or hand-off export is made from, and kept in, the recording's region."""
    r = regions
    data = os.urandom(50_000)
    rec = r.ingest(r.tenant("eu-customer", EEA), data)
    ident = pyrage.x25519.Identity.generate()
    made = exports.produce(
        r.ctx, kind=ExportKind.disclosure, subject_id=uuid.uuid4(), recording_id=rec.id,
        recipient=parse_recipient(str(ident.to_public())), expires_at=r.clock() + HOUR,
        now=r.clock(),
    )  # fmt: skip
    key = f"exports/{made.export_id}"
    assert key in r.objects(EEA) and key not in r.objects(HOME)
    resp = exports.serve(
        r.ctx, export_id=made.export_id, token=made.token, kind=ExportKind.disclosure,
        range_header=None, actor_label="authority", now=r.clock(),
    )  # fmt: skip
    assert pyrage.decrypt(b"".join(resp.body), [ident]) == data
    assert exports.purge(r.ctx, now=r.clock()) == 1  # completed: deleted from the EEA store
    assert key not in r.objects(EEA)
