"""Producing an export: the stored recording, decrypted segment by segment, re-encrypted to the
recipient's age key and stored as a new object. No transaction is open while it runs (it reads
the store and calls the key provider); the row and its audit event commit together at the end,
so a crash midway leaves no row, and at most an object that ``sweep-orphans`` would not know:
the store's all-or-nothing ``put_stream`` leaves nothing behind when the stream fails.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, select

from crypto import streaming
from crypto.age import AgeRecipient, encrypt_stream
from crypto.errors import DecryptionError
from vault import audit
from vault.context import Context
from vault.errors import GoneError, IntegrityError, NotFoundError
from vault.exports.tokens import hash_token
from vault.models import Export, ExportKind, Recording, RecordingStatus
from vault.recordings.windows import decrypted
from vault.tags import AuditAction

__all__ = ["Produced", "produce"]


@dataclass(frozen=True, slots=True)
class Produced:
    export_id: uuid.UUID
    token: str  # shown once; only its hash is stored
    size: int
    sha256: str
    plaintext_sha256: str
    expires_at: datetime


def _plaintext(ctx: Context, rec: Recording, dek: bytes, digest: hashlib._Hash) -> Iterator[bytes]:
    ciphertext_size = int(rec.ciphertext_size or 0)
    chunks = decrypted(
        ctx.store_for(rec.region), object_key=rec.object_key, version_id=rec.version_id,
        ciphertext_size=ciphertext_size, recording_id=rec.id, dek=dek,
        start=0, end=streaming.plaintext_size(ciphertext_size),
    )  # fmt: skip
    try:
        for chunk in chunks:
            digest.update(chunk)
            yield chunk
    except DecryptionError:
        raise IntegrityError("the stored recording failed authentication") from None
    # The stream authenticated segment by segment; the whole must also be what was ingested.
    if rec.sha256 is not None and not secrets.compare_digest(digest.hexdigest(), rec.sha256):
        raise IntegrityError("the stored recording does not match its ingest hash")


def produce(
    ctx: Context,
    *,
    kind: ExportKind,
    subject_id: uuid.UUID,
    recording_id: uuid.UUID,
    recipient: AgeRecipient,
    expires_at: datetime,
    now: datetime,
    actor: str = "system:export",
) -> Produced:
    """Re-encrypt one recording to ``recipient`` and register its one-time download."""
    with ctx.db.reading() as session:
        rec = session.get(Recording, recording_id)
        if rec is not None:
            session.expunge(rec)
    if rec is None:
        raise NotFoundError("recording not found")
    if rec.status == RecordingStatus.integrity_failed:
        raise IntegrityError("this recording failed an integrity check and is not exported")
    if rec.status != RecordingStatus.stored or rec.wrapped_dek is None:
        raise GoneError("the recording is no longer stored")

    export_id = uuid.uuid4()
    object_key = f"exports/{export_id}"
    plain, sealed = hashlib.sha256(), hashlib.sha256()
    size = 0
    # The DEK lives in this call only (the closure below), never beyond this export.
    dek = ctx.keys_for(rec.region).unwrap_dek(
        rec.wrapped_dek, tenant_id=rec.tenant_id, recording_id=rec.id
    )

    def age_file() -> Iterator[bytes]:
        nonlocal size
        for chunk in encrypt_stream(_plaintext(ctx, rec, dek, plain), recipient):
            sealed.update(chunk)
            size += len(chunk)
            yield chunk

    # In the recording's region: media never leaves its region to become an export.
    put = ctx.store_for(rec.region).put_stream(object_key, age_file(), size_hint=rec.size)

    token = secrets.token_urlsafe(32) if ctx.rng is None else ctx.rng(32).hex()
    row = Export(
        id=export_id, kind=kind, subject_id=subject_id, recording_id=rec.id,
        tenant_id=rec.tenant_id, recipient_fingerprint=recipient.fingerprint, size=size,
        sha256=sealed.hexdigest(), plaintext_sha256=plain.hexdigest(), created_at=now,
        expires_at=expires_at, region=rec.region, object_key=object_key, version_id=put.version_id,
        token_hash=hash_token(token),
    )  # fmt: skip
    with ctx.db.transaction() as session:
        # Under the recording's row lock, the lock the disposal claim takes: either the claim
        # already ran (refuse, drop the object) or it will find this row and revoke it.
        status = session.exec(
            select(Recording.status).where(col(Recording.id) == rec.id).with_for_update()
        ).first()
        if status == RecordingStatus.stored:
            session.add(row)
            audit.record(
                session, action=AuditAction.export_produce, actor=actor, now=now,
                tenant_id=rec.tenant_id, target=str(export_id),
                details={"kind": str(kind), "subject": str(subject_id), "recording": str(rec.id),
                         "bytes": size, "export_sha256": row.sha256,
                         "recipient_fingerprint": recipient.fingerprint,
                         "expires_at": expires_at.isoformat()},
            )  # fmt: skip
    if status != RecordingStatus.stored:
        ctx.store_for(rec.region).delete_all_versions(object_key)
        raise GoneError("the recording is no longer stored")
    return Produced(
        export_id=export_id, token=token, size=size, sha256=row.sha256,
        plaintext_sha256=row.plaintext_sha256, expires_at=expires_at,
    )  # fmt: skip
