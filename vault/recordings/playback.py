"""Playback: the audited, grant-bound read of a recording's plaintext, with HTTP ``Range``.

A read has two phases, and the route calls them in this order:

1. :func:`open_read` authorises the caller through its grant, resolves the byte range, unwraps
   the DEK and then **commits** the ``recording.read`` audit event in a transaction of its own.
   Only when that commit succeeds does it return a :class:`ReadPlan`; if the event cannot be
   written the read is refused (``AuditUnavailableError``, fail closed) and nothing is sent.
2. :func:`stream` yields the plaintext segment by segment. Segments are fetched by ranged GETs
   of exactly the recorded object version (windows of whole segments, read ahead; never past
   the segments the range covers) and authenticated by ``decrypt_range`` before release; then
   the grant is re-checked (fresh short session, ``ctx.now()``), so revocation, expiry, an
   ended purpose or disposal stop a running stream at the next segment. A segment that fails
   authentication is never yielded: an ``integrity.alarm`` is audited, the recording becomes
   ``integrity_failed`` and the stream is aborted.

Choices:

- The read event over-approximates: it names the whole range granted to this response. A
  stream cut short (revocation, client gone, integrity failure) writes no extra event; the
  revocation and the alarm are audited where they happen.
- ``integrity_failed`` recordings are not served at all (``IntegrityError``) until someone has
  looked at them, even ranges whose segments still authenticate.
- Denied reads (no usable grant) are audited as ``permission.denied``.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from crypto import envelope, streaming
from crypto.errors import DecryptionError, KeyDestroyedError, KeyProviderError
from vault import audit
from vault.access import grants
from vault.authz import Actor, Permission
from vault.context import Context
from vault.errors import (
    AuditUnavailableError,
    GoneError,
    IntegrityError,
    KeyProviderUnavailableError,
    PermissionDeniedError,
    RangeNotSatisfiableError,
    StoreUnavailableError,
)
from vault.models import Recording, RecordingStatus
from vault.recordings.windows import WindowReader, ciphertext_span
from vault.storage import BlobNotFoundError, StorageError
from vault.tags import AuditAction, Outcome

__all__ = ["ReadPlan", "ciphertext_span", "open_read", "parse_range", "stream"]

log = logging.getLogger(__name__)

# One range-spec: "a-b", "a-" or "-n" (RFC 9110 §14.1.1), digits ASCII only.
_SPEC_RE = re.compile(r"([0-9]*)-([0-9]*)", re.ASCII)
# Longer numbers are clamped: no recording comes near 10**18 bytes, and int() of a few thousand
# digits would raise (or burn CPU) on hostile input.
_MAX_DIGITS = 18
_HUGE = 10**18


# --- Range ----------------------------------------------------------------------------------------


def _number(digits: str) -> int:
    return _HUGE if len(digits) > _MAX_DIGITS else int(digits)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The half-open plaintext range ``[start, end)`` a ``Range`` header asks for, or None.

    None means "send the whole body with 200": no header, a unit other than ``bytes`` (RFC 9110
    §14.2: a server MUST ignore units it does not understand), or several ranges (the RFC lets a
    server ignore Range; multipart/byteranges would only help clients players are not). Raises
    ``RangeNotSatisfiableError`` (416) for a malformed ``bytes`` specifier (the RFC lets us
    reject it), a first byte at or past the end, ``last < first`` and a zero suffix. A suffix of a
    zero-length body is served whole. The end of ``a-b`` is clamped to the size.
    """
    if header is None or not header.strip():
        return None
    unit, sep, ranges = header.strip().partition("=")
    if not sep:
        raise RangeNotSatisfiableError("malformed Range header", size=size)
    if unit.strip().lower() != "bytes":
        return None
    specs = [s.strip() for s in ranges.split(",") if s.strip()]
    if not specs:
        raise RangeNotSatisfiableError("malformed Range header", size=size)
    for spec in specs:
        if _SPEC_RE.fullmatch(spec) is None or spec == "-":
            raise RangeNotSatisfiableError("malformed Range header", size=size)
    if len(specs) > 1:
        return None
    first, last = _SPEC_RE.fullmatch(specs[0]).groups()  # type: ignore[union-attr]
    if not first:  # suffix: the final n bytes
        n = _number(last)
        if n == 0:
            raise RangeNotSatisfiableError("a suffix range of 0 bytes selects nothing", size=size)
        if size == 0:
            return None
        return max(size - n, 0), size
    start = _number(first)
    end = size if not last else _number(last) + 1
    if last and end <= start:
        raise RangeNotSatisfiableError("the last byte is before the first", size=size)
    if start >= size:
        raise RangeNotSatisfiableError(f"the first byte is past the end ({size} bytes)", size=size)
    return start, min(end, size)


