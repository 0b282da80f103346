"""Signed retention records in the object store: erasure receipts and disposal records.

A database restored from an older backup forgets every erasure and disposal made after the
backup: erased call ids and live rows come back. The store keeps what the database forgets, so
each such fact is also exported there, signed with the audit key, under COMPLIANCE retention
(where the bucket has Object Lock); ``callvault restore reconcile``
(:mod:`vault.retention.reconcile`) re-applies them.

- **Erasure receipt**: the receipt an erasure request completed with (already signed), added
  in the transaction that completes the request (:func:`add_receipt`).
- **Disposal record**: one per batch that reaches ``disposed`` (:func:`add_disposal_record`, in
  the transaction of ``disposing -> disposed``), a signed document of type ``DISPOSAL_RECORD``
  v1 naming, per recording, its id, tenant id, ciphertext hash, KEK version, DEK-destruction
  time and disposal reason.

Both carry opaque ids and ciphertext hashes only: never a call id, an e-mail or a plaintext hash.
Rows are committed first; :func:`publish_pending` then signs (key provider) and exports (store)
with no transaction open. A key provider or store that fails leaves the row for the next run of
the dispose or erasure job, which calls :func:`publish_pending` again.

Objects: ``retention/erasure-receipts/{request_id}.json`` and
``retention/disposal-records/{record_id}.json``, each ``{"document": <signed canonical text>,
"signature": <hex>}``. Readers verify with the trusted key only (pinned or the provider's).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlmodel import Session, col, select

from vault import audit
from vault.audit import signing
from vault.audit.signed_rows import export_signed
from vault.context import Context
from vault.errors import KeyProviderUnavailableError, StorageError
from vault.models import Recording, RetentionRecord
from vault.retention import receipts

__all__ = [
    "DISPOSAL", "DISPOSAL_VERSION", "ERASURE", "PREFIXES", "add_disposal_record", "add_receipt",
    "export_bytes", "parse_export", "publish_pending", "verify_record",
]  # fmt: skip

log = logging.getLogger(__name__)

ERASURE, DISPOSAL = "erasure-receipt", "disposal-record"
DISPOSAL_VERSION = 1
PREFIXES = {ERASURE: "retention/erasure-receipts/", DISPOSAL: "retention/disposal-records/"}
MAX_RECORD_BYTES = 4 << 20  # a batch of 100 recordings is ~40 KiB; anything huge is not ours


def object_key(kind: str, record_id: uuid.UUID) -> str:
    return f"{PREFIXES[kind]}{record_id}.json"


# --- written in the caller's transaction ---------------------------------------------------------


def add_receipt(
    session: Session, *, request_id: uuid.UUID, canonical: str, signature: str, now: datetime
) -> None:
    """Queue the export of a completed erasure request's signed receipt."""
    session.add(
        RetentionRecord(
            id=request_id, kind=ERASURE, created_at=now, document=canonical, signature=signature
        )
    )


def add_disposal_record(
    session: Session, recording_ids: Sequence[uuid.UUID], *, now: datetime
) -> RetentionRecord | None:
    """Queue a disposal record (signed later) for recordings that have just reached
    ``disposed``; None when there are none."""
    if not recording_ids:
        return None
    rows = session.exec(
        select(
            Recording.id, Recording.tenant_id, Recording.ciphertext_sha256, Recording.kek_version,
            Recording.dek_destroyed_at, Recording.disposal_reason,
        )
        .where(col(Recording.id).in_(sorted(set(recording_ids))))
        .order_by(col(Recording.id))
    ).all()  # fmt: skip
    record = RetentionRecord(kind=DISPOSAL, created_at=now, document="")
    items = [
        {
            "recording_id": str(rid),
            "tenant_id": str(tenant_id),
            "ciphertext_sha256": sha,
            "kek_version": kek_version,
            "dek_destroyed_at": audit.optional_ts(destroyed),
            "disposal_reason": reason,
        }
        for rid, tenant_id, sha, kek_version, destroyed, reason in rows
    ]
    record.document = signing.prepare_document(
        doc_type=signing.DISPOSAL_RECORD, version=DISPOSAL_VERSION,
        body={"record_id": str(record.id), "disposed_at": audit.format_ts(now), "items": items},
    )  # fmt: skip
    session.add(record)
    return record


# --- signed and exported with no transaction open -------------------------------------------------


def export_bytes(record: RetentionRecord) -> bytes:
    doc = {"document": record.document, "signature": record.signature}
    return (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode("utf-8")


def publish_pending(ctx: Context, *, now: datetime, limit: int = 1000) -> int:
    """Sign what waits for a signature, then export what waits for its export; returns how
    many were exported. A failing key provider or store is logged and left for the next run."""
    with ctx.db.reading() as session:
        unsigned = session.exec(
            select(RetentionRecord.id, RetentionRecord.document)
            .where(col(RetentionRecord.signature).is_(None))
            .order_by(col(RetentionRecord.created_at), col(RetentionRecord.id))
            .limit(limit)
        ).all()
    try:
        for record_id, document in unsigned:
            signature = signing.sign_canonical(ctx.keys, document).signature
            with ctx.db.transaction() as session:
                session.execute(
                    sa.update(RetentionRecord)
                    .where(
                        col(RetentionRecord.id) == record_id,
                        col(RetentionRecord.signature).is_(None),
                    )
                    .values(signature=signature)
                )
    except KeyProviderUnavailableError as exc:
        log.warning("retention records: signing failed (retried next run): %s", type(exc).__name__)
    with ctx.db.reading() as session:
        pending = session.exec(
            select(RetentionRecord)
            .where(
                col(RetentionRecord.object_key).is_(None),
                col(RetentionRecord.signature).is_not(None),
            )
            .order_by(col(RetentionRecord.created_at), col(RetentionRecord.id))
            .limit(limit)
        ).all()
    done = 0
    try:
        for record in pending:
            key = object_key(record.kind, record.id)
            export_signed(ctx, RetentionRecord, record.id, key, export_bytes(record), now=now)
            done += 1
    except StorageError as exc:
        log.warning("retention records: export failed (retried next run): %s", exc)
    return done


# --- reading an export back -----------------------------------------------------------------------


def parse_export(data: bytes) -> tuple[str, str]:
    """(document, signature) of an exported object; ValueError when it is not one."""
    if len(data) > MAX_RECORD_BYTES:
        raise ValueError("too large to be a retention record")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("not a JSON export") from None
    if not isinstance(doc, dict) or set(doc) != {"document", "signature"}:
        raise ValueError("not a retention record export")
    document, signature = doc["document"], doc["signature"]
    if not isinstance(document, str) or not isinstance(signature, str):
        raise ValueError("not a signed retention record")
    return document, signature


def verify_record(
    kind: str, public_key: bytes | Ed25519PublicKey, document: str, signature: str
) -> dict[str, Any]:
    """The verified document of that kind; ``signing.SignedDocumentError`` otherwise."""
    if kind == ERASURE:
        return receipts.verify_receipt(public_key, document, signature)
    return signing.verify_document(
        public_key, document, signature, doc_type=signing.DISPOSAL_RECORD,
        versions=(DISPOSAL_VERSION,),
    )  # fmt: skip
