"""Ingest: validate, then encrypt a client's stream into the blob store in two phases.

Phase 1 commits a ``pending`` row that holds the wrapped DEK; phase 2 streams the body through the
segmented AEAD into the store in constant memory; phase 3 flips the row ``pending -> stored`` with
a compare-and-set, together with its audit event. A row is never ``stored`` without its object.
Whatever fails in between is cleaned up here, or else left ``pending``/``failed`` for
:func:`vault.recordings.metadata.sweep_orphans`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session

from crypto import envelope, streaming
from crypto.errors import KeyProviderError
from vault import audit
from vault.authz import Actor, Permission, ensure
from vault.context import Context
from vault.errors import (
    ChecksumMismatchError,
    EmptyBodyError,
    IncompleteBodyError,
    InvalidInputError,
    KeyProviderUnavailableError,
    PermissionDeniedError,
    StoreUnavailableError,
    UnknownTenantError,
    UnsupportedMediaTypeError,
    VaultError,
)
from vault.identity.tenants import resolve_tenant
from vault.kek import wrap_new_dek
from vault.models import (
    HoldMembership,
    Principal,
    Recording,
    RecordingPurpose,
    RecordingStatus,
    Tenant,
)
from vault.recordings.pipeline import pipelined
from vault.retention import holds
from vault.storage import StorageError
from vault.tags import AuditAction, Outcome

__all__ = ["ingest"]

log = logging.getLogger(__name__)

S = RecordingStatus
MAX_CALL_ID = 256
MAX_CONTENT_TYPE = 255
# A media type token (RFC 9110); parameters after ";" are kept as sent.
_MEDIA_SUBTYPE = r"[A-Za-z0-9!#$&^_.+-]{1,127}"
_MEDIA_RE = re.compile(rf"(?:video|audio)/{_MEDIA_SUBTYPE}|application/octet-stream", re.IGNORECASE)
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")


def ingest(
    ctx: Context,
    *,
    actor: Actor,
    tenant: str,
    purposes: list[str],
    call_id: str | None,
    recorded_at: datetime | None,
    content_type: str,
    chunks: Iterable[bytes],
    expected_sha256: str | None = None,
    expected_length: int | None = None,
) -> Recording:
    """Store one recording; return its ``stored`` row. Nothing is stored on any error."""
    # --- checks, in the documented order, before anything is written --------------------------
    ensure(actor, Permission.recording_ingest)
    content_type = _check_content_type(content_type)
    with ctx.db.session() as session:
        target = _resolve_tenant_for(session, actor, tenant)
    names = _check_purposes(ctx, purposes)
    if call_id is not None and (not isinstance(call_id, str) or len(call_id) > MAX_CALL_ID):
        raise InvalidInputError(f"call_id must be a string of at most {MAX_CALL_ID} characters")
    if expected_sha256 is not None:
        if not isinstance(expected_sha256, str) or not _SHA256_RE.fullmatch(expected_sha256):
            raise InvalidInputError("X-Content-SHA256 must be 64 hex characters")
        expected_sha256 = expected_sha256.lower()
    if expected_length is not None and not _is_length(expected_length):
        raise InvalidInputError("expected length must be a non-negative integer")
    if recorded_at is not None and recorded_at.tzinfo is None:
        raise InvalidInputError("recorded_at must carry a time zone")
    source = iter(chunks)
    first = _first_nonempty(source)  # the client's own errors propagate: no row exists yet
    if first is None:
        raise EmptyBodyError()

    # --- phase 1: a pending row with the wrapped DEK -----------------------------------------
    rid = uuid.UUID(bytes=ctx.rng(16), version=4) if ctx.rng else uuid.uuid4()
    dek = envelope.new_dek(ctx.rng)
    now = ctx.now()
    rec = Recording(
        id=rid,
        tenant_id=target.id,
        call_id=call_id,
        status=S.pending,
        content_type=content_type,
        # Only callvault's own ids: nothing the client sent (call ids, file names) leaks to S3.
        object_key=f"{target.id}/{rid}",
        recorded_at=recorded_at or now,
        ingested_at=now,
        updated_at=now,
    )
    with ctx.db.transaction() as session:
        # Wrapped inside this transaction, under the lock KEK retirement takes, with the newest
        # version the DB records: no retirement can destroy it before this row is committed.
        try:
            wrapped = wrap_new_dek(ctx, session, dek=dek, tenant=str(target.id), recording_id=rid)
        except KeyProviderError as exc:
            raise KeyProviderUnavailableError() from exc
        rec.wrapped_dek = envelope.encode_wrapped(wrapped)
        rec.kek_version = wrapped.kek_version
        # created_by is a foreign key: the operator and ad-hoc actors have no principal row.
        if not actor.system and session.get(Principal, actor.id) is not None:
            rec.created_by = actor.id
        session.add(rec)
        for name in names:
            session.add(
                RecordingPurpose(
                    recording_id=rid,
                    purpose=name,
                    expires_at=now + ctx.policy.purpose(name).retention,
                )
            )
        session.flush()
        _holds_for_new_recording(session, rec, now)

    # --- phase 2: encrypt and stream to the store --------------------------------------------
    tally = _Tally()
    enc = streaming.Encryptor(dek=dek, recording_id=rid, rng=ctx.rng)
    body = _ciphertext(first, source, enc, tally, expected_sha256, expected_length)
    hint = streaming.ciphertext_size(expected_length) if expected_length is not None else None
    try:
        # Encrypt and hash in this thread while a helper thread uploads: the two overlap.
        result = pipelined(
            body, lambda chunks: ctx.store.put_stream(rec.object_key, chunks, size_hint=hint)
        )
        if result.size != tally.cipher_bytes:
            raise StorageError(f"store wrote {result.size} bytes, expected {tally.cipher_bytes}")
    except BaseException as exc:
        if exc is tally.client_error:
            _abandon(ctx, rec, actor, reason=_reason(exc))
            raise
        if isinstance(exc, StorageError):
            _abandon(ctx, rec, actor, reason=StoreUnavailableError.code)
            raise StoreUnavailableError() from exc
        _abandon(ctx, rec, actor, reason="internal-error")
        raise

    # --- phase 3: compare-and-set pending -> stored, audited in the same transaction ---------
    try:
        with ctx.db.transaction() as session:
            now = ctx.now()
            done = session.exec(
                sa.update(Recording)
                .where(Recording.id == rid, Recording.status == S.pending)  # type: ignore[arg-type]
                .values(
                    status=S.stored,
                    size=tally.size,
                    ciphertext_size=tally.cipher_bytes,
                    sha256=tally.plain.hexdigest(),
                    ciphertext_sha256=tally.cipher.hexdigest(),
                    version_id=result.version_id,
                    updated_at=now,
                )
            )
            if done.rowcount != 1:
                raise _Abandoned()
            audit.record(
                session,
                action=AuditAction.recording_ingest,
                actor=actor.audit_name,
                now=now,
                tenant_id=target.id,
                target=str(rid),
                details={
                    "ciphertext_sha256": tally.cipher.hexdigest(),
                    "size": tally.size,
                    "purposes": names,
                    "content_type": content_type,
                },
            )
            stored = session.get(Recording, rid)
            assert stored is not None
    except _Abandoned:
        # The sweeper took the row while we were uploading (an upload slower than its
        # threshold); our object is not referenced by anything, so remove it.
        _abandon(ctx, rec, actor, reason="abandoned")
        raise StoreUnavailableError("the upload took too long and was abandoned; retry") from None
    except BaseException:
        _abandon(ctx, rec, actor, reason="internal-error", may_be_stored=True)
        raise
    _mirror_holds(ctx, rid)
    return stored


def _mirror_holds(ctx: Context, rid: uuid.UUID) -> None:
    """Mirror an open hold to S3 Object Lock now that the object exists (defence in depth).

    Never fails the ingest: the recording is stored, and the DB hold is what blocks disposal.
    """
    try:
        holds.mirror_new_recording(ctx, rid)
    except Exception:
        log.warning("ingest: could not mirror legal holds of %s to the store", rid, exc_info=True)


def _holds_for_new_recording(
    session: Session, recording: Recording, now: datetime
) -> list[uuid.UUID]:
    """Memberships of open legal holds that match a new recording.

    Called in the transaction that inserts the pending row, under the shared hold lock, so a
    hold created afterwards sees the row and one created before is found here.
    """
    return holds.memberships_for_new_recording(session, recording, now)


# --- validation -----------------------------------------------------------------------------------


def _check_content_type(content_type: str) -> str:
    if not isinstance(content_type, str):
        raise UnsupportedMediaTypeError()
    value = content_type.strip()
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise UnsupportedMediaTypeError("Content-Type contains control characters")
    if not _MEDIA_RE.fullmatch(value.split(";", 1)[0].strip()):
        raise UnsupportedMediaTypeError()
    if len(value) > MAX_CONTENT_TYPE:
        raise UnsupportedMediaTypeError(f"Content-Type longer than {MAX_CONTENT_TYPE} characters")
    return value


def _resolve_tenant_for(session: Session, actor: Actor, ref: str) -> Tenant:
    if actor.all_tenants:
        return resolve_tenant(session, ref)
    # A scoped actor learns nothing about tenants outside its scope, not even their existence.
    try:
        tenant = resolve_tenant(session, ref)
    except UnknownTenantError:
        tenant = None
    if tenant is None or not actor.in_scope(tenant.id):
        raise PermissionDeniedError("tenant outside the principal's scope")
    return tenant


def _check_purposes(ctx: Context, purposes: list[str]) -> list[str]:
    if not isinstance(purposes, list | tuple) or not all(isinstance(p, str) for p in purposes):
        raise InvalidInputError("purposes must be a list of names")
    names = sorted({p.strip() for p in purposes if p.strip()})
    if not names:
        raise InvalidInputError("at least one purpose is required")
    for name in names:
        ctx.policy.purpose(name)  # UnknownPurposeError names it
    return names


def _is_length(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _first_nonempty(source: Iterator[bytes]) -> bytes | None:
    for chunk in source:
        if chunk:
            return chunk
    return None


# --- streaming ------------------------------------------------------------------------------------


class _Abandoned(Exception):
    """The pending -> stored compare-and-set found the row no longer pending."""


class _Tally:
    """Running hashes and counts, filled in while the store pulls the ciphertext."""

    def __init__(self) -> None:
        self.plain = hashlib.sha256()
        self.cipher = hashlib.sha256()
        self.size = 0
        self.cipher_bytes = 0
        # The exception that the client's side caused, to tell it apart from store failures.
        self.client_error: BaseException | None = None

    def fail(self, exc: BaseException) -> BaseException:
        self.client_error = exc
        return exc


def _ciphertext(
    first: bytes,
    source: Iterator[bytes],
    enc: streaming.Encryptor,
    tally: _Tally,
    expected_sha256: str | None,
    expected_length: int | None,
) -> Iterator[bytes]:
    chunk: bytes = first
    while True:
        if chunk:
            tally.plain.update(chunk)
            tally.size += len(chunk)
            if expected_length is not None and tally.size > expected_length:
                raise tally.fail(InvalidInputError("the body is longer than its declared length"))
            out = enc.update(chunk)
            if out:
                tally.cipher.update(out)
                tally.cipher_bytes += len(out)
                yield out
        try:
            chunk = next(source)
        except StopIteration:
            break
        except BaseException as exc:  # a cut-off body, a client disconnect: the client's failure
            tally.fail(exc)
            raise
    # Verified before the last segment is sealed, so a bad body never becomes a whole object.
    if expected_length is not None and tally.size != expected_length:
        raise tally.fail(IncompleteBodyError())
    if expected_sha256 is not None and tally.plain.hexdigest() != expected_sha256:
        raise tally.fail(ChecksumMismatchError())
    out = enc.finalize()
    tally.cipher.update(out)
    tally.cipher_bytes += len(out)
    yield out


# --- failure cleanup ------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    return exc.code if isinstance(exc, VaultError) else "client-error"


def _abandon(
    ctx: Context, rec: Recording, actor: Actor, *, reason: str, may_be_stored: bool = False
) -> None:
    """Best-effort cleanup of a failed ingest; whatever it cannot do, the sweeper does later."""
    try:
        if may_be_stored:
            # The commit of phase 3 may have gone through before the error: then the row is
            # stored and its object must stay.
            with ctx.db.session() as session:
                current = session.get(Recording, rec.id)
                if current is None or current.status == S.stored:
                    return
        deleted = True
        try:
            ctx.store.delete_all_versions(rec.object_key)
        except Exception:
            log.warning("ingest cleanup: could not delete %s", rec.object_key, exc_info=True)
            deleted = False
        now = ctx.now()
        if deleted:
            try:
                with ctx.db.transaction() as session:
                    _delete_rows(session, rec.id)
                    _audit_failed(session, rec, actor, reason, now)
                return
            except Exception:  # e.g. a row that something else references by now
                log.warning("ingest cleanup: could not delete row %s", rec.id, exc_info=True)
        # The object may still be there: keep a failed row without its DEK so that the media is
        # unreadable at once and the sweeper removes the object later.
        with ctx.db.transaction() as session:
            session.exec(
                sa.update(Recording)
                .where(Recording.id == rec.id, Recording.status == S.pending)  # type: ignore[arg-type]
                .values(status=S.failed, wrapped_dek=None, dek_destroyed_at=now, updated_at=now)
            )
            _audit_failed(session, rec, actor, reason, now)
    except Exception:
        # Never mask the caller's error; a pending row left behind is the sweeper's job.
        log.warning("ingest cleanup of %s failed", rec.id, exc_info=True)


def _delete_rows(session: Session, rid: uuid.UUID) -> None:
    # A hold's membership of a recording that never existed means nothing: it goes too.
    session.exec(sa.delete(HoldMembership).where(HoldMembership.recording_id == rid))  # type: ignore[arg-type]
    session.exec(sa.delete(RecordingPurpose).where(RecordingPurpose.recording_id == rid))  # type: ignore[arg-type]
    session.exec(
        sa.delete(Recording).where(
            Recording.id == rid,  # type: ignore[arg-type]
            Recording.status.in_([S.pending, S.failed]),  # type: ignore[union-attr]
        )
    )


def _audit_failed(
    session: Session, rec: Recording, actor: Actor, reason: str, now: datetime
) -> None:
    audit.record(
        session,
        action=AuditAction.recording_ingest_failed,
        actor=actor.audit_name,
        now=now,
        outcome=Outcome.failed,
        tenant_id=rec.tenant_id,
        target=str(rec.id),
        details={"reason": reason},
    )
