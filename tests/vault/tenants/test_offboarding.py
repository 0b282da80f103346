"""Tenant offboarding end to end on both backends: four-eyes by owner, ingest refused, principals
withdrawn, everything unheld erased with a first signed receipt, the held recording reported and
deferred, then a second receipt once the hold is released; the tenant's key gone at the end."""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import select

from crypto.keys.transit import TransitKeyProvider
from jobs import tasks
from tests.support.api import Api, principal_key
from tests.support.clock import FakeClock
from tests.vault.test_recordings import CALL_ID, assert_chain_ok, do_ingest, make_tenant
from tests.vault.test_retention import hold, ingest, kek_cycle, release, row
from vault.authz import Actor
from vault.context import Context
from vault.errors import KeyDestroyedError, KeyProviderUnavailableError, TenantOffboardingError
from vault.keys import Keys
from vault.models import (
    AuditEvent,
    OffboardingErasure,
    OffboardingReceipt,
    Principal,
    PrincipalTenant,
    RecordingStatus,
    Role,
    Tenant,
)
from vault.tenants import offboarding

S = RecordingStatus


def tenant_row(ctx: Context, name: str) -> Tenant:
    with ctx.db.session() as s:
        return s.exec(select(Tenant).where(Tenant.name == name)).one()


def propose_and_approve(api: Api, name: str = "acme") -> dict[str, Any]:
    c, h = api.client, api.h
    body = {"reason": "contract ended"}
    r = c.post(f"/v1/tenants/{name}/offboard", json=body, headers=h("admin"))
    assert r.status_code == 202, r.text
    change = r.json()
    assert change["status"] == "pending" and change["kind"] == "offboard"
    # Nothing happens before the approval.
    assert c.get(f"/v1/tenants/{name}", headers=h("admin")).json()["status"] == "active"
    r = c.post(
        f"/v1/tenants/{name}/offboard/approve", json={"change_id": change["id"]}, headers=h("dpo")
    )
    assert r.status_code == 200, r.text
    return r.json()


def erasure_job(ctx: Context, clock: FakeClock) -> str:
    return tasks.run("erasure", ctx, clock())


def offboarding_view(api: Api, name: str = "acme") -> dict[str, Any]:
    r = api.client.get(f"/v1/tenants/{name}/offboarding", headers=api.h("dpo"))
    assert r.status_code == 200, r.text
    return r.json()


def verified(ctx: Context, receipt: dict[str, Any]) -> dict[str, Any]:
    doc = offboarding.verify_receipt(
        ctx.keys.signing_public_key(), receipt["canonical"], receipt["signature"]
    )
    assert doc == receipt["document"]
    return doc


def shred_cycle(ctx: Context, clock: FakeClock) -> None:
    """One erasure run (shreds), a KEK rotation a week later (retires), one more run (settles)."""
    erasure_job(ctx, clock)
    clock.advance(days=7)
    assert kek_cycle(ctx, clock(), force=True)
    clock.advance(minutes=5)
    erasure_job(ctx, clock)


