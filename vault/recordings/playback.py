"""Playback: the audited, grant-bound read of a recording's plaintext, with HTTP ``Range``.

A read has two phases, and the route calls them in this order:

1. :func:`open_read` authorises the caller through its grant, resolves the byte range, unwraps
   the DEK, starts the first ciphertext GETs and then **commits** the ``recording.read`` audit
   event in a unit of its own: one statement that re-checks the grant (a revocation since the
   authorisation wins), in autocommit on PostgreSQL. Only when that commit succeeds does it
   return a :class:`ReadPlan`, and nothing is decrypted before; if the event cannot be written
   the read is refused (``AuditUnavailableError``, fail closed) and nothing is sent. A repeat
   read by the same actor starts its GETs even before the authorisation, from where the
   recording's ciphertext was found last time (:mod:`vault.recordings.early`); they are used
   only if the authorised row names the same object version, size and range.
2. :class:`PlaintextStream` gives the plaintext segment by segment. Segments are fetched by
   ranged GETs of exactly the recorded object version (windows of whole segments, read ahead; a
   read over 16 MiB is one streaming GET, at most four segments ahead; never past the segments
   the range covers) and authenticated by ``decrypt_range`` before release; then
   the grant is re-checked: its expiry at every segment, the rest (revocation, an ended purpose,
   disposal; one query on a bare connection) at the first segment boundary ``RECHECK_EVERY``
   (100 ms) after the last answer, so a running stream stops within 100 ms plus the segment in
   flight. A segment that fails
   authentication is never yielded: an ``integrity.alarm`` is audited, the recording becomes
   ``integrity_failed`` and the stream is aborted.

Choices:

- The read event over-approximates: it names the whole range granted to this response. A
  stream cut short (revocation, client gone, integrity failure) writes no extra event; the
  revocation and the alarm are audited where they happen.
- ``integrity_failed`` recordings are not served at all (``IntegrityError``) until someone has
  looked at them, even ranges whose segments still authenticate.
- Denied reads (no usable grant) are audited as ``permission.denied``.
- Residency: the object and the KEK are the recording's region's; a reader in another region
  needs the tenant's transfer authorisation (:mod:`vault.residency`), checked at open time and
  audited as ``residency.transfer`` in the read event's transaction.
"""

from __future__ import annotations

import logging
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NoReturn

from crypto import streaming
from crypto.errors import DecryptionError
from vault import audit, lifecycle, residency
from vault.access import grants
from vault.authz import Actor
from vault.context import Context
from vault.db import single_statement_connection
from vault.errors import (
    AuditUnavailableError,
    BlobNotFoundError,
    GoneError,
    IntegrityError,
    PermissionDeniedError,
    StorageError,
    StoreUnavailableError,
)
from vault.models import Grant, Recording, RecordingStatus
from vault.recordings.early import start as start_early
from vault.recordings.ranges import requested_range
from vault.recordings.windows import WindowReader, reader_for
from vault.storage import Location
from vault.tags import AuditAction

__all__ = ["PlaintextStream", "ReadPlan", "open_read"]

log = logging.getLogger(__name__)

# How stale the grant's answer may be when a segment leaves (issue #12): one query per 100 ms of
# streaming instead of one per segment. The audit event, the open-time check and expiry are
# never relaxed.
RECHECK_EVERY = timedelta(milliseconds=100)

# --- opening a read -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """Everything :class:`PlaintextStream` needs, fixed when the read was authorised and audited."""

    recording_id: uuid.UUID
    tenant_id: uuid.UUID
    grant_id: uuid.UUID
    purpose: str
    actor: str  # audit name
    ciphertext_size: int
    size: int  # plaintext size of the whole recording
    start: int
    end: int  # exclusive
    partial: bool  # a Range was honoured: 206 with Content-Range
    content_type: str
    etag: str
    audit_seq: int
    checked_at: datetime  # when the grant was last found valid (inside the audit transaction)
    grant_expires_at: datetime  # expiry needs no query: checked at every segment
    dek: bytes = field(repr=False)
    # Its first GETs were started at open time (exactly the recorded version, in its region).
    reader: WindowReader = field(repr=False, compare=False)

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end - 1}/{self.size}"


