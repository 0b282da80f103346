"""Erasure receipts: the signed proof that an erasure request was carried out.

A receipt is a signed document (:mod:`vault.audit.signing`) of type ``ERASURE_RECEIPT``, version
``RECEIPT_VERSION``: what was destroyed and when, the ciphertext hashes, the holds checked and the
KEK retirement times; never a call id. Receipts signed before type/version existed read as v1.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlmodel import Session, col, select

from vault import audit
from vault.audit import signing
from vault.models import ErasureItem, ErasureRequest, HoldMembership

__all__ = ["RECEIPT_TYPE", "RECEIPT_VERSION", "build", "verify_receipt"]

RECEIPT_TYPE, RECEIPT_VERSION = signing.ERASURE_RECEIPT, 1


def build(
    session: Session, req: ErasureRequest, items: list[ErasureItem], now: datetime
) -> str:
    """The receipt's canonical text (see :mod:`vault.audit.signing`), not yet signed."""
    ids = [i.recording_id for i in items]
    checked: dict[uuid.UUID, list[str]] = {rid: [] for rid in ids}
    for rid, hid in session.exec(
        select(HoldMembership.recording_id, HoldMembership.hold_id)
        .where(col(HoldMembership.recording_id).in_(ids))
        .order_by(col(HoldMembership.hold_id))
    ).all():
        checked[rid].append(str(hid))

    receipt: dict[str, Any] = {
        "request_id": str(req.id),
        "tenant_id": None if req.tenant_id is None else str(req.tenant_id),
        "created_at": audit.optional_ts(req.created_at),
        "due_at": audit.optional_ts(req.due_at),
        "completed_at": audit.format_ts(now),
        "on_time": now <= req.due_at,
        "items": [
            {
                "recording_id": str(i.recording_id),
                "ciphertext_sha256": i.ciphertext_sha256,
                "dek_destroyed_at": audit.optional_ts(i.dek_destroyed_at),
                "media_destroyed_at": audit.optional_ts(i.media_destroyed_at),
                "kek_version": i.kek_version,
                "kek_retired_at": audit.optional_ts(i.kek_retired_at),
                "deferred_by": None if i.deferred_by is None else str(i.deferred_by),
                "holds_checked": checked[i.recording_id],
            }
            for i in items
        ],
        "holds_checked": sorted({h for hs in checked.values() for h in hs}),
        "signature": {"alg": "Ed25519", "over": "the canonical JSON of this receipt"},
    }
    return signing.prepare_document(doc_type=RECEIPT_TYPE, version=RECEIPT_VERSION, body=receipt)


def verify_receipt(
    public_key: bytes | Ed25519PublicKey, canonical: str, signature: str
) -> dict[str, Any]:
    """The receipt, verified under the audit key (pass the trusted one, never a stored copy).

    ``signing.SignedDocumentError`` when the signature, the canonical form, the type or the
    version is wrong: a checkpoint or any other document signed with the same key is refused.
    Receipts from before typed documents come back as version 1 with ``type`` ``RECEIPT_TYPE``.
    """
    return signing.verify_document(
        public_key, canonical, signature, doc_type=RECEIPT_TYPE, versions=(RECEIPT_VERSION,)
    )
