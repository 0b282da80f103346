"""Erasure requests: end every purpose, crypto-shred, wait for the KEK, then a signed receipt.

A request selects recordings by ``tenant`` + ``call_id`` or by ``recording_ids``; the derivatives
of every selected recording (``parent_id``, transitively) are covered too. One ``ErasureItem``
per recording records the proof: when the DEK and the media were destroyed, the ciphertext hash,
and the KEK version that wrapped the DEK (the row's ``kek_version`` at destruction; rows without
a DEK are never rewrapped, so it stays put) and when that version was retired.

Each :func:`process` run, per open request:

1. (transaction) on the first run, pick up recordings of the call that raced the request's
   creation, then drop the call id; end every active purpose of the covered recordings;
2. dispose of them through :mod:`vault.retention.disposal`, which respects legal holds (a held
   item is recorded as deferred, with the hold's id, and finishes after the release);
3. (transaction) copy the destruction times from the tombstones, and the retirement time from
   ``KekVersion.retired_at`` (set by the kek-cycle job). Only when every item's KEK version is
   retired is the request ``complete``: the receipt is built, signed with the audit key and
   recorded, hashed, in the audit chain, in the same transaction.

Receipts are signed documents (:mod:`vault.audit.signing`) of type ``ERASURE_RECEIPT``, version
``RECEIPT_VERSION``; :func:`verify_receipt` checks one. Receipts signed before the type/version
fields existed say ``"type": "callvault.erasure-receipt/v1"`` and are read as version 1.

Neither audit events nor receipts ever carry the call id.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session, col, select

from vault import audit, authz, kek_versions
from vault.audit import signing
from vault.authz import Actor, Permission
from vault.context import Context
from vault.errors import InvalidInputError
from vault.identity.tenants import tenant_for_write
from vault.leases import claim
from vault.models import (
    ErasureItem,
    ErasureRequest,
    ErasureRequestPublic,
    ErasureStatus,
    Recording,
    RecordingPurpose,
    RecordingStatus,
)
from vault.policy import Policy
from vault.retention import disposal as retention
from vault.retention import holds, receipts, records
from vault.retention.expiry import end_purposes
from vault.tags import AuditAction
from vault.tenants import policy as tenant_policy

__all__ = [
    "ERASURE_ACTOR", "complete_from_receipt", "create_request", "get_request", "open_request",
    "process",
]  # fmt: skip

log = logging.getLogger(__name__)

E = ErasureStatus
ERASURE_ACTOR = "system:erasure"
MAX_IDS = 10_000


# --- creation -------------------------------------------------------------------------------------


def _with_derivatives(session: Session, ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    seen, frontier = set(ids), list(ids)
    while frontier:
        children = session.exec(
            select(Recording.id).where(col(Recording.parent_id).in_(frontier))
        ).all()
        frontier = [c for c in children if c not in seen]
        seen.update(frontier)
    return sorted(seen)


def _by_call(session: Session, tenant_id: uuid.UUID, call_id: str) -> list[uuid.UUID]:
    rows = session.exec(
        select(Recording.id).where(Recording.tenant_id == tenant_id, Recording.call_id == call_id)
    ).all()
    return sorted(rows)


def create_request(
    session: Session,
    *,
    actor: Actor,
    policy: Policy,
    tenant: str | None = None,
    call_id: str | None = None,
    recording_ids: Sequence[uuid.UUID] = (),
    reason: str,
    now: datetime,
) -> ErasureRequest:
    """Record a request in the caller's transaction (the caller commits); work happens later."""
    authz.authorize(session, actor, Permission.erasure_manage, now=now)
    reason = reason.strip() if isinstance(reason, str) else ""
    if not reason or len(reason) > 2000:
        raise InvalidInputError("reason: 1-2000 characters")
    ids = sorted(set(recording_ids or ()))
    by_call = tenant is not None or call_id is not None
    if by_call and ids:
        raise InvalidInputError("select by tenant + call_id or by recording_ids, not both")
    if by_call and (not tenant or not call_id or len(call_id) > 256):
        raise InvalidInputError("tenant and call_id (1-256 characters) go together")
    if not by_call and not ids:
        raise InvalidInputError("give tenant + call_id, or recording_ids")
    if len(ids) > MAX_IDS:
        raise InvalidInputError(f"at most {MAX_IDS} recording_ids per request")

    tenant_id = None
    if by_call:
        assert tenant is not None and call_id is not None
        tenant_id = tenant_for_write(
            session, actor, tenant, Permission.erasure_manage, now=now
        ).id
        matched = _by_call(session, tenant_id, call_id)
        tenants = {tenant_id}
    else:
        # The same answer for "missing" and "not yours".
        found = authz.get_visible_many(
            session, actor, ids, permission=Permission.erasure_manage, now=now
        )
        matched = ids
        tenants = {r.tenant_id for r in found}
    deadline = tenant_policy.effective_for(session, policy, tenants).erasure_deadline
    return open_request(
        session, tenant_id=tenant_id, call_id=call_id, recording_ids=matched, reason=reason,
        created_by=actor.audit_name, due_at=now + deadline, now=now,
        selector="tenant+call_id" if by_call else "recording_ids",  # never the call id
    )  # fmt: skip