# --- opening a read -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """Everything :func:`stream` needs, fixed when the read was authorised and audited."""

    recording_id: uuid.UUID
    tenant_id: uuid.UUID
    grant_id: uuid.UUID
    purpose: str
    actor: str  # audit name
    object_key: str
    version_id: str | None
    ciphertext_size: int
    ciphertext_sha256: str | None
    size: int  # plaintext size of the whole recording
    start: int
    end: int  # exclusive
    partial: bool  # a Range was honoured: 206 with Content-Range
    content_type: str
    etag: str
    audit_seq: int
    dek: bytes = field(repr=False)

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end - 1}/{self.size}"


def _etag(rec: Recording) -> str:
    # A recording's bytes never change (a new ingest is a new id), so a strong tag is honest.
    return f'"{rec.ciphertext_sha256 or rec.id.hex}"'


def _audit_denied(
    ctx: Context, actor: Actor, recording_id: uuid.UUID, grant_id: uuid.UUID | None, now: datetime
) -> None:
    """Best effort: the denial stands whether or not its event can be written."""
    try:
        with ctx.db.transaction() as session:
            audit.record(
                session, action=AuditAction.permission_denied, actor=actor.audit_name, now=now,
                outcome=Outcome.denied, target=str(recording_id), grant_id=grant_id,
                details={"permission": str(Permission.recording_content_read)},
            )  # fmt: skip
    except Exception:
        log.warning("could not audit a denied content read of %s", recording_id, exc_info=True)


def open_read(
    ctx: Context,
    *,
    actor: Actor,
    recording_id: uuid.UUID,
    grant_id: uuid.UUID | None,
    range_header: str | None,
    now: datetime,
    if_range: str | None = None,
) -> ReadPlan:
    """Authorise, resolve the range, unwrap the DEK and commit the read event; see the module.

    ``if_range`` (the request's If-Range) keeps the Range only while it equals our ETag
    (strong comparison, RFC 9110 §13.1.5); an HTTP-date never matches, as we send no
    Last-Modified.
    """
    # 1. Authorise in a short read-only session.
    try:
        with ctx.db.session() as session:
            grant, rec = grants.authorize_read(
                session, actor=actor, recording_id=recording_id, grant_id=grant_id, now=now
            )
    except PermissionDeniedError:
        _audit_denied(ctx, actor, recording_id, grant_id, now)
        raise
    if rec.status == RecordingStatus.integrity_failed:
        raise IntegrityError("this recording failed an integrity check and is not served")
    if rec.wrapped_dek is None:
        raise GoneError(f"recording {recording_id} has been crypto-shredded")
    try:
        size = streaming.plaintext_size(rec.ciphertext_size)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise IntegrityError("the recorded ciphertext size is not a valid stream") from None
    if rec.size is not None and rec.size != size:
        raise IntegrityError("the recorded sizes disagree")

    # 2. The range, against the plaintext size (416 before any key is touched).
    etag = _etag(rec)
    if if_range is not None and if_range.strip() != etag:
        range_header = None
    chosen = parse_range(range_header, size)
    start, end = chosen if chosen is not None else (0, size)

    # 3. The DEK.
    try:
        wrapped = envelope.decode_wrapped(rec.wrapped_dek)
        dek = envelope.unwrap_dek(ctx.keys, wrapped, tenant=str(rec.tenant_id), recording_id=rec.id)
    except KeyDestroyedError:
        raise GoneError(f"recording {recording_id} has been crypto-shredded") from None
    except KeyProviderError as exc:
        raise KeyProviderUnavailableError() from exc
    except (DecryptionError, ValueError):
        raise IntegrityError("the recording's wrapped key does not open") from None

    # 4. The read event, committed on its own before any byte leaves. The grant is checked
    # again inside this transaction, so a revocation that landed since step 1 still wins.
    try:
        with ctx.db.transaction() as session:
            if not grants.still_valid(session, grant_id=grant.id, recording_id=rec.id, now=now):
                raise PermissionDeniedError("the grant ended while the read was being opened")
            event = audit.record(
                session, action=AuditAction.recording_read, actor=actor.audit_name, now=now,
                tenant_id=rec.tenant_id, target=str(rec.id), purpose=grant.purpose,
                grant_id=grant.id,
                details={
                    "range": [start, end],  # plaintext bytes, end exclusive
                    "partial": chosen is not None,
                    "size": size,
                    "ciphertext_sha256": rec.ciphertext_sha256,
                },
            )  # fmt: skip
            seq = event.seq
    except PermissionDeniedError:
        raise
    except Exception as exc:
        log.error("read of %s refused: the audit event could not be written", rec.id, exc_info=True)
        raise AuditUnavailableError() from exc

    return ReadPlan(
        recording_id=rec.id, tenant_id=rec.tenant_id, grant_id=grant.id, purpose=grant.purpose,
        actor=actor.audit_name, object_key=rec.object_key, version_id=rec.version_id,
        ciphertext_size=int(rec.ciphertext_size),  # type: ignore[arg-type]
        ciphertext_sha256=rec.ciphertext_sha256, size=size, start=start, end=end,
        partial=chosen is not None, content_type=rec.content_type, etag=etag, audit_seq=seq,
        dek=dek,
    )  # fmt: skip


