"""Signed offboarding receipts (type :data:`RECEIPT_TYPE`, version :data:`RECEIPT_VERSION`).

A receipt states where an offboarding stands: the erasure requests it opened (each with its own
signed erasure receipt's hash), how many recordings were erased, each recording a legal hold
defers (with the hold ids), whether the tenant's key was deleted, and the previous receipt's
hash (a deferred offboarding gets a second one when it completes). Opaque ids and hashes only:
never a call id or an e-mail. Built in the caller's transaction, signed with the audit key with
no transaction open (:func:`sign_pending`), then cited, hashed, in the audit chain.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from vault import audit
from vault.audit import signing
from vault.context import Context
from vault.errors import KeyProviderUnavailableError
from vault.leases import claim
from vault.models import ErasureItem, OffboardingErasure, OffboardingReceipt, TenantOffboarding
from vault.models import TenantStatus as T
from vault.tags import AuditAction

__all__ = ["OFFBOARD_ACTOR", "RECEIPT_TYPE", "RECEIPT_VERSION", "build", "sign_pending",
           "verify_receipt"]  # fmt: skip

log = logging.getLogger(__name__)
OFFBOARD_ACTOR = "system:offboarding"
RECEIPT_TYPE, RECEIPT_VERSION = "callvault.offboarding-receipt", 1


def build(
    session: Session,
    off: TenantOffboarding,
    st: dict[str, Any],
    *,
    key_deleted: bool | None,
    now: datetime,
) -> OffboardingReceipt:
    previous = session.exec(
        select(OffboardingReceipt)
        .where(OffboardingReceipt.tenant_id == off.tenant_id)
        .order_by(col(OffboardingReceipt.seq).desc())
    ).first()
    seq = 1 if previous is None else previous.seq + 1
    erased = session.exec(
        select(ErasureItem.recording_id)
        .join(OffboardingErasure, col(OffboardingErasure.request_id) == col(ErasureItem.request_id))
        .where(
            OffboardingErasure.tenant_id == off.tenant_id,
            col(ErasureItem.dek_destroyed_at).is_not(None),
        )
    ).all()
    final = key_deleted is not None
    body = {
        "tenant_id": str(off.tenant_id),
        "seq": seq,
        "status": T.offboarded.value if final else T.deferred.value,
        "approved_at": audit.format_ts(off.approved_at),
        "due_at": audit.format_ts(off.due_at),
        "issued_at": audit.format_ts(now),
        "on_time": now <= off.due_at,
        "erasure_requests": [
            {
                "request_id": str(r.id),
                "completed_at": audit.format_ts(r.completed_at),
                "receipt_sha256": audit.hash_canonical(r.receipt) if r.receipt else None,
            }
            for r in st["requests"]
        ],
        "recordings_erased": len(set(erased)),
        "deferred": [
            {"recording_id": str(rid), "holds": [str(h) for h in st["held"][rid]]}
            for rid in sorted(st["held"])
        ],
        # Local keyring: one global KEK, nothing per tenant to delete (False).
        "tenant_key_deleted": key_deleted,
        "previous_receipt_sha256": None
        if previous is None
        else audit.hash_canonical(previous.document),
    }
    row = OffboardingReceipt(
        tenant_id=off.tenant_id, seq=seq, created_at=now,
        document=signing.prepare_document(
            doc_type=RECEIPT_TYPE, version=RECEIPT_VERSION, body=body
        ),
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row


def sign_pending(ctx: Context, now: datetime) -> None:
    """Sign what waits (key provider, no transaction open), then record each signature with its
    audit event; a run that dies in between is finished by the next."""
    with ctx.db.reading() as session:
        unsigned = session.exec(
            select(
                OffboardingReceipt.tenant_id, OffboardingReceipt.seq, OffboardingReceipt.document
            ).where(col(OffboardingReceipt.signature).is_(None))
        ).all()
    for tenant_id, seq, document in unsigned:
        try:
            signature = signing.sign_canonical(ctx.keys, document).signature
        except KeyProviderUnavailableError as exc:  # left for the next run
            log.warning("offboarding receipts: signing failed: %s", type(exc).__name__)
            return
        with ctx.db.transaction() as session:
            row = session.exec(
                claim(
                    session,
                    select(OffboardingReceipt).where(
                        OffboardingReceipt.tenant_id == tenant_id, OffboardingReceipt.seq == seq
                    ),
                ).execution_options(populate_existing=True)
            ).first()
            if row is None or row.signature is not None:
                continue
            row.signature = signature
            session.add(row)
            audit.record(
                session, action=AuditAction.tenant_offboard_receipt, actor=OFFBOARD_ACTOR,
                now=now, tenant_id=tenant_id, target=str(tenant_id),
                details={"seq": seq, "receipt_sha256": audit.hash_canonical(document),
                         "receipt_signature": signature,
                         "status": json.loads(document)["status"]},
            )  # fmt: skip


def verify_receipt(public_key: bytes, document: str, signature: str) -> dict[str, Any]:
    """The receipt, verified under the trusted audit key; ``SignedDocumentError`` otherwise."""
    return signing.verify_document(
        public_key, document, signature, doc_type=RECEIPT_TYPE, versions=(RECEIPT_VERSION,)
    )