def _etag(rec: Recording) -> str:
    # A recording's bytes never change (a new ingest is a new id), so a strong tag is honest.
    return f'"{rec.ciphertext_sha256 or rec.id.hex}"'


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
    # 0. A repeat read starts its GETs now, beside the authorisation (see vault.recordings.early).
    early = start_early(
        ctx, actor_id=actor.id, recording_id=recording_id, range_header=range_header,
        if_range=if_range,
    )  # fmt: skip
    try:
        # 1. Authorise in a short read-only session (a denial is audited once it has closed).
        with ctx.db.reading() as session:
            grant, rec = grants.authorize_read(
                session, actor=actor, recording_id=recording_id, grant_id=grant_id, now=now
            )
            transfer = residency.authorise_read(
                session, actor=actor, recording=rec, source=ctx.region_name(rec.region),
                home=ctx.home_region, now=now,
            )  # fmt: skip
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
        chosen = requested_range(range_header, if_range, etag=etag, size=size)
        start, end = chosen if chosen is not None else (0, size)

        # 3. The DEK (a retired KEK answers 410, a provider outage 503: see vault.keys).
        keys = ctx.keys_for(rec.region)
        dek = keys.unwrap_dek(rec.wrapped_dek, tenant_id=rec.tenant_id, recording_id=rec.id)

        # 4. The ciphertext's first GETs start now, overlapped with the read event's commit (issue
        # #12): nothing is decrypted before the event is committed, and a refused read drops what
        # was fetched.
        ciphertext_size = int(rec.ciphertext_size)  # type: ignore[arg-type]
        location = Location(
            region=rec.region, object_key=rec.object_key, version_id=rec.version_id,
            ciphertext_size=ciphertext_size, etag=etag,
        )  # fmt: skip
        if early is not None and early.matches(location, start, end):
            # Its GETs are under way: the same version, size and span. From here it is `reader`.
            reader, early = early.reader, None
        else:
            if early is not None:
                early.reader.close()
                early = None
            reader = reader_for(
                ctx.store_for(rec.region), object_key=rec.object_key, version_id=rec.version_id,
                ciphertext_size=ciphertext_size, start=start, end=end, headers=ctx.stream_headers,
            )  # fmt: skip
        try:
            # 5. The read event, committed before any byte is decrypted.
            seq = _record_read(
                ctx, actor=actor, rec=rec, grant=grant, transfer=transfer, now=now,
                details={
                    "range": [start, end],  # plaintext bytes, end exclusive
                    "partial": chosen is not None,
                    "size": size,
                    "ciphertext_sha256": rec.ciphertext_sha256,
                },
            )  # fmt: skip
        except BaseException:
            reader.close()
            raise
        # Read under a grant: this actor's next read of it may start its GETs early.
        ctx.read_locations.put((actor.id, rec.id), location)

        return ReadPlan(
            recording_id=rec.id, tenant_id=rec.tenant_id, grant_id=grant.id,
            purpose=grant.purpose, actor=actor.audit_name, ciphertext_size=ciphertext_size,
            size=size, start=start, end=end, partial=chosen is not None,
            content_type=rec.content_type, etag=etag, audit_seq=seq, checked_at=now,
            grant_expires_at=grant.expires_at, dek=dek, reader=reader,
        )  # fmt: skip
    except BaseException:
        if early is not None:
            early.reader.close()  # what was fetched for a refused read is dropped
        raise


def _record_read(
    ctx: Context,
    *,
    actor: Actor,
    rec: Recording,
    grant: Grant,
    transfer: residency.Transfer | None,
    now: datetime,
    details: dict[str, Any],
) -> int:
    """Commit the read's event, and its transfer's; the grant is checked again in the same
    statement, so a revocation that landed since the authorisation still wins. Without a
    transfer the unit is that one statement: in autocommit on PostgreSQL, one round trip."""
    check = grants.still_valid_check(grant_id=grant.id, recording_id=rec.id, now=now)
    try:
        with ctx.db.transaction() as session:
            if transfer is None:
                single_statement_connection(session)
            try:
                event = audit.record(
                    session, action=AuditAction.recording_read, actor=actor.audit_name,
                    now=now, tenant_id=rec.tenant_id, target=str(rec.id), purpose=grant.purpose,
                    grant_id=grant.id, details=details, only_if=check,
                )  # fmt: skip
            except audit.ConditionUnmet:
                raise PermissionDeniedError(
                    "the grant ended while the read was being opened"
                ) from None
            if transfer is not None:
                residency.record(
                    session, transfer, actor=actor.audit_name, tenant_id=rec.tenant_id,
                    target=str(rec.id), via="playback", now=now,
                )  # fmt: skip
    except PermissionDeniedError:
        raise
    except Exception as exc:
        log.error("read of %s refused: the audit event could not be written", rec.id, exc_info=True)
        raise AuditUnavailableError() from exc
    return event.seq


# --- streaming ------------------------------------------------------------------------------------


def _still_valid(ctx: Context, plan: ReadPlan) -> bool:
    try:
        with ctx.db.single_read() as conn:  # one round trip, once per RECHECK_EVERY
            return grants.still_valid(
                conn, grant_id=plan.grant_id, recording_id=plan.recording_id, now=ctx.now()
            )
    except Exception:
        # Fail closed: if we cannot tell whether the grant still holds, stop sending.
        log.warning("grant re-check failed for %s; ending the stream", plan.grant_id, exc_info=True)
        return False


