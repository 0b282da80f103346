"""Recordings: metadata reads and ending a purpose early.

A recording of a
tenant outside the actor's scope is reported exactly like a missing one (``NotFoundError``), so
ids cannot be probed across tenants.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import anyio.to_thread
import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault import authz
from vault.authz import Actor, Permission
from vault.db import Database, single_statement_connection
from vault.errors import ConflictError, InvalidInputError, NotFoundError, UnknownTenantError
from vault.identity.tenants import resolve_tenant, tenant_names
from vault.models import (
    HoldMembership,
    LegalHold,
    PurposePublic,
    Recording,
    RecordingPage,
    RecordingPublic,
    RecordingPurpose,
    RecordingStatus,
    Tenant,
)
from vault.models.privacy import restricted
from vault.privacy.rules import restricted_of
from vault.retention.expiry import end_purposes
from vault.retention.holds import active_holds_of, active_holds_select
from vault.tags import AuditAction

__all__ = [
    "MAX_PAGE_LIMIT", "end_purpose", "get_recording", "list_recordings", "read_recording",
    "to_public", "to_public_many",
]  # fmt: skip

S = RecordingStatus
MAX_PAGE_LIMIT = 1000
MAX_REASON = 256


# --- public shapes --------------------------------------------------------------------------------


def to_public(session: Session, recording: Recording, *, now: datetime) -> RecordingPublic:
    return to_public_many(session, [recording], now=now)[0]


def _purpose(p: RecordingPurpose, now: datetime) -> PurposePublic:
    return PurposePublic(
        purpose=p.purpose, expires_at=p.expires_at, ended_at=p.ended_at, active=p.active_at(now)
    )


def _public(
    r: Any,
    *,
    tenant: str,
    purposes: list[PurposePublic],
    holds: list[uuid.UUID],
    derivatives: list[uuid.UUID],
    restricted: bool,
) -> RecordingPublic:
    """The public shape of a recording row (an ORM row or the single GET's Core row)."""
    return RecordingPublic(
        id=r.id, tenant=tenant, call_id=r.call_id, status=S(r.status),
        content_type=r.content_type, size=r.size, sha256=r.sha256,
        ciphertext_sha256=r.ciphertext_sha256, recorded_at=r.recorded_at,
        ingested_at=r.ingested_at, purposes=purposes, holds=holds, parent_id=r.parent_id,
        derivatives=derivatives, disposed_at=r.disposed_at, disposal_reason=r.disposal_reason,
        restricted=restricted,
    )  # fmt: skip


def to_public_many(
    session: Session, recordings: Sequence[Recording], *, now: datetime
) -> list[RecordingPublic]:
    """Batch the look-ups (purposes, tenant names, derivatives) for a whole page."""
    if not recordings:
        return []
    ids = [r.id for r in recordings]
    purposes: dict[uuid.UUID, list[PurposePublic]] = {rid: [] for rid in ids}
    rows = session.exec(
        select(RecordingPurpose)
        .where(col(RecordingPurpose.recording_id).in_(ids))
        .order_by(col(RecordingPurpose.purpose))
    ).all()
    for p in rows:
        purposes[p.recording_id].append(_purpose(p, now))
    derivatives: dict[uuid.UUID, list[uuid.UUID]] = {rid: [] for rid in ids}
    for parent, child in session.exec(
        select(Recording.parent_id, Recording.id)
        .where(col(Recording.parent_id).in_(ids))
        .order_by(col(Recording.ingested_at), col(Recording.id))
    ).all():
        derivatives[parent].append(child)  # type: ignore[index]
    names = tenant_names(session, {r.tenant_id for r in recordings})
    holds = active_holds_of(session, ids)
    restricted = restricted_of(session, ids)
    return [
        _public(
            r,
            tenant=names.get(r.tenant_id, str(r.tenant_id)),
            purposes=purposes[r.id],
            holds=holds.get(r.id, []),
            derivatives=derivatives[r.id],
            restricted=r.id in restricted,
        )
        for r in recordings
    ]


# --- reads ----------------------------------------------------------------------------------------


def _get(
    session: Session, actor: Actor, recording_id: uuid.UUID, permission: Permission, now: datetime
) -> Recording:
    # The same answer for "missing" and "not yours": existence must not leak across tenants.
    return authz.get_visible(
        session, actor, Recording, recording_id, permission=permission, now=now, what="recording"
    )


# The single GET in one Core statement instead of six ORM ones (issue #12: the metadata GET
# against /healthz): the row, its tenant's name and its restriction flag, through the one scope
# filter, joined to every list the answer holds as typed facts of one UNION (kind, name, time,
# id), ordered as the batch path orders them. One statement is its own snapshot, so on
# PostgreSQL it runs in autocommit (no BEGIN, no ROLLBACK: two round trips fewer).
_HEAD = (
    select(
        Recording.id,
        Recording.call_id,
        Recording.status,
        Recording.content_type,
        Recording.size,
        Recording.sha256,
        Recording.ciphertext_sha256,
        Recording.recorded_at,
        Recording.ingested_at,
        Recording.parent_id,
        Recording.disposed_at,
        Recording.disposal_reason,
        Recording.tenant_id,
        col(Tenant.name).label("tenant_name"),
        restricted(Recording.id).label("restricted"),
    )
    .select_from(Recording)
    .join(Tenant, col(Tenant.id) == col(Recording.tenant_id))
)
_PURPOSE, _DERIVATIVE, _HOLD = 0, 1, 2


def _facts() -> Any:
    """Every list of the answer, as typed facts ``(kind, name, at, ended_at, ref)``."""
    recording_id = sa.bindparam("recording_id", type_=sa.Uuid())
    no_time = sa.null().cast(RecordingPurpose.__table__.c.ended_at.type)  # type: ignore[attr-defined]
    no_id = sa.null().cast(sa.Uuid())
    no_name = sa.null().cast(sa.String())
    purposes = select(
        sa.literal(_PURPOSE).label("kind"), col(RecordingPurpose.purpose).label("name"),
        col(RecordingPurpose.expires_at).label("at"), col(RecordingPurpose.ended_at),
        no_id.label("ref"),
    ).where(col(RecordingPurpose.recording_id) == recording_id)  # fmt: skip
    derivatives = select(
        sa.literal(_DERIVATIVE), no_name, col(Recording.ingested_at), no_time, col(Recording.id)
    ).where(col(Recording.parent_id) == recording_id)
    held = active_holds_select(
        sa.literal(_HOLD), no_name, col(LegalHold.created_at), no_time, col(LegalHold.id)
    ).where(col(HoldMembership.recording_id) == recording_id)
    return sa.union_all(purposes, derivatives, held).subquery("facts")


_FACTS = _facts()  # built once: only the id varies


@functools.cache
def _get_statement(all_tenants: bool) -> Any:
    """The single GET's one statement, built once per scope shape (issue #12)."""
    head = (
        authz.visible_prepared(_HEAD, all_tenants=all_tenants)
        .where(col(Recording.id) == sa.bindparam("recording_id", type_=sa.Uuid()))
        .subquery("head")
    )
    f = _FACTS.c
    return (
        select(head, f.kind, f.name, f.at, f.ended_at, f.ref)
        .select_from(head.outerjoin(_FACTS, sa.true()))
        .order_by(f.kind, f.name, f.at, f.ref)
    )


async def read_recording(
    db: Database, *, actor: Actor, recording_id: uuid.UUID, now: datetime
) -> RecordingPublic:
    """The API's single GET (issue #12): an allowed read that finds its row is the one
    statement, on the event loop on PostgreSQL (:meth:`Database.read_rows`); a denial or a
    miss takes :func:`get_recording`'s session on the thread pool, which audits it."""
    if authz.decide(actor, Permission.recording_metadata_read) is None:
        rows = await db.read_rows(
            _get_statement(actor.all_tenants), _get_params(actor, recording_id)
        )
        if rows:
            return _from_rows(rows, recording_id, now)
    return await anyio.to_thread.run_sync(
        functools.partial(_read_in_session, db, actor=actor, recording_id=recording_id, now=now)
    )


def _read_in_session(
    db: Database, *, actor: Actor, recording_id: uuid.UUID, now: datetime
) -> RecordingPublic:
    with db.reading() as session:
        return get_recording(session, actor=actor, recording_id=recording_id, now=now)


def get_recording(
    session: Session, *, actor: Actor, recording_id: uuid.UUID, now: datetime
) -> RecordingPublic:
    authz.authorize(session, actor, Permission.recording_metadata_read, now=now)
    rows = (
        single_statement_connection(session)
        .execute(_get_statement(actor.all_tenants), _get_params(actor, recording_id))
        .all()
    )
    if not rows:  # missing or out of scope: the one answer, a denial audited by its owner
        _get(session, actor, recording_id, Permission.recording_metadata_read, now)
        raise NotFoundError(f"no recording {recording_id}")  # pragma: no cover (raced)
    return _from_rows(rows, recording_id, now)


def _get_params(actor: Actor, recording_id: uuid.UUID) -> dict[str, Any]:
    return {**authz.scope_params(actor), "recording_id": recording_id}


def _from_rows(rows: Sequence[Any], recording_id: uuid.UUID, now: datetime) -> RecordingPublic:
    purposes: list[PurposePublic] = []
    derivatives: list[uuid.UUID] = []
    held: list[uuid.UUID] = []
    for row in rows:
        if row.kind == _PURPOSE:
            purpose = RecordingPurpose(
                recording_id=recording_id, purpose=row.name, expires_at=row.at,
                ended_at=row.ended_at,
            )  # fmt: skip
            purposes.append(_purpose(purpose, now))
        elif row.kind == _DERIVATIVE:
            derivatives.append(row.ref)
        elif row.kind == _HOLD:
            held.append(row.ref)
    head = rows[0]
    return _public(
        head, tenant=head.tenant_name, purposes=purposes, holds=held, derivatives=derivatives,
        restricted=bool(head.restricted),
    )  # fmt: skip


def _encode_cursor(rec: Recording) -> str:
    raw = json.dumps({"t": rec.ingested_at.isoformat(), "id": str(rec.id)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode("ascii")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        ts = datetime.fromisoformat(data["t"])
        rid = uuid.UUID(data["id"])
        if ts.tzinfo is None:
            raise ValueError("naive")
    except (binascii.Error, ValueError, TypeError, KeyError, AttributeError, UnicodeError):
        raise InvalidInputError("invalid cursor") from None
    return ts, rid


def list_recordings(
    session: Session,
    *,
    actor: Actor,
    tenant: str | None,
    purpose: str | None,
    call_id: str | None,
    status: str | None,
    cursor: str | None,
    limit: int,
    now: datetime,
) -> RecordingPage:
    """Metadata of the recordings in scope, oldest first, by keyset on (ingested_at, id)."""
    authz.authorize(session, actor, Permission.recording_metadata_read, now=now)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_LIMIT:
        raise InvalidInputError(f"limit must be between 1 and {MAX_PAGE_LIMIT}")
    if status is not None and status not in {s.value for s in S}:
        raise InvalidInputError(f"unknown status {status!r}; one of {', '.join(S)}")
    after = _decode_cursor(cursor) if cursor is not None else None
    empty = RecordingPage(items=[], next_cursor=None)

    query = authz.visible(select(Recording), actor)  # a filtered page, never an error
    if tenant is not None:
        try:
            target = resolve_tenant(session, tenant)
        except UnknownTenantError:
            if actor.all_tenants:
                raise
            return empty  # a scoped actor learns nothing about other tenants
        query = query.where(Recording.tenant_id == target.id)
    if status is not None:
        query = query.where(Recording.status == status)
    if call_id is not None:
        query = query.where(Recording.call_id == call_id)
    if purpose is not None:
        query = query.where(
            sa.exists().where(
                RecordingPurpose.recording_id == Recording.id,
                RecordingPurpose.purpose == purpose,
                RecordingPurpose.active_at(now),
            )
        )
    if after is not None:
        ts, rid = after
        query = query.where(
            sa.or_(
                col(Recording.ingested_at) > ts,
                sa.and_(col(Recording.ingested_at) == ts, col(Recording.id) > rid),
            )
        )
    rows = session.exec(
        query.order_by(col(Recording.ingested_at), col(Recording.id)).limit(limit + 1)
    ).all()
    page = list(rows[:limit])
    next_cursor = _encode_cursor(page[-1]) if len(rows) > limit else None
    return RecordingPage(items=to_public_many(session, page, now=now), next_cursor=next_cursor)


# --- ending a purpose -----------------------------------------------------------------------------


def end_purpose(
    session: Session,
    *,
    actor: Actor,
    recording_id: uuid.UUID,
    purpose: str,
    reason: str | None,
    now: datetime,
) -> RecordingPublic:
    """End one purpose early, audited in the caller's transaction."""
    authz.authorize(session, actor, Permission.recording_purpose_end, now=now)
    if reason is not None:
        reason = reason.strip() or None
    if reason is not None and len(reason) > MAX_REASON:
        raise InvalidInputError(f"reason must be at most {MAX_REASON} characters")
    rec = _get(session, actor, recording_id, Permission.recording_purpose_end, now)
    # Row lock: two concurrent ends must not both succeed (SQLite: BEGIN IMMEDIATE already).
    row = session.exec(
        select(RecordingPurpose)
        .where(RecordingPurpose.recording_id == rec.id, RecordingPurpose.purpose == purpose)
        .with_for_update()
    ).first()
    if row is None:
        raise NotFoundError(f"recording {recording_id} has no purpose {purpose!r}")
    if row.ended_at is not None:
        raise ConflictError(f"purpose {purpose!r} already ended")
    if row.expires_at <= now:
        raise ConflictError(f"purpose {purpose!r} already expired")
    end_purposes(
        session, [(row, rec.tenant_id)], action=AuditAction.recording_purpose_end,
        actor=actor.audit_name, now=now, reason=reason,
        details=lambda _: {"reason": reason} if reason else {},
    )  # fmt: skip
    return to_public(session, rec, now=now)
