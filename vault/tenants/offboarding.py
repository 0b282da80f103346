"""Tenant offboarding: the customer closed its account; everything it left goes.

Proposed by admin, approved by a privacy principal of another owner (:mod:`.changes`). The
approval, in one unit of work: the tenant becomes ``offboarding`` (ingest refused with
``tenant-offboarding``), a deadline ``approved_at + offboarding_days`` (≤ 60, the notice's
promise) is set, principals scoped only to this tenant are revoked and the others lose it from
their scope.

Then, in the ``erasure`` job, idempotent and claimed per tenant (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL):

1. :func:`open_erasures`: every live recording of the tenant that no offboarding erasure covers
   yet and no legal hold keeps goes into a new erasure request (the same crypto-shredding, KEK
   retirement and signed receipt as any erasure; derivatives included). Recordings that arrive
   late (an ingest that was already under way) are picked up by a later run.
2. :mod:`vault.retention.erasure` does the work.
3. :func:`settle`: once every such request is complete, held recordings are what is left: the
   tenant is ``deferred`` and a first signed offboarding receipt reports them with their holds.
   When nothing is left and no wrapped DEK of the tenant remains, its key is deleted at the
   provider (Transit: the per-tenant key; the local keyring keeps one global KEK, so there is
   nothing per tenant to delete and the receipt says so), and a final receipt completes it:
   ``offboarded``.

Receipts are signed documents of type :data:`RECEIPT_TYPE` (no call id, no e-mail: opaque ids and
hashes), signed with no transaction open and cited, hashed, in the audit chain.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from vault import audit
from vault.authz import Actor
from vault.context import Context
from vault.errors import KeyProviderUnavailableError, NotFoundError
from vault.identity import principals
from vault.identity.tenants import tenant_for_read
from vault.leases import claim
from vault.models import (
    ChangeKind,
    ErasureItem,
    ErasureRequest,
    ErasureStatus,
    OffboardingErasure,
    OffboardingPublic,
    OffboardingReceipt,
    Principal,
    PrincipalTenant,
    Recording,
    RecordingStatus,
    Tenant,
    TenantChange,
    TenantOffboarding,
    TenantStatus,
)
from vault.policy import Policy
from vault.retention import erasure, holds
from vault.tags import AuditAction
from vault.tenants import changes
from vault.tenants import offboarding_receipts as receipts
from vault.tenants.offboarding_receipts import (
    OFFBOARD_ACTOR,
    RECEIPT_TYPE,
    RECEIPT_VERSION,
    verify_receipt,
)

__all__ = [
    "OFFBOARD_ACTOR", "RECEIPT_TYPE", "RECEIPT_VERSION", "approve", "get_offboarding",
    "open_erasures", "propose", "settle", "verify_receipt",
]  # fmt: skip

log = logging.getLogger(__name__)
T = TenantStatus
GONE = (RecordingStatus.disposed, RecordingStatus.failed)
ERASABLE = (RecordingStatus.stored, RecordingStatus.integrity_failed)


# --- proposal and approval ----------------------------------------------------------------------


def propose(
    session: Session, *, actor: Actor, tenant: str, reason: str, now: datetime
) -> TenantChange:
    return changes.propose(
        session, actor=actor, tenant=tenant, kind=ChangeKind.offboard, payload={},
        reason=reason, now=now,
    )  # fmt: skip


def approve(
    session: Session,
    *,
    actor: Actor,
    policy: Policy,
    tenant: str,
    change_id: uuid.UUID,
    now: datetime,
) -> TenantChange:
    def start(s: Session, change: TenantChange, row: Tenant, _: dict[str, Any]) -> dict[str, Any]:
        row.status = T.offboarding.value
        s.add(row)
        due = now + policy.offboarding
        s.add(
            TenantOffboarding(
                tenant_id=row.id, change_id=change.id, status=T.offboarding.value,
                approved_at=now, due_at=due,
            )
        )  # fmt: skip
        revoked, descoped = _withdraw_principals(s, row.id, now)
        s.flush()
        return {"due_at": audit.format_ts(due), "principals_revoked": revoked,
                "principals_descoped": descoped}  # fmt: skip

    return changes.approve(
        session, actor=actor, tenant=tenant, kind=ChangeKind.offboard, change_id=change_id,
        now=now, apply=start,
    )  # fmt: skip


def _withdraw_principals(session: Session, tenant_id: uuid.UUID, now: datetime) -> tuple[int, int]:
    """Revoke principals scoped only to this tenant; take it out of the others' scope."""
    scoped = session.exec(
        select(Principal)
        .join(PrincipalTenant, col(PrincipalTenant.principal_id) == col(Principal.id))
        .where(PrincipalTenant.tenant_id == tenant_id, col(Principal.revoked_at).is_(None))
        .order_by(col(Principal.id))
    ).all()
    operator = Actor.operator("offboarding")
    revoked = descoped = 0
    for p in scoped:
        others = session.exec(
            select(PrincipalTenant.tenant_id).where(
                PrincipalTenant.principal_id == p.id, PrincipalTenant.tenant_id != tenant_id
            )
        ).all()
        if not others and not p.all_tenants:
            principals.revoke_principal(session, actor=operator, name=p.name, now=now)
            revoked += 1
            continue
        link = session.get(PrincipalTenant, (p.id, tenant_id))
        if link is not None:
            session.delete(link)
            session.flush()
            audit.record(
                session, action=AuditAction.tenant_scope_remove, actor=OFFBOARD_ACTOR, now=now,
                tenant_id=tenant_id, target=str(p.id), details={"reason": "tenant offboarding"},
            )  # fmt: skip
            descoped += 1
    return revoked, descoped