def open_request(
    session: Session,
    *,
    tenant_id: uuid.UUID | None,
    call_id: str | None = None,
    recording_ids: Sequence[uuid.UUID],
    reason: str,
    created_by: str,
    due_at: datetime,
    now: datetime,
    selector: str,
) -> ErasureRequest:
    """A request over ``recording_ids`` and their derivatives, audited (an erasure request,
    or a tenant's offboarding, which opens one per batch of unheld recordings)."""
    covered = _with_derivatives(session, recording_ids)
    req = ErasureRequest(
        status=E.pending, tenant_id=tenant_id, call_id=call_id, reason=reason,
        created_by=created_by, created_at=now, due_at=due_at,
    )  # fmt: skip
    session.add(req)
    session.flush()
    for rid in covered:
        session.add(ErasureItem(request_id=req.id, recording_id=rid))
    session.flush()
    audit.record(
        session,
        action=AuditAction.erasure_request,
        actor=created_by,
        now=now,
        tenant_id=tenant_id,
        target=str(req.id),
        details={
            "request_id": str(req.id),
            "selector": selector,
            "recordings": len(recording_ids),
            "derivatives": len(covered) - len(recording_ids),
            "due_at": audit.format_ts(req.due_at),
            "reason": reason,
        },
    )
    return req


# --- processing -----------------------------------------------------------------------------------


def process(ctx: Context, *, now: datetime) -> int:
    """Advance every open request; returns how many completed in this run. Idempotent."""
    with ctx.db.reading() as session:
        open_ids = session.exec(
            select(ErasureRequest.id)
            .where(ErasureRequest.status != E.complete)
            .order_by(col(ErasureRequest.due_at), col(ErasureRequest.id))
        ).all()
    completed = 0
    for request_id in open_ids:
        pending = _start(ctx, request_id, now)
        if pending is None:
            continue  # complete, or another worker has it right now
        retention.dispose_recordings(ctx, pending, now=now)
        ready = _settle(ctx, request_id, now)
        if ready is not None:
            completed += _sign_and_complete(ctx, request_id, ready, now)
    records.publish_pending(ctx, now=now)  # receipts to the store; earlier failures retried
    return completed


def _lock_request(session: Session, request_id: uuid.UUID) -> ErasureRequest | None:
    query = claim(session, select(ErasureRequest).where(ErasureRequest.id == request_id))
    req = session.exec(query.execution_options(populate_existing=True)).first()
    return None if req is None or req.status == E.complete else req


def _items(session: Session, request_id: uuid.UUID) -> list[ErasureItem]:
    return list(
        session.exec(
            select(ErasureItem)
            .where(ErasureItem.request_id == request_id)
            .order_by(col(ErasureItem.recording_id))
        ).all()
    )