# --- streaming ------------------------------------------------------------------------------------


def _still_valid(ctx: Context, plan: ReadPlan) -> bool:
    try:
        with ctx.db.read_session() as session:
            return grants.still_valid(
                session, grant_id=plan.grant_id, recording_id=plan.recording_id, now=ctx.now()
            )
    except Exception:
        # Fail closed: if we cannot tell whether the grant still holds, stop sending.
        log.warning("grant re-check failed for %s; ending the stream", plan.grant_id, exc_info=True)
        return False


def _reader(ctx: Context, plan: ReadPlan) -> WindowReader:
    def read(offset: int, length: int) -> bytes:
        # Exactly the version the row recorded, never "the latest".
        return ctx.store.read_range(
            plan.object_key, version_id=plan.version_id, offset=offset, length=length
        )

    lo, hi = ciphertext_span(plan.ciphertext_size, plan.start, plan.end)
    return WindowReader(read, lo, hi)


def _raise_alarm(ctx: Context, plan: ReadPlan, *, offset: int, reason: str) -> None:
    """Audit an integrity alarm and mark the recording, in one transaction of their own."""
    now = ctx.now()
    try:
        with ctx.db.transaction() as session:
            session.exec(
                sa.update(Recording)
                .where(
                    Recording.id == plan.recording_id,  # type: ignore[arg-type]
                    Recording.status == RecordingStatus.stored,  # type: ignore[arg-type]
                )
                .values(status=RecordingStatus.integrity_failed, updated_at=now)
            )
            audit.record(
                session, action=AuditAction.integrity_alarm, actor=plan.actor, now=now,
                outcome=Outcome.failed, tenant_id=plan.tenant_id, target=str(plan.recording_id),
                purpose=plan.purpose, grant_id=plan.grant_id,
                details={"source": "playback", "reason": reason, "plaintext_offset": offset,
                         "ciphertext_sha256": plan.ciphertext_sha256},
            )  # fmt: skip
    except Exception:
        # The stream is aborted regardless; the scrub job will find the object again.
        log.error("could not record the integrity alarm for %s", plan.recording_id, exc_info=True)


def stream(ctx: Context, plan: ReadPlan) -> Iterator[bytes]:
    """Yield the plaintext of ``plan``'s range, one authenticated segment at a time.

    Raises mid-iteration (so the HTTP response is aborted, short of its Content-Length) with
    ``PermissionDeniedError`` when the grant stops holding, ``IntegrityError`` when a segment
    fails authentication or the object version is missing, and ``StoreUnavailableError`` when
    the store cannot be read.
    """
    reader = _reader(ctx, plan)
    segments = streaming.decrypt_range(
        reader, dek=plan.dek, recording_id=plan.recording_id,
        ciphertext_size=plan.ciphertext_size, start=plan.start, end=plan.end,
    )  # fmt: skip
    try:
        yield from _checked(ctx, plan, segments)
    finally:
        reader.close()


def _checked(ctx: Context, plan: ReadPlan, segments: Iterator[bytes]) -> Iterator[bytes]:
    sent = 0
    while True:
        try:
            chunk = next(segments)
        except StopIteration:
            return
        except DecryptionError:
            _raise_alarm(ctx, plan, offset=plan.start + sent, reason="segment-authentication")
            raise IntegrityError(
                "a segment failed authentication; the stream was aborted"
            ) from None
        except BlobNotFoundError:
            if not _still_valid(ctx, plan):  # disposed of meanwhile: not an integrity problem
                raise PermissionDeniedError("the grant ended during the stream") from None
            _raise_alarm(ctx, plan, offset=plan.start + sent, reason="object-missing")
            raise IntegrityError("the recorded object version is missing") from None
        except StorageError as exc:
            raise StoreUnavailableError() from exc
        # Re-checked after the segment is authenticated and right before it leaves: a
        # revocation committed by now stops the stream here.
        if not _still_valid(ctx, plan):
            log.info("grant %s ended; stream of %s stopped after %d bytes",
                     plan.grant_id, plan.recording_id, sent)  # fmt: skip
            raise PermissionDeniedError("the grant ended during the stream")
        yield chunk
        sent += len(chunk)
