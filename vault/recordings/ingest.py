"""Ingest: validate, then encrypt a client's stream into the blob store in three phases.

Phase 1 commits a ``pending`` row that holds the wrapped DEK (wrapped outside any transaction;
see :mod:`vault.kek`); phase 2 streams the body through the segmented AEAD into the store in
constant memory, with no transaction open; phase 3 moves the row ``pending -> stored`` through
the lifecycle (compare-and-set and audit event together). A row is never ``stored`` without its
object. Whatever fails in between is cleaned up here, or else left ``pending``/``failed`` for
:func:`vault.recordings.sweep.sweep_orphans`.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session

from crypto import streaming
from crypto.keys.base import WrappedKey
from vault import authz, kek_versions, lifecycle
from vault.authz import Actor, Permission
from vault.context import Context
from vault.errors import (
    EmptyBodyError,
    InvalidInputError,
    PayloadTooLargeError,
    StorageError,
    StoreUnavailableError,
    TenantOffboardingError,
    UnsupportedMediaTypeError,
    VaultError,
)
from vault.identity.tenants import tenant_for_write
from vault.models import (
    Principal,
    Recording,
    RecordingPurpose,
    RecordingStatus,
    Tenant,
    TenantStatus,
)
from vault.policy import Policy
from vault.recordings.pipeline import Tally, ciphertext, pipelined
from vault.retention import holds, holds_mirror
from vault.tenants import policy as tenant_policy

__all__ = ["Derivation", "ingest"]

log = logging.getLogger(__name__)

S = RecordingStatus
MAX_CALL_ID = 256
MAX_CONTENT_TYPE = 255
# A media type (RFC 9110 tokens) of video/*, audio/* or application/octet-stream, with only the
# parameters players use, as tokens or quoted text of safe characters. It is served back on
# playback, so nothing else a client wrote survives: the normalised form is what is stored.
_MEDIA_SUBTYPE = r"[A-Za-z0-9!#$&^_.+-]{1,127}"
_MEDIA_RE = re.compile(rf"(?:video|audio)/{_MEDIA_SUBTYPE}|application/octet-stream", re.IGNORECASE)
_PARAMS = frozenset({"codecs", "profiles"})
_PARAM_RE = re.compile(
    r'\s*([A-Za-z]+)\s*=\s*(?:([A-Za-z0-9.+-]{1,64})|"([A-Za-z0-9.,+ -]{1,128})")\s*'
)
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Derivation:
    """Ingest of a derivative (redaction) rather than a client's upload.

    ``verify`` runs after the object is written and before anything commits, with no transaction
    open (it may sign); raising discards the object and the row. ``record`` runs inside the
    transaction that makes the row ``stored`` (the manifest is written with it).
    """

    parent_id: uuid.UUID
    expires: dict[str, datetime] = field(default_factory=dict)  # purpose -> its expiry
    verify: Callable[[uuid.UUID, Tally], None] = lambda _rid, _tally: None
    record: Callable[[Session, uuid.UUID], None] = lambda _session, _rid: None


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
    max_bytes: int | None = None,
    derivation: Derivation | None = None,
) -> Recording:
    """Store one recording; return its ``stored`` row. Nothing is stored on any error."""
    # --- checks, in the documented order, before anything is written --------------------------
    with ctx.db.reading() as session:
        authz.authorize(session, actor, Permission.recording_ingest, now=ctx.now())
        content_type = _check_content_type(content_type)
        target = tenant_for_write(
            session, actor, tenant, Permission.recording_ingest, now=ctx.now()
        )
        _check_tenant_open(target)
        # The tenant's approved restrictions apply to new ingests at once.
        policy = tenant_policy.effective_for(session, ctx.policy, [target.id])
    # Residency: the tenant's region holds the object and wraps the DEK (a region the settings
    # lost is refused here, before anything is written).
    region = ctx.region_of(target.region)
    names = _check_purposes(policy, purposes)
    if call_id is not None and (not isinstance(call_id, str) or len(call_id) > MAX_CALL_ID):
        raise InvalidInputError(f"call_id must be a string of at most {MAX_CALL_ID} characters")
    if expected_sha256 is not None:
        if not isinstance(expected_sha256, str) or not _SHA256_RE.fullmatch(expected_sha256):
            raise InvalidInputError("X-Content-SHA256 must be 64 hex characters")
        expected_sha256 = expected_sha256.lower()
    if expected_length is not None and not _is_length(expected_length):
        raise InvalidInputError("expected length must be a non-negative integer")
    if max_bytes is not None and expected_length is not None and expected_length > max_bytes:
        raise PayloadTooLargeError(f"at most {max_bytes} bytes per recording")
    if recorded_at is not None and recorded_at.tzinfo is None:
        raise InvalidInputError("recorded_at must carry a time zone")
    source = iter(chunks)
    first = _first_nonempty(source)  # the client's own errors propagate: no row exists yet
    if first is None:
        raise EmptyBodyError()

    # --- phase 1: a pending row with the wrapped DEK -----------------------------------------
    rid = uuid.UUID(bytes=ctx.rng(16), version=4) if ctx.rng else uuid.uuid4()
    dek = ctx.keys.new_dek(ctx.rng)
    now = ctx.now()

    def insert(session: Session, wrapped: WrappedKey) -> Recording:
        # An offboarding approved since the checks: refuse here too. One approved between this
        # commit and the upload's end is caught by the offboarding job, which erases late rows.
        current = session.get(Tenant, target.id, populate_existing=True)
        _check_tenant_open(current or target)
        rec = Recording(
            id=rid, tenant_id=target.id, call_id=call_id,
            content_type=content_type,
            # Only callvault's own ids: nothing the client sent (call ids, names) reaches S3.
            object_key=f"{target.id}/{rid}", recorded_at=recorded_at or now, ingested_at=now,
            updated_at=now, wrapped_dek=ctx.keys.encode(wrapped), kek_version=wrapped.kek_version,
            region=region,
            parent_id=derivation.parent_id if derivation else None,
            # created_by is a foreign key: the operator and ad-hoc actors have no principal row.
            created_by=actor.id if not actor.system and session.get(Principal, actor.id) else None,
        )  # fmt: skip
        lifecycle.create(session, rec)
        for name in names:
            expires = now + policy.purpose(name).retention
            if derivation is not None and name in derivation.expires:
                expires = derivation.expires[name]
            session.add(RecordingPurpose(recording_id=rid, purpose=name, expires_at=expires))
        session.flush()
        # Under the shared hold lock: a hold created afterwards sees the row, one created
        # before is found here.
        holds.memberships_for_new_recording(session, rec, now)
        return rec

    rec = kek_versions.store_new_dek(
        ctx, dek=dek, tenant_id=target.id, recording_id=rid, write=insert, region=region
    )
    store = ctx.store_for(region)

    # --- phase 2: encrypt and stream to the store --------------------------------------------
    tally = Tally()
    enc = streaming.Encryptor(dek=dek, recording_id=rid, rng=ctx.rng)
    body = ciphertext(first, source, enc, tally, expected_sha256, expected_length, max_bytes)
    # A declared length fixes the ciphertext's: the store may stream it in one request (the
    # pipeline fails a body of another length before its last segment).
    exact = streaming.ciphertext_size(expected_length) if expected_length is not None else None
    try:
        # Encrypt and hash in this thread while a helper thread uploads: the two overlap.
        result = pipelined(
            body, lambda chunks: store.put_stream(rec.object_key, chunks, exact_size=exact)
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
    if derivation is not None:
        try:
            derivation.verify(rid, tally)
        except BaseException as exc:
            _abandon(ctx, rec, actor, reason=_reason(exc))
            raise

    # --- phase 3: pending -> stored, audited in the same transaction -------------------------
    try:
        with ctx.db.transaction() as session:
            moved = lifecycle.transition(
                session, rid, from_=S.pending, to=S.stored, actor=actor.audit_name,
                now=ctx.now(),
                values={
                    "size": tally.size, "ciphertext_size": tally.cipher_bytes,
                    "sha256": tally.plain.hexdigest(),
                    "ciphertext_sha256": tally.cipher.hexdigest(),
                    "version_id": result.version_id,
                },
                details={"size": tally.size, "purposes": names, "content_type": content_type},
            )  # fmt: skip
            if not moved:
                raise _Abandoned()
            if derivation is not None:
                derivation.record(session, rid)
            stored = session.get(Recording, rid, populate_existing=True)
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
        holds_mirror.mirror_new_recording(ctx, rid)
    except Exception:
        log.warning("ingest: could not mirror legal holds of %s to the store", rid, exc_info=True)


# --- validation -----------------------------------------------------------------------------------


def _check_content_type(content_type: str) -> str:
    """The normalised Content-Type (lower-case type, known parameters re-quoted), or 415."""
    if not isinstance(content_type, str) or len(content_type) > MAX_CONTENT_TYPE:
        raise UnsupportedMediaTypeError(f"Content-Type: at most {MAX_CONTENT_TYPE} characters")
    media, *params = content_type.split(";")
    media = media.strip().lower()
    if not _MEDIA_RE.fullmatch(media):
        raise UnsupportedMediaTypeError()
    out = [media]
    for raw in params:
        m = _PARAM_RE.fullmatch(raw)
        if m is None or m.group(1).lower() not in _PARAMS:
            raise UnsupportedMediaTypeError(
                "Content-Type parameters: only codecs and profiles, as a token or quoted text"
            )
        value = m.group(2) if m.group(2) is not None else m.group(3).strip()
        out.append(f'{m.group(1).lower()}="{value}"')
    return "; ".join(out)


def _check_tenant_open(tenant: Tenant) -> None:
    if tenant.status != TenantStatus.active:
        raise TenantOffboardingError(f"tenant {tenant.name!r} is {tenant.status}: no new ingest")


def _check_purposes(policy: Policy, purposes: list[str]) -> list[str]:
    if not isinstance(purposes, list | tuple) or not all(isinstance(p, str) for p in purposes):
        raise InvalidInputError("purposes must be a list of names")
    names = sorted({p.strip() for p in purposes if p.strip()})
    if not names:
        raise InvalidInputError("at least one purpose is required")
    for name in names:
        policy.purpose(name)  # UnknownPurposeError (or PurposeDisabledError) names it
    return names


def _is_length(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _first_nonempty(source: Iterator[bytes]) -> bytes | None:
    for chunk in source:
        if chunk:
            return chunk
    return None


class _Abandoned(Exception):
    """The pending -> stored compare-and-set found the row no longer pending."""


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
            with ctx.db.reading() as session:
                current = session.get(Recording, rec.id)
                if current is None or current.status == S.stored:
                    return
        try:
            ctx.store_for(rec.region).delete_all_versions(rec.object_key)
        except Exception:
            log.warning("ingest cleanup: could not delete the object of %s", rec.id, exc_info=True)
        else:
            try:
                with ctx.db.transaction() as session:
                    if lifecycle.discard(
                        session, rec.id, actor=actor.audit_name, now=ctx.now(), reason=reason
                    ):
                        return
            except Exception:  # e.g. a row that something else references by now
                log.warning("ingest cleanup: could not delete row %s", rec.id, exc_info=True)
        # The object may still be there: keep a failed row without its DEK so that the media is
        # unreadable at once and the sweeper removes the object later.
        with ctx.db.transaction() as session:
            lifecycle.transition(
                session, rec.id, from_=S.pending, to=S.failed, actor=actor.audit_name,
                now=ctx.now(), details={"reason": reason},
            )  # fmt: skip
    except Exception:
        # Never mask the caller's error; a pending row left behind is the sweeper's job.
        log.warning("ingest cleanup of %s failed", rec.id, exc_info=True)