def _start(ctx: Context, request_id: uuid.UUID, now: datetime) -> list[uuid.UUID] | None:
    """Step 1; returns the recordings whose media still has to go."""
    with ctx.db.transaction() as session:
        req = _lock_request(session, request_id)
        if req is None:
            return None
        items = _items(session, req.id)
        if req.call_id is not None and req.tenant_id is not None:
            known = {i.recording_id for i in items}
            late = [r for r in _by_call(session, req.tenant_id, req.call_id) if r not in known]
            for rid in _with_derivatives(session, late):
                if rid not in known:
                    item = ErasureItem(request_id=req.id, recording_id=rid)
                    session.add(item)
                    items.append(item)
            req.call_id = None  # resolved: the identifier is not kept any longer than needed
        ids = [i.recording_id for i in items]
        label = f"erasure {req.id}"
        query = (
            select(RecordingPurpose, Recording.tenant_id)
            .join(Recording, col(Recording.id) == col(RecordingPurpose.recording_id))
            .where(col(RecordingPurpose.recording_id).in_(ids), RecordingPurpose.active_at(now))
            .order_by(col(RecordingPurpose.recording_id), col(RecordingPurpose.purpose))
        )
        if ctx.db.is_postgres:
            query = query.with_for_update(of=RecordingPurpose)
        ending = session.exec(query).all()
        # Failed ingests keep no media worth a tombstone, but their identifiers go now.
        for rec in session.exec(
            select(Recording).where(col(Recording.id).in_(ids), Recording.status == "failed")
        ).all():
            rec.call_id, rec.sha256 = None, None
            session.add(rec)
        if req.status == E.pending:
            req.status = E.shredding
        session.add(req)
        end_purposes(
            session, ending, action=AuditAction.recording_purpose_end, actor=ERASURE_ACTOR,
            now=now, reason=label,
            details=lambda _: {"reason": label, "erasure_request": str(req.id)},
        )  # fmt: skip
        return [i.recording_id for i in items if i.media_destroyed_at is None]


def _settle(ctx: Context, request_id: uuid.UUID, now: datetime) -> str | None:
    """Step 3: record the proof per item; once every KEK is retired, the receipt's text (kept
    with the request, to be signed outside the transaction by :func:`_sign_and_complete`)."""
    with ctx.db.transaction() as session:
        req = _lock_request(session, request_id)
        if req is None:
            return None
        items = _items(session, req.id)
        ids = [i.recording_id for i in items]
        recs = {r.id: r for r in session.exec(select(Recording).where(col(Recording.id).in_(ids)))}
        held = holds.active_holds_of(session, ids)
        for item in items:
            _update_item(session, item, recs[item.recording_id], held.get(item.recording_id))
            session.add(item)
        if any(i.dek_destroyed_at is None and i.recording_id in held for i in items):
            req.status = E.deferred
        elif all(i.kek_retired_at is not None and i.media_destroyed_at for i in items):
            if req.receipt is None:  # a run that died before signing left its text: keep it
                req.receipt = receipts.build(session, req, items, now)
            req.status = E.awaiting_kek
            session.add(req)
            return req.receipt
        elif all(i.dek_destroyed_at and i.media_destroyed_at for i in items):
            req.status = E.awaiting_kek
        else:
            req.status = E.shredding
        session.add(req)
        return None


def _update_item(
    session: Session, item: ErasureItem, rec: Recording, held: list[uuid.UUID] | None
) -> None:
    if item.dek_destroyed_at is None and rec.dek_destroyed_at is not None:
        item.dek_destroyed_at = rec.dek_destroyed_at
        item.kek_version = rec.kek_version
        item.ciphertext_sha256 = rec.ciphertext_sha256
    gone = rec.status in (RecordingStatus.disposed, RecordingStatus.failed)
    if item.media_destroyed_at is None and rec.disposed_at is not None and gone:
        item.media_destroyed_at = rec.disposed_at
    if held and item.dek_destroyed_at is None:
        item.deferred_by = held[0]  # kept afterwards: the receipt says which hold deferred it
    if item.kek_retired_at is None and item.dek_destroyed_at is not None:
        if item.kek_version is None:  # nothing was ever wrapped: nothing to wait for
            item.kek_retired_at = item.dek_destroyed_at
        else:
            # The version of the recording's own region's provider.
            kek = kek_versions.get(session, item.kek_version, rec.region)
            if kek is not None and kek.retired_at is not None:
                item.kek_retired_at = kek.retired_at