def _raise_alarm(ctx: Context, plan: ReadPlan, *, offset: int, reason: str) -> None:
    """The lifecycle's integrity alarm, in a transaction of its own."""
    try:
        with ctx.db.transaction() as session:
            lifecycle.integrity_alarm(
                session, plan.recording_id, actor=plan.actor, now=ctx.now(), source="playback",
                reason=reason, details={"plaintext_offset": offset},
                event={"purpose": plan.purpose, "grant_id": plan.grant_id},
            )  # fmt: skip
    except Exception:
        # The stream is aborted regardless; the scrub job will find the object again.
        log.error("could not record the integrity alarm for %s", plan.recording_id, exc_info=True)


class PlaintextStream:
    """The plaintext of ``plan``'s range, one authenticated segment per ``next()``.

    ``next()`` raises (so the HTTP response is aborted, short of its Content-Length)
    ``PermissionDeniedError`` when the grant stops holding, ``IntegrityError`` when a segment
    fails authentication or the object version is missing, and ``StoreUnavailableError`` when
    the store cannot be read. :meth:`next_at_hand` is the same step when it needs neither the
    store nor the database, for a caller on the event loop. Closing (or dropping) the stream
    stops its reads.
    """

    def __init__(self, ctx: Context, plan: ReadPlan) -> None:
        self._ctx, self._plan = ctx, plan
        self._segments = streaming.decrypt_range(
            plan.reader, dek=plan.dek, recording_id=plan.recording_id,
            ciphertext_size=plan.ciphertext_size, start=plan.start, end=plan.end,
        )  # fmt: skip
        self._sent = 0
        self._checked = plan.checked_at
        self._failure: str | None = None  # found at hand, recorded by the next next()
        self._close = weakref.finalize(self, plan.reader.close)
        self._close.atexit = False  # the helpers are daemon threads: never wait for them at exit

    def __iter__(self) -> PlaintextStream:
        return self

    def __next__(self) -> bytes:
        chunk = self._step(self._ctx.now())
        assert chunk is not None  # only a step at hand defers
        return chunk

    def next_at_hand(self) -> bytes | None:
        """The next segment when its ciphertext is already fetched and no re-check of the grant
        is due, else None (then call ``next()`` where blocking is fine): decrypting one segment
        costs less than the hop to a worker thread and back. A segment that fails
        authentication (or a missing object) is also None: its alarm is for ``next()`` to
        record. ``StopIteration`` at the end."""
        if self.finished:
            raise StopIteration  # every byte went out (authenticated up to the end-of-stream probe)
        now = self._ctx.now()
        if now - self._checked >= RECHECK_EVERY or not self._plan.reader.ready():
            return None
        return self._step(now, at_hand=True)

    @property
    def finished(self) -> bool:
        """Whether the whole range went out: then nothing is in flight and closing is quick."""
        return self._sent == self._plan.length

    def close(self) -> None:
        self._close()

    def _step(self, now: datetime, *, at_hand: bool = False) -> bytes | None:
        ctx, plan = self._ctx, self._plan
        if self._failure is None:
            try:
                chunk = next(self._segments)
            except DecryptionError:
                self._failure = "segment-authentication"
            except BlobNotFoundError:
                self._failure = "object-missing"
            except StorageError as exc:
                raise StoreUnavailableError() from exc
        if self._failure is not None:
            if at_hand:
                return None  # recording the failure writes to the database: next()'s job
            failure, self._failure = self._failure, None
            self._abort(failure)
        # Checked after the segment is authenticated and right before it leaves. Expiry costs
        # nothing and is checked every time; revocation, an ended purpose or disposal need the
        # database, asked at the first boundary RECHECK_EVERY after the last answer: a change
        # committed at t stops the stream by t + RECHECK_EVERY + one segment's transfer.
        due = now - self._checked >= RECHECK_EVERY
        if now >= plan.grant_expires_at or (due and not _still_valid(ctx, plan)):
            log.info("grant %s ended; stream of %s stopped after %d bytes",
                     plan.grant_id, plan.recording_id, self._sent)  # fmt: skip
            raise PermissionDeniedError("the grant ended during the stream")
        if due:
            self._checked = now
        self._sent += len(chunk)
        return chunk

    def _abort(self, failure: str) -> NoReturn:
        """A segment that failed authentication, or a missing object version: the integrity
        alarm (unless the recording was disposed of meanwhile), then the stream is aborted."""
        ctx, plan = self._ctx, self._plan
        if failure == "object-missing":
            if not _still_valid(ctx, plan):  # disposed of meanwhile: not an integrity problem
                raise PermissionDeniedError("the grant ended during the stream")
            _raise_alarm(ctx, plan, offset=plan.start + self._sent, reason=failure)
            raise IntegrityError("the recorded object version is missing")
        _raise_alarm(ctx, plan, offset=plan.start + self._sent, reason=failure)
        raise IntegrityError("a segment failed authentication; the stream was aborted")
