"""Erasure requests on both backends: derivatives, holds that defer, the KEK step, signed receipts
and the HTTP API."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi.testclient import TestClient
from sqlmodel import select

from tests.support.clock import FakeClock
from tests.vault.test_recordings import (
    CALL_ID,
    actor_for,
    assert_chain_ok,
    decrypt,
    events,
    make_tenant,
)
from tests.vault.test_retention import (
    DAY,
    audit_texts,
    hold,
    ingest,
    kek_cycle,
    privacy,
    release,
    row,
)
from vault import audit
from vault.app import create_app
from vault.audit import checkpoints, signing
from vault.authz import Actor
from vault.context import Context
from vault.errors import InvalidInputError, KeyDestroyedError, NotFoundError, PermissionDeniedError
from vault.identity import principals
from vault.identity.owners import owner_of
from vault.models import (
    AuditCheckpoint,
    ErasureItem,
    ErasureRequest,
    RecordingPurpose,
    RecordingStatus,
    Role,
)
from vault.recordings import metadata as recordings
from vault.retention import erasure, receipts
from vault.setup import initialise

S = RecordingStatus


def request(ctx: Context, actor: Actor | None = None, **selector: Any) -> ErasureRequest:
    with ctx.db.transaction() as s:
        return erasure.create_request(
            s, actor=actor or privacy(), policy=ctx.policy, reason="data subject request",
            now=ctx.now(), **selector,
        )  # fmt: skip


def status(ctx: Context, request_id: uuid.UUID) -> Any:
    with ctx.db.session() as s:
        return erasure.get_request(s, actor=privacy(), request_id=request_id, now=ctx.now())


def verify_receipt(ctx: Context, public: Any) -> dict[str, Any]:
    with ctx.db.session() as s:
        req = s.get(ErasureRequest, public.id)
        assert req is not None and req.receipt is not None
    # Raises if forged, or if the signed text is not a receipt.
    doc = receipts.verify_receipt(
        ctx.keys.signing_public_key(), req.receipt, public.receipt_signature
    )
    assert doc == public.receipt
    assert (doc["type"], doc["version"]) == (signing.ERASURE_RECEIPT, 1)
    return public.receipt


def make_derivative(ctx: Context, parent: Any, tenant: Any) -> Any:
    """A derivative (e.g. a redacted copy): its own object and DEK, linked by ``parent_id``."""
    child = ingest(ctx, tenant, purposes=("fraud",), call_id=None)
    with ctx.db.transaction() as s:
        rec = row(ctx, child.id)
        rec.parent_id = parent.id
        s.add(rec)
    return child


# --- the whole path ------------------------------------------------------------------------------


def test_erasure_by_call_covers_derivatives_and_ends_with_a_signed_receipt(
    ctx: Context, clock: FakeClock
) -> None:
    tenant = make_tenant(ctx)
    kek_cycle(ctx, clock())  # records the first KEK version
    first = ingest(ctx, tenant, purposes=("troubleshooting", "security"))
    second = ingest(ctx, tenant)
    other = ingest(ctx, tenant, call_id="another-call")
    child = make_derivative(ctx, first, tenant)
    backup = row(ctx, first.id).wrapped_dek  # as a DB backup would keep it
    assert backup is not None

    req = request(ctx, tenant=tenant.name, call_id=CALL_ID)
    assert req.due_at == clock() + 30 * DAY
    assert status(ctx, req.id).status == "pending" and status(ctx, req.id).recordings == 3

    clock.advance(minutes=5)
    assert erasure.process(ctx, now=clock()) == 0
    progress = status(ctx, req.id)
    assert progress.status == "awaiting_kek" and progress.receipt is None
    for rid in (first.id, second.id, child.id):
        tomb = row(ctx, rid)
        assert tomb.status == S.disposed and tomb.disposal_reason == f"erasure {req.id}"
        assert (
            tomb.call_id is None and tomb.sha256 is None and not ctx.store.exists(tomb.object_key)
        )
    with ctx.db.session() as s:
        ended = s.exec(select(RecordingPurpose).where(RecordingPurpose.recording_id == first.id))
        assert {(p.purpose, p.ended_reason) for p in ended} == {
            ("troubleshooting", f"erasure {req.id}"), ("security", f"erasure {req.id}"),
        }  # fmt: skip
    assert row(ctx, other.id).status == S.stored
    # The copy still opens: crypto-shredding is not complete before the KEK is retired.
    ctx.keys.unwrap_dek(backup, tenant_id=tenant.id, recording_id=first.id)

    clock.advance(days=7)
    assert kek_cycle(ctx, clock())
    with pytest.raises(KeyDestroyedError):
        ctx.keys.unwrap_dek(backup, tenant_id=tenant.id, recording_id=first.id)
    assert decrypt(ctx, row(ctx, other.id)).startswith(b"tiny body ")  # rewrapped, still fine

    clock.advance(minutes=5)
    assert erasure.process(ctx, now=clock()) == 1
    done = status(ctx, req.id)
    assert done.status == "complete" and done.completed_at == clock() <= done.due_at
    receipt = verify_receipt(ctx, done)
    assert receipt["request_id"] == str(req.id) and receipt["on_time"] is True
    items = {i["recording_id"]: i for i in receipt["items"]}
    assert set(items) == {str(first.id), str(second.id), str(child.id)}
    for rid, item in items.items():
        tomb = row(ctx, uuid.UUID(rid))
        assert item["ciphertext_sha256"] == tomb.ciphertext_sha256
        assert item["dek_destroyed_at"] and item["media_destroyed_at"]
        assert item["kek_version"] == 1 and item["kek_retired_at"]
    assert erasure.process(ctx, now=clock()) == 0  # idempotent

    with ctx.db.session() as s:
        assert s.get(ErasureRequest, req.id).call_id is None  # type: ignore[union-attr]
    (event,) = events(ctx, "erasure.complete")
    details = json.loads(event.canonical)["details"]
    assert (
        details["receipt_sha256"]
        == hashlib.sha256(
            json.dumps(receipt, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        ).hexdigest()
    )
    texts = audit_texts(ctx)
    assert not any(CALL_ID in t for t in texts) and CALL_ID not in json.dumps(receipt)
    assert_chain_ok(ctx)


def test_a_hold_defers_erasure_until_released(ctx: Context, clock: FakeClock) -> None:
    tenant = make_tenant(ctx)
    kek_cycle(ctx, clock())
    rec, free = ingest(ctx, tenant), ingest(ctx, tenant)
    h = hold(ctx, recording_ids=[rec.id])
    req = request(ctx, recording_ids=[rec.id, free.id])

    erasure.process(ctx, now=clock())
    deferred = status(ctx, req.id)
    assert deferred.status == "deferred" and deferred.deferred_by == [h.id]
    assert row(ctx, rec.id).status == S.stored and row(ctx, free.id).status == S.disposed
    with ctx.db.session() as s:
        assert all(p.ended_at for p in s.exec(select(RecordingPurpose)))  # every purpose ended
        item = s.get(ErasureItem, (req.id, rec.id))
        assert item is not None and item.deferred_by == h.id and item.dek_destroyed_at is None
    (event,) = events(ctx, "disposal.deferred")
    assert str(h.id) in event.canonical and str(req.id) in event.canonical

    clock.advance(days=40)  # past due_at: deferred by a named hold, not late
    erasure.process(ctx, now=clock())
    assert status(ctx, req.id).status == "deferred"
    release(ctx, h.id)
    erasure.process(ctx, now=clock())
    assert status(ctx, req.id).status == "awaiting_kek"
    assert row(ctx, rec.id).disposal_reason == f"erasure {req.id}"
    kek_cycle(ctx, clock(), force=True)
    assert erasure.process(ctx, now=clock()) == 1
    receipt = verify_receipt(ctx, status(ctx, req.id))
    by_id = {i["recording_id"]: i for i in receipt["items"]}
    assert by_id[str(rec.id)]["deferred_by"] == str(h.id)
    assert by_id[str(rec.id)]["holds_checked"] == receipt["holds_checked"] == [str(h.id)]
    assert receipt["on_time"] is False and by_id[str(free.id)]["deferred_by"] is None
    assert not any(CALL_ID in t for t in audit_texts(ctx))
    assert_chain_ok(ctx)


def test_erasure_input_permission_and_scope(ctx: Context) -> None:
    acme, other = make_tenant(ctx, "acme"), make_tenant(ctx, "other")
    rec = ingest(ctx, acme)
    cases: list[tuple[type[Exception], Actor, dict[str, Any]]] = [
        (PermissionDeniedError, actor_for(acme, Role.security), {"recording_ids": [rec.id]}),
        (InvalidInputError, privacy(), {}),
        (InvalidInputError, privacy(), {"tenant": "acme"}),  # a call id is needed too
        (InvalidInputError, privacy(), {"tenant": "acme", "call_id": "c",
                                        "recording_ids": [rec.id]}),
        (PermissionDeniedError, privacy(other), {"tenant": "acme", "call_id": CALL_ID}),
        (NotFoundError, privacy(other), {"recording_ids": [rec.id]}),
        (NotFoundError, privacy(), {"recording_ids": [uuid.uuid4()]}),
    ]  # fmt: skip
    for error, actor, kw in cases:
        with pytest.raises(error):
            request(ctx, actor, **kw)
    assert events(ctx, "erasure.request") == []

    nothing = request(ctx, privacy(acme), tenant="acme", call_id="no-such-call")
    assert erasure.process(ctx, now=ctx.now()) == 1  # nothing matched: complete at once
    assert status(ctx, nothing.id).receipt["items"] == []  # type: ignore[index]
    with ctx.db.session() as s, pytest.raises(NotFoundError):
        erasure.get_request(s, actor=privacy(other), request_id=nothing.id, now=ctx.now())
    assert row(ctx, rec.id).status == S.stored


# --- the receipt as a signed document ------------------------------------------------------------


def completed_receipt(ctx: Context, clock: FakeClock) -> ErasureRequest:
    tenant = make_tenant(ctx)
    kek_cycle(ctx, clock())
    rec = ingest(ctx, tenant)
    req = request(ctx, recording_ids=[rec.id])
    erasure.process(ctx, now=clock())
    kek_cycle(ctx, clock(), force=True)
    assert erasure.process(ctx, now=clock()) == 1
    with ctx.db.session() as s:
        done = s.get(ErasureRequest, req.id)
    assert done is not None and done.receipt and done.receipt_signature
    return done


def as_checkpoint(ctx: Context, statement: str, signature: str) -> dict[str, Any] | str:
    """What the checkpoint verifier makes of a document signed with the same audit key."""
    row = AuditCheckpoint(
        chain_id="global", head_seq=1, head_hash="0" * 64, created_at=ctx.now(),
        public_key="", statement=statement, signature=signature,
    )  # fmt: skip
    verifier = Ed25519PublicKey.from_public_bytes(ctx.keys.signing_public_key())
    return checkpoints._parse_statement(row, verifier)


def test_receipt_verifies_under_the_audit_key_and_only_as_a_receipt(
    ctx: Context, clock: FakeClock
) -> None:
    done = completed_receipt(ctx, clock)
    assert done.receipt is not None and done.receipt_signature is not None
    text, signature = done.receipt, done.receipt_signature
    assert text.endswith('"type":"callvault.erasure-receipt","version":1}')
    receipt = receipts.verify_receipt(ctx.keys.signing_public_key(), text, signature)
    assert receipt["request_id"] == str(done.id) and len(receipt["items"]) == 1
    assert receipt["signature"] == {"alg": "Ed25519", "over": "the canonical JSON of this receipt"}

    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    with pytest.raises(signing.SignedDocumentError, match="signature does not verify"):
        receipts.verify_receipt(other, text, signature)
    tampered = text.replace('"on_time":true', '"on_time":false')
    assert tampered != text
    with pytest.raises(signing.SignedDocumentError, match="signature does not verify"):
        receipts.verify_receipt(ctx.keys.signing_public_key(), tampered, signature)
    # Signed with the very key that signs checkpoints, yet no checkpoint.
    assert as_checkpoint(ctx, text, signature) == (
        "type is 'callvault.erasure-receipt', expected 'callvault.audit-checkpoint'"
    )


def test_receipt_from_before_typed_documents_reads_as_v1(ctx: Context, clock: FakeClock) -> None:
    done = completed_receipt(ctx, clock)
    assert done.receipt is not None
    old = {k: v for k, v in json.loads(done.receipt).items() if k not in ("type", "version")}
    legacy = audit.canonical_json({**old, "type": "callvault.erasure-receipt/v1"})
    signature = ctx.keys.sign(legacy.encode()).hex()
    receipt = receipts.verify_receipt(ctx.keys.signing_public_key(), legacy, signature)
    assert receipt == {**old, "type": signing.ERASURE_RECEIPT, "version": 1}
    assert "type is 'callvault.erasure-receipt/v1'" in str(as_checkpoint(ctx, legacy, signature))


# --- HTTP ----------------------------------------------------------------------------------------


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    initialise(ctx, now=ctx.now())  # also records the KEK version in the DB
    with TestClient(create_app(ctx.settings, ctx=ctx)) as c:
        yield c


def test_erasure_api(ctx: Context, clock: FakeClock, client: TestClient) -> None:
    tenant = make_tenant(ctx)
    rec = ingest(ctx, tenant)
    owner = owner_of(ctx.keys, "dpo@example.com")
    with ctx.db.transaction() as s:
        _, key = principals.add_principal(
            s, actor=Actor.operator(), name="dpo", role="privacy", owner=owner,
            tenants=[], all_tenants=True, now=clock(),
        )  # fmt: skip
    dpo = {"Authorization": f"Bearer {key}"}
    body = {"tenant": tenant.name, "call_id": CALL_ID}

    r = client.post("/v1/erasure-requests", json={"recording_ids": []}, headers=dpo)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    r = client.post("/v1/erasure-requests", json=body, headers=dpo)
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["status"] == "pending" and accepted["recordings"] == 1
    assert accepted["due_at"] == (clock() + 30 * DAY).isoformat().replace("+00:00", "Z")
    path = f"/v1/erasure-requests/{accepted['id']}"

    erasure.process(ctx, now=clock())
    assert client.get(path, headers=dpo).json()["status"] == "awaiting_kek"
    meta = client.get(f"/v1/recordings/{rec.id}", headers=dpo).json()
    assert meta["status"] == "disposed" and meta["call_id"] is None and meta["ciphertext_sha256"]
    clock.advance(days=7)
    assert kek_cycle(ctx, clock(), force=True)  # init dated the version by the wall clock
    erasure.process(ctx, now=clock())
    done = client.get(path, headers=dpo).json()
    assert done["status"] == "complete" and done["receipt"]["items"][0]["kek_retired_at"]
    assert len(bytes.fromhex(done["receipt_signature"])) == 64
    assert client.get(f"/v1/erasure-requests/{uuid.uuid4()}", headers=dpo).status_code == 404
    with ctx.db.session() as s:
        assert recordings.get_recording(s, actor=privacy(), recording_id=rec.id, now=clock())
    assert_chain_ok(ctx)