def _sign_and_complete(ctx: Context, request_id: uuid.UUID, canonical: str, now: datetime) -> int:
    """Sign the receipt with the audit key (no transaction open), then complete the request
    with a compare-and-set on the receipt's text; 1 if this call completed it."""
    # Every provider we ship signs with the audit key (local Ed25519, Transit ed25519).
    signature = signing.sign_canonical(ctx.keys, canonical).signature
    body = json.loads(canonical)
    with ctx.db.transaction() as session:
        req = _lock_request(session, request_id)
        if req is None or req.receipt != canonical:
            return 0  # completed meanwhile by another worker
        req.status = E.complete
        req.completed_at = datetime.fromisoformat(body["completed_at"].replace("Z", "+00:00"))
        req.call_id = None
        req.receipt_signature = signature
        session.add(req)
        session.flush()
        audit.record(
            session, action=AuditAction.erasure_complete, actor=ERASURE_ACTOR, now=now,
            tenant_id=req.tenant_id, target=str(req.id),
            details={
                "request_id": str(req.id), "receipt_sha256": audit.hash_canonical(canonical),
                "receipt_signature": signature, "items": len(body["items"]),
                "on_time": body["on_time"],
            },
        )  # fmt: skip
        records.add_receipt(
            session, request_id=req.id, canonical=canonical, signature=signature, now=now
        )
    return 1


def complete_from_receipt(
    session: Session, *, request_id: uuid.UUID, canonical: str, signature: str
) -> bool:
    """Restore reconcile: a request that a restored database still has open is completed with
    the receipt it was signed with (verified by the caller); True if it changed."""
    req = _lock_request(session, request_id)
    if req is None:
        return False
    completed_at = json.loads(canonical)["completed_at"]
    req.status = E.complete
    req.completed_at = datetime.fromisoformat(completed_at.replace("Z", "+00:00"))
    req.call_id = None
    req.receipt, req.receipt_signature = canonical, signature
    session.add(req)
    return True


# --- reads ----------------------------------------------------------------------------------------


def to_public(session: Session, req: ErasureRequest) -> ErasureRequestPublic:
    items = _items(session, req.id)
    deferred = sorted({i.deferred_by for i in items if i.deferred_by and not i.dek_destroyed_at})
    return ErasureRequestPublic(
        id=req.id, status=E(req.status), created_at=req.created_at, due_at=req.due_at,
        completed_at=req.completed_at, recordings=len(items), deferred_by=deferred,
        # Shown once signed: a receipt waiting for its signature is not one yet.
        receipt=json.loads(req.receipt) if req.receipt and req.receipt_signature else None,
        receipt_signature=req.receipt_signature,
    )  # fmt: skip


def get_request(
    session: Session, *, actor: Actor, request_id: uuid.UUID, now: datetime
) -> ErasureRequestPublic:
    authz.authorize(session, actor, Permission.erasure_manage, now=now)
    req = authz.get_visible(
        session, actor, ErasureRequest, request_id, permission=Permission.erasure_manage,
        now=now, what="erasure request",
    )  # fmt: skip
    return to_public(session, req)


def list_requests(
    session: Session,
    *,
    actor: Actor,
    status: ErasureStatus | None = None,
    now: datetime,
    limit: int = 500,
) -> list[ErasureRequestPublic]:
    """Erasure requests the actor may see, the soonest due first."""
    authz.authorize(session, actor, Permission.erasure_manage, now=now)
    query = select(ErasureRequest)
    if status is not None:
        query = query.where(ErasureRequest.status == status.value)
    query = query.order_by(col(ErasureRequest.due_at), col(ErasureRequest.id)).limit(limit)
    return [to_public(session, r) for r in session.exec(authz.visible(query, actor))]