# --- the job steps -----------------------------------------------------------------------------


def _open(ctx: Context) -> list[uuid.UUID]:
    with ctx.db.reading() as session:
        return list(
            session.exec(
                select(TenantOffboarding.tenant_id)
                .where(TenantOffboarding.status != T.offboarded.value)
                .order_by(col(TenantOffboarding.due_at))
            ).all()
        )


def _lock(session: Session, tenant_id: uuid.UUID) -> TenantOffboarding | None:
    query = claim(
        session, select(TenantOffboarding).where(TenantOffboarding.tenant_id == tenant_id)
    )
    off = session.exec(query.execution_options(populate_existing=True)).first()
    return None if off is None or off.status == T.offboarded else off


def _covered(tenant_id: uuid.UUID) -> Any:
    return (
        select(ErasureItem.recording_id)
        .join(OffboardingErasure, col(OffboardingErasure.request_id) == col(ErasureItem.request_id))
        .where(OffboardingErasure.tenant_id == tenant_id)
    )


def open_erasures(ctx: Context, *, now: datetime) -> int:
    """Step 1 for every open offboarding; returns how many erasure requests it opened."""
    opened = 0
    for tenant_id in _open(ctx):
        with ctx.db.transaction() as session:
            off = _lock(session, tenant_id)
            if off is None:
                continue
            ids = list(
                session.exec(
                    select(Recording.id)
                    .where(
                        Recording.tenant_id == tenant_id,
                        col(Recording.status).in_(ERASABLE),
                        col(Recording.id).not_in(_covered(tenant_id)),
                        ~holds.held_condition(Recording.id),
                    )
                    .order_by(col(Recording.id))
                ).all()
            )
            if not ids:
                continue
            req = erasure.open_request(
                session, tenant_id=tenant_id, recording_ids=ids, reason="tenant offboarding",
                created_by=OFFBOARD_ACTOR, due_at=off.due_at, now=now,
                selector="tenant-offboarding",
            )  # fmt: skip
            session.add(OffboardingErasure(request_id=req.id, tenant_id=tenant_id))
            opened += 1
    return opened


def settle(ctx: Context, *, now: datetime) -> int:
    """Step 3 for every open offboarding; returns how many completed in this run."""
    completed = 0
    for tenant_id in _open(ctx):
        if _settle_one(ctx, tenant_id, now) == "delete-key":
            try:
                # In every region (no transaction open): a tenant's recordings may predate
                # residency and sit in the home region; deletion is idempotent.
                deleted = any([ctx.keys_for(r).delete_tenant_key(tenant_id) for r in ctx.regions()])
            except KeyProviderUnavailableError as exc:  # the next run tries again
                log.warning("offboarding: key deletion failed: %s", type(exc).__name__)
                continue
            completed += _complete(ctx, tenant_id, deleted, now)
    receipts.sign_pending(ctx, now)
    return completed