def test_offboarding_with_a_held_recording_defers_then_completes_with_a_second_receipt(
    api: Api, clock: FakeClock
) -> None:
    ctx, c, h = api.ctx, api.client, api.h
    acme, globex = tenant_row(ctx, "acme"), tenant_row(ctx, "globex")
    kept = ingest(ctx, acme)
    gone = ingest(ctx, acme, purposes=("troubleshooting", "fraud"))
    other = ingest(ctx, globex)
    backup = row(ctx, gone.id).wrapped_dek  # as a database backup would keep it
    assert backup is not None
    case = hold(ctx, recording_ids=[kept.id])

    approved = propose_and_approve(api)
    assert approved["status"] == "approved"
    view = offboarding_view(api)
    assert view["status"] == "offboarding"
    assert view["due_at"] == (clock() + timedelta(days=60)).isoformat().replace("+00:00", "Z")
    listing = c.get("/v1/tenants", headers=h("admin")).json()
    assert {t["name"]: t["status"] for t in listing} == {"acme": "offboarding", "globex": "active"}

    # Principals: the acme-only engineer is revoked; the two-tenant one keeps only globex.
    with ctx.db.session() as s:
        eng = s.exec(select(Principal).where(Principal.name == "eng")).one()
        eng2 = s.exec(select(Principal).where(Principal.name == "eng2")).one()
        scope = s.exec(
            select(PrincipalTenant.tenant_id).where(PrincipalTenant.principal_id == eng2.id)
        ).all()
        assert eng.revoked_at is not None and eng2.revoked_at is None
        assert set(scope) == {globex.id}
    assert c.get("/v1/recordings?tenant=acme", headers=h("eng")).status_code == 401

    # New ingest is refused, over HTTP and in the service.
    r = c.post(
        "/v1/recordings?tenant=acme&purposes=troubleshooting", content=b"late body",
        headers={**h("ingest"), "Content-Type": "video/webm"},
    )  # fmt: skip
    # The ingest key itself was acme-only, so it is revoked: a 401 first.
    assert r.status_code == 401
    with pytest.raises(TenantOffboardingError):
        do_ingest(ctx, Actor.operator(), "acme")

    # First pass: everything unheld is erased; the held recording is reported; receipt 1.
    shred_cycle(ctx, clock)
    view = offboarding_view(api)
    assert view["status"] == "deferred"
    assert view["deferred"] == [{"recording_id": str(kept.id), "holds": [str(case.id)]}]
    assert row(ctx, gone.id).status == S.disposed and row(ctx, gone.id).call_id is None
    assert row(ctx, kept.id).status == S.stored and row(ctx, other.id).status == S.stored
    with pytest.raises(KeyDestroyedError):  # the backup's copy of the DEK opens no more
        ctx.keys.unwrap_dek(backup, tenant_id=acme.id, recording_id=gone.id)
    (first,) = view["receipts"]
    doc = verified(ctx, first)
    assert doc["status"] == "deferred" and doc["seq"] == 1 and doc["recordings_erased"] == 1
    assert doc["deferred"] == view["deferred"] and doc["tenant_key_deleted"] is None
    assert doc["on_time"] is True and len(doc["erasure_requests"]) == 1
    assert doc["erasure_requests"][0]["receipt_sha256"]
    assert tenant_row(ctx, "acme").status == "deferred"

    # Idempotent: another run changes nothing and signs no second receipt.
    erasure_job(ctx, clock)
    assert len(offboarding_view(api)["receipts"]) == 1

    # The hold is released: the rest goes, the tenant's key too, and a second receipt follows.
    release(ctx, case.id)
    shred_cycle(ctx, clock)
    view = offboarding_view(api)
    assert view["status"] == "offboarded" and view["deferred"] == []
    assert view["key_deleted_at"] is not None and len(view["receipts"]) == 2
    second = verified(ctx, view["receipts"][1])
    assert second["status"] == "offboarded" and second["seq"] == 2
    assert second["recordings_erased"] == 2 and len(second["erasure_requests"]) == 2
    assert second["previous_receipt_sha256"] == _sha(first["canonical"])
    assert second["tenant_key_deleted"] is False  # local keyring: one global KEK, no entry
    assert row(ctx, kept.id).status == S.disposed and row(ctx, other.id).status == S.stored
    assert c.get("/v1/tenants/acme", headers=h("admin")).json()["status"] == "offboarded"

    # Audited, and nothing in the chain names the call.
    with ctx.db.session() as s:
        actions = [e.action for e in s.exec(select(AuditEvent))]
        texts = [e.canonical for e in s.exec(select(AuditEvent))]
    for action in ("tenant.change.propose", "tenant.change.approve", "tenant.key.delete"):
        assert action in actions
    assert actions.count("tenant.offboard.receipt") == 2
    assert not any(CALL_ID in t for t in texts)
    assert_chain_ok(ctx)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_self_approval_by_the_same_owner_with_another_key_is_refused(
    api: Api, clock: FakeClock
) -> None:
    c, h = api.client, api.h
    change = c.post(
        "/v1/tenants/acme/offboard", json={"reason": "contract ended"}, headers=h("admin")
    ).json()
    r = c.post(
        "/v1/tenants/acme/offboard/approve", json={"change_id": change["id"]},
        headers=h("admin-as-dpo"),
    )  # fmt: skip
    assert r.status_code == 403 and r.json()["type"].endswith("/forbidden"), r.text
    assert "another owner" in r.json()["detail"]
    # The admin role cannot approve at all, and the proposal stays pending.
    r = c.post(
        "/v1/tenants/acme/offboard/approve", json={"change_id": change["id"]}, headers=h("admin")
    )
    assert r.status_code == 403
    pending = c.get("/v1/tenants/acme/changes", headers=h("dpo")).json()
    assert [p["id"] for p in pending] == [change["id"]]
    assert c.get("/v1/tenants/acme", headers=h("dpo")).json()["status"] == "active"


def test_an_offboarding_tenant_refuses_ingest_with_its_problem_type(
    api: Api, clock: FakeClock
) -> None:
    ctx, c, h = api.ctx, api.client, api.h
    # A service key over all tenants keeps working, and meets the refusal itself.
    api.keys["svc"] = principal_key(ctx, "svc", "ingest", [])
    propose_and_approve(api)
    r = c.post(
        "/v1/recordings?tenant=acme&purposes=troubleshooting", content=b"late body",
        headers={**h("svc"), "Content-Type": "video/webm"},
    )  # fmt: skip
    assert r.status_code == 409, r.text
    assert r.json()["type"].endswith("/tenant-offboarding")
    ok = c.post(
        "/v1/recordings?tenant=globex&purposes=troubleshooting", content=b"fine body",
        headers={**h("svc"), "Content-Type": "video/webm"},
    )  # fmt: skip
    assert ok.status_code == 201, ok.text
    # A second proposal for an offboarding tenant is refused too.
    again = c.post("/v1/tenants/acme/offboard", json={"reason": "again"}, headers=h("admin"))
    assert again.status_code == 409 and again.json()["type"].endswith("/tenant-offboarding")