def _state(session: Session, tenant_id: uuid.UUID) -> dict[str, Any]:
    requests = session.exec(
        select(ErasureRequest)
        .join(OffboardingErasure, col(OffboardingErasure.request_id) == col(ErasureRequest.id))
        .where(OffboardingErasure.tenant_id == tenant_id)
        .order_by(col(ErasureRequest.created_at), col(ErasureRequest.id))
    ).all()
    live = list(
        session.exec(
            select(Recording.id).where(
                Recording.tenant_id == tenant_id, col(Recording.status).not_in(GONE)
            )
        ).all()
    )
    deks = session.exec(
        select(Recording.id).where(
            Recording.tenant_id == tenant_id, col(Recording.wrapped_dek).is_not(None)
        )
    ).first()
    return {
        "requests": requests, "live": live, "held": holds.active_holds_of(session, live),
        "deks_left": deks is not None,
    }  # fmt: skip


def _settle_one(ctx: Context, tenant_id: uuid.UUID, now: datetime) -> str | None:
    with ctx.db.transaction() as session:
        off = _lock(session, tenant_id)
        if off is None:
            return None
        st = _state(session, tenant_id)
        if any(r.status != ErasureStatus.complete for r in st["requests"]):
            return None  # the erasure requests are still at work
        if not st["live"] and not st["deks_left"]:
            return "delete-key"
        if st["live"] and set(st["live"]) == set(st["held"]) and off.status != T.deferred:
            receipts.build(session, off, st, key_deleted=None, now=now)
            _set_status(session, off, T.deferred)
        return None


def _complete(ctx: Context, tenant_id: uuid.UUID, deleted: bool, now: datetime) -> int:
    with ctx.db.transaction() as session:
        off = _lock(session, tenant_id)
        if off is None:
            return 0
        st = _state(session, tenant_id)
        if st["live"] or st["deks_left"]:
            return 0  # something changed meanwhile; the next run looks again
        off.key_deleted_at, off.completed_at = now, now
        audit.record(
            session, action=AuditAction.tenant_key_delete, actor=OFFBOARD_ACTOR, now=now,
            tenant_id=tenant_id, target=str(tenant_id),
            details={"provider_key_deleted": deleted},
        )  # fmt: skip
        receipts.build(session, off, st, key_deleted=deleted, now=now)
        _set_status(session, off, T.offboarded)
        return 1


def _set_status(session: Session, off: TenantOffboarding, status: TenantStatus) -> None:
    off.status = status.value
    session.add(off)
    tenant = session.get(Tenant, off.tenant_id)
    assert tenant is not None
    tenant.status = status.value
    session.add(tenant)
    session.flush()


# --- reads --------------------------------------------------------------------------------------


def get_offboarding(
    session: Session, *, actor: Actor, tenant: str, now: datetime
) -> OffboardingPublic:
    row = tenant_for_read(session, actor, tenant, now=now)
    off = session.get(TenantOffboarding, row.id)
    if off is None:
        raise NotFoundError(f"tenant {row.name!r} has no offboarding")
    st = _state(session, row.id)
    signed = session.exec(
        select(OffboardingReceipt)
        .where(
            OffboardingReceipt.tenant_id == row.id, col(OffboardingReceipt.signature).is_not(None)
        )
        .order_by(col(OffboardingReceipt.seq))
    ).all()
    return OffboardingPublic(
        tenant=row.name, status=T(off.status), approved_at=off.approved_at, due_at=off.due_at,
        key_deleted_at=off.key_deleted_at, completed_at=off.completed_at,
        erasure_requests=[r.id for r in st["requests"]],
        deferred=[{"recording_id": str(r), "holds": [str(h) for h in st["held"][r]]}
                  for r in sorted(st["held"])],
        receipts=[{"document": json.loads(r.document), "canonical": r.document,
                   "signature": r.signature} for r in signed],
    )  # fmt: skip