@pytest.mark.parametrize("backend", ["postgres-s3"], indirect=True)
def test_offboarding_deletes_the_tenants_transit_key(
    ctx: Context, clock: FakeClock, bao: Any
) -> None:
    provider = TransitKeyProvider(bao.url, bao.token, key_prefix=f"off_{secrets.token_hex(4)}")
    ctx.keys = Keys(provider)
    acme = make_tenant(ctx)
    kek_cycle(ctx, clock())
    rec = ingest(ctx, acme)
    name = provider.key_name(str(acme.id))
    assert provider._read(name) is not None
    with ctx.db.transaction() as s:
        admin = Actor(id=uuid.uuid4(), name="a", role=Role.admin, owner="o-admin", all_tenants=True)
        change = offboarding.propose(s, actor=admin, tenant="acme", reason="closed", now=clock())
    _approve_as_dpo(ctx, clock, change.id)
    shred_cycle(ctx, clock)
    with ctx.db.session() as s:
        assert s.get(Tenant, acme.id).status == "offboarded"  # type: ignore[union-attr]
    assert row(ctx, rec.id).status == S.disposed
    assert provider._read(name) is None  # the per-tenant key is gone, every version of it
    assert provider.delete_tenant_key(str(acme.id)) is True  # idempotent: a second worker
    with ctx.db.session() as s:
        receipt = s.exec(select(AuditEvent).where(AuditEvent.action == "tenant.key.delete")).one()
        assert json.loads(receipt.canonical)["details"]["provider_key_deleted"] is True


def _approve_as_dpo(ctx: Context, clock: FakeClock, change_id: Any) -> None:
    dpo = Actor(id=uuid.uuid4(), name="dpo", role=Role.privacy, owner="o-dpo", all_tenants=True)
    with ctx.db.transaction() as s:
        offboarding.approve(
            s, actor=dpo, policy=ctx.policy, tenant="acme", change_id=change_id, now=clock()
        )


@pytest.mark.parametrize("backend", ["postgres-s3"], indirect=True)
def test_concurrent_workers_open_one_erasure_and_sign_one_receipt(
    ctx: Context, clock: FakeClock
) -> None:
    acme = make_tenant(ctx)
    kek_cycle(ctx, clock())
    for _ in range(3):
        ingest(ctx, acme)
    with ctx.db.transaction() as s:
        admin = Actor(id=uuid.uuid4(), name="a", role=Role.admin, owner="o-admin", all_tenants=True)
        change = offboarding.propose(s, actor=admin, tenant="acme", reason="closed", now=clock())
    _approve_as_dpo(ctx, clock, change.id)
    start = threading.Barrier(2)

    def worker() -> None:
        start.wait()
        erasure_job(ctx, clock)

    for _ in range(2):  # shred, then (after the KEK is retired) settle: both steps raced
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        clock.advance(days=7)
        assert kek_cycle(ctx, clock(), force=True)
    with ctx.db.session() as s:
        opened = s.exec(select(OffboardingErasure)).all()
        signed = s.exec(select(OffboardingReceipt)).all()
        events = s.exec(
            select(AuditEvent).where(AuditEvent.action == "tenant.offboard.receipt")
        ).all()
    assert len(opened) == 1
    assert [r.seq for r in signed] == [1] and signed[0].signature
    assert len(events) == 1


@pytest.mark.parametrize("backend", ["sqlite-local"], indirect=True)
def test_a_key_provider_outage_leaves_the_offboarding_for_the_next_run(
    ctx: Context, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tenant(ctx)  # no recordings: the key is all there is left to delete
    with ctx.db.transaction() as s:
        admin = Actor(id=uuid.uuid4(), name="a", role=Role.admin, owner="o-admin", all_tenants=True)
        change = offboarding.propose(s, actor=admin, tenant="acme", reason="closed", now=clock())
    _approve_as_dpo(ctx, clock, change.id)

    def down(*_a: Any, **_k: Any) -> bool:
        raise KeyProviderUnavailableError("transit down")

    with monkeypatch.context() as m:
        m.setattr(ctx.keys, "delete_tenant_key", down)
        erasure_job(ctx, clock)  # the job itself does not fail
    with ctx.db.session() as s:
        assert s.exec(select(Tenant)).one().status == "offboarding"
        assert s.exec(select(OffboardingReceipt)).all() == []
    erasure_job(ctx, clock)
    with ctx.db.session() as s:
        assert s.exec(select(Tenant)).one().status == "offboarded"
        assert [r.seq for r in s.exec(select(OffboardingReceipt))] == [1]
