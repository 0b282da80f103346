"""Legal holds: creation, release, and the membership rows that block every disposal.

A hold selects recordings by explicit ``recording_ids`` and/or by a *selector*: ``tenant``,
``call_id`` and a ``recorded_at`` range, all given parts ANDed (``recorded_from <= recorded_at
<= recorded_to``, both ends inclusive: a hold errs on the side of keeping). The selected set is the
union of the explicit ids and the selector's matches. A hold with a selector also catches
recordings ingested later (``selects_future``).

Membership rows are the single source of truth: disposal re-checks them under the recording's row
lock (see :mod:`vault.retention.disposal`). Concurrency:

- Creation locks the matching recording rows with ``SELECT ... FOR UPDATE`` (PostgreSQL), so a
  disposal that has not yet claimed a row finds the membership when it does.
- Creation also takes an exclusive transaction-level advisory lock that ingest takes *shared*
  when it looks for open holds: either the hold sees the new pending row, or ingest sees the hold.
  SQLite needs neither: ``BEGIN IMMEDIATE`` already makes every transaction the single writer.

S3 Object Lock mirroring (defence in depth only; the DB decides): the legal-hold flag is set on
every object version once the creating transaction has committed (never while it is open), and
cleared once a release has committed, only where no other active hold covers the recording (S3
keeps one flag per version). Store failures are logged and tolerated, never fatal: a missing flag
is repaired by :func:`vault.retention.holds_mirror.sync_object_locks`, and a stale flag is cleared
by disposal itself, which owns the decision and re-checks the memberships first.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault import audit, authz
from vault.authz import Actor, Permission
from vault.db import after_commit, is_postgres
from vault.errors import (
    ConflictError,
    InvalidInputError,
    StorageError,
)
from vault.identity.tenants import tenant_for_write
from vault.models import (
    HoldMembership,
    LegalHold,
    LegalHoldPublic,
    Recording,
    RecordingStatus,
)
from vault.storage import BlobStore
from vault.tags import AuditAction

__all__ = [
    "FLAGGABLE", "HOLDABLE", "active_holds", "active_holds_of", "active_holds_select",
    "create_hold", "get_hold",
    "held_condition", "list_holds", "memberships_for_new_recording", "release_hold",
    "set_flags", "to_public",
]  # fmt: skip

log = logging.getLogger(__name__)

S = RecordingStatus
# Rows a hold can still protect. A disposing row is included (and locked) so that a hold racing
# a disposal serialises with it, but its DEK is already gone, so no S3 flag is set on it.
HOLDABLE = (S.pending, S.stored, S.integrity_failed, S.disposing)
FLAGGABLE = (S.pending, S.stored, S.integrity_failed)
MAX_IDS = 10_000
MAX_TEXT = 2000
# "cvholds" in ASCII: exclusive for hold creation, shared for ingest's look-up.
HOLD_LOCK_KEY = 0x6376686F6C6473


# --- queries -------------------------------------------------------------------------------------


def held_condition(recording_id: Any) -> sa.ColumnElement[bool]:
    """SQL: some active (unreleased) hold has a membership for ``recording_id``."""
    return sa.exists().where(
        HoldMembership.recording_id == recording_id,
        HoldMembership.hold_id == LegalHold.id,
        col(LegalHold.released_at).is_(None),
    )


def active_holds_select(*columns: Any) -> Any:
    """``SELECT columns`` over (membership, active hold) pairs; callers add the recordings and
    order by ``LegalHold.created_at, LegalHold.id`` (oldest hold first)."""
    return (
        select(*columns)
        .select_from(HoldMembership)
        .join(LegalHold, col(LegalHold.id) == col(HoldMembership.hold_id))
        .where(col(LegalHold.released_at).is_(None))
    )


def active_holds_of(
    session: Session, recording_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, list[uuid.UUID]]:
    """Active hold ids per recording (oldest hold first); recordings without any are absent."""
    ids = list(set(recording_ids))
    out: dict[uuid.UUID, list[uuid.UUID]] = {}
    for start in range(0, len(ids), 1000):
        rows = session.exec(
            active_holds_select(HoldMembership.recording_id, LegalHold.id)
            .where(col(HoldMembership.recording_id).in_(ids[start : start + 1000]))
            .order_by(col(LegalHold.created_at), col(LegalHold.id))
        ).all()
        for rid, hid in rows:
            out.setdefault(rid, []).append(hid)
    return out


def active_holds(session: Session, recording_id: uuid.UUID) -> list[uuid.UUID]:
    return active_holds_of(session, [recording_id]).get(recording_id, [])


def _lock_holds(session: Session, *, shared: bool) -> None:
    if is_postgres(session):  # SQLite: BEGIN IMMEDIATE already serialises every writer
        fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        session.exec(sa.text(f"SELECT {fn}(:k)"), params={"k": HOLD_LOCK_KEY})


# --- S3 mirroring --------------------------------------------------------------------------------


def set_flags(store: BlobStore, keys: Iterable[str], *, on: bool) -> int:
    """Best effort: count the versions changed; failures are logged (see module docstring)."""
    changed = 0
    for key in keys:
        try:
            changed += store.set_legal_hold(key, on=on)
        except StorageError:
            log.warning("legal hold: could not set S3 flag on=%s for %s", on, key, exc_info=True)
    return changed


# --- creation -------------------------------------------------------------------------------------


def _text(value: str | None, name: str, limit: int) -> str:
    value = value.strip() if isinstance(value, str) else ""
    if not value:
        raise InvalidInputError(f"{name} is required")
    if len(value) > limit:
        raise InvalidInputError(f"{name} must be at most {limit} characters")
    return value


def create_hold(
    session: Session,
    *,
    actor: Actor,
    store: BlobStore,
    case_ref: str,
    reason: str,
    recording_ids: Sequence[uuid.UUID] = (),
    tenant: str | None = None,
    call_id: str | None = None,
    recorded_from: datetime | None = None,
    recorded_to: datetime | None = None,
    now: datetime,
) -> LegalHold:
    """Place a hold in the caller's unit of work. See the module docstring."""
    authz.authorize(session, actor, Permission.hold_manage, now=now)
    case_ref = _text(case_ref, "case_ref", 256)
    reason = _text(reason, "reason", MAX_TEXT)
    ids = sorted(set(recording_ids or ()))
    if len(ids) > MAX_IDS:
        raise InvalidInputError(f"at most {MAX_IDS} recording_ids per hold")
    if call_id is not None and (not call_id.strip() or len(call_id) > 256):
        raise InvalidInputError("call_id must be 1-256 characters")
    for name, ts in (("recorded_from", recorded_from), ("recorded_to", recorded_to)):
        if ts is not None and ts.tzinfo is None:
            raise InvalidInputError(f"{name} must carry a time zone")
    if recorded_from and recorded_to and recorded_from > recorded_to:
        raise InvalidInputError("recorded_from must not be after recorded_to")
    selective = any(v is not None for v in (tenant, call_id, recorded_from, recorded_to))
    if not ids and not selective:
        raise InvalidInputError("give recording_ids, tenant, call_id and/or a recorded-at range")
    tenant_id = None
    if tenant is not None:
        tenant_id = tenant_for_write(session, actor, tenant, Permission.hold_manage, now=now).id
    elif selective:
        # Without a tenant the selector spans every tenant, those ingested later included.
        authz.authorize(session, actor, Permission.hold_manage, authz.EVERY_TENANT, now=now)

    _lock_holds(session, shared=False)
    hold = LegalHold(
        case_ref=case_ref, reason=reason, created_by=actor.audit_name, created_at=now,
        tenant_id=tenant_id, call_id=call_id, recorded_from=recorded_from,
        recorded_to=recorded_to, selects_future=selective,
    )  # fmt: skip
    session.add(hold)
    session.flush()

    # Lock every matching row: a disposal that has not claimed it yet will see the membership.
    matched: dict[uuid.UUID, Recording] = {}
    if ids:
        # Locked in id order (one lock order everywhere: no deadlocks); missing and "not yours"
        # get the same answer.
        rows = authz.get_visible_many(
            session, actor, ids, permission=Permission.hold_manage, now=now, lock=True
        )
        matched.update({r.id: r for r in rows if r.status in HOLDABLE})
    if selective:
        clause: list[Any] = [col(Recording.status).in_(HOLDABLE)]
        if tenant_id is not None:
            clause.append(Recording.tenant_id == tenant_id)
        if call_id is not None:
            clause.append(Recording.call_id == call_id)
        if recorded_from is not None:
            clause.append(col(Recording.recorded_at) >= recorded_from)
        if recorded_to is not None:
            clause.append(col(Recording.recorded_at) <= recorded_to)
        rows = session.exec(
            select(Recording).where(*clause).order_by(col(Recording.id)).with_for_update()
        ).all()
        matched.update({r.id: r for r in rows})
    for rid in sorted(matched):
        session.add(HoldMembership(hold_id=hold.id, recording_id=rid, created_at=now))
    session.flush()

    flag_keys = [r.object_key for r in matched.values() if r.status in FLAGGABLE]
    if flag_keys:
        after_commit(session, lambda: log_flags(set_flags(store, flag_keys, on=True), "set"))
    disposing = sum(1 for r in matched.values() if r.status == S.disposing)
    audit.record(
        session,
        action=AuditAction.hold_create,
        actor=actor.audit_name,
        now=now,
        tenant_id=tenant_id,
        target=str(hold.id),
        details={
            "hold_id": str(hold.id),
            "case_ref": case_ref,
            "reason": reason,
            "recordings": len(matched),
            "explicit_ids": len(ids),
            # Which selector parts were given, never their values: a call id must not outlive
            # an erasure in the audit log.
            "selector": {
                "tenant": tenant_id is not None,
                "by_call_id": call_id is not None,
                "recorded_from": audit.format_ts(recorded_from) if recorded_from else None,
                "recorded_to": audit.format_ts(recorded_to) if recorded_to else None,
            },
            "selects_future": selective,
            "already_disposing": disposing,
        },
    )
    return hold


def memberships_for_new_recording(
    session: Session, recording: Recording, now: datetime
) -> list[uuid.UUID]:
    """Join a just-inserted recording to every open hold whose selector matches it.

    Runs in ingest's transaction that inserts the pending row, under the shared hold lock.
    """
    _lock_holds(session, shared=True)
    holds = session.exec(
        select(LegalHold)
        .where(col(LegalHold.released_at).is_(None), col(LegalHold.selects_future).is_(True))
        .order_by(col(LegalHold.created_at), col(LegalHold.id))
    ).all()
    out = []
    for hold in holds:
        if _matches(hold, recording):
            session.add(HoldMembership(hold_id=hold.id, recording_id=recording.id, created_at=now))
            out.append(hold.id)
    if out:
        session.flush()
    return out


def _matches(hold: LegalHold, rec: Recording) -> bool:
    return (
        (hold.tenant_id is None or hold.tenant_id == rec.tenant_id)
        and (hold.call_id is None or hold.call_id == rec.call_id)
        and (hold.recorded_from is None or rec.recorded_at >= hold.recorded_from)
        and (hold.recorded_to is None or rec.recorded_at <= hold.recorded_to)
    )


# --- release --------------------------------------------------------------------------------------


def _member_ids(session: Session, hold_id: uuid.UUID) -> list[uuid.UUID]:
    rows = session.exec(
        select(HoldMembership.recording_id).where(HoldMembership.hold_id == hold_id)
    ).all()
    return sorted(rows)


def release_hold(
    session: Session,
    *,
    actor: Actor,
    store: BlobStore,
    hold_id: uuid.UUID,
    reason: str,
    now: datetime,
) -> LegalHold:
    """Release a hold in the caller's unit of work; disposal resumes at the next run."""
    authz.authorize(session, actor, Permission.hold_manage, now=now)
    reason = _text(reason, "reason", MAX_TEXT)
    # Lock the hold row, then its recordings (the order creation uses), so a concurrent create
    # or release of another hold on the same recordings serialises with this one.
    hold = authz.get_visible(
        session, actor, LegalHold, hold_id, permission=Permission.hold_manage, now=now,
        what="legal hold", lock=True,
    )  # fmt: skip
    if hold.released_at is not None:
        raise ConflictError(f"legal hold {hold_id} is already released")
    members = _member_ids(session, hold.id)
    recs = session.exec(
        select(Recording)
        .where(col(Recording.id).in_(members))
        .order_by(col(Recording.id))
        .with_for_update()
    ).all()
    hold.released_at = now
    hold.released_by = actor.audit_name
    hold.release_reason = reason
    hold.call_id = None  # no longer needed to match new recordings; drop the identifier
    session.add(hold)
    session.flush()
    still = active_holds_of(session, members)
    # Cleared once the release has committed, only where no other hold covers the recording.
    free = [r.object_key for r in recs if r.id not in still and r.status in FLAGGABLE]
    if free:
        after_commit(session, lambda: log_flags(set_flags(store, free, on=False), "cleared"))
    audit.record(
        session, action=AuditAction.hold_release, actor=actor.audit_name, now=now,
        tenant_id=hold.tenant_id, target=str(hold.id),
        details={
            "hold_id": str(hold.id), "case_ref": hold.case_ref, "reason": reason,
            "recordings": len(members), "still_held_by_other_holds": len(still),
        },
    )  # fmt: skip
    return hold


def log_flags(changed: int, what: str) -> None:
    log.info("legal hold: S3 flag %s on %d object version(s)", what, changed)


# --- reads ----------------------------------------------------------------------------------------


def to_public(session: Session, hold: LegalHold) -> LegalHoldPublic:
    return LegalHoldPublic(
        id=hold.id, case_ref=hold.case_ref, reason=hold.reason, tenant_id=hold.tenant_id,
        recorded_from=hold.recorded_from, recorded_to=hold.recorded_to,
        created_at=hold.created_at, released_at=hold.released_at,
        recording_ids=_member_ids(session, hold.id),
    )  # fmt: skip


def get_hold(
    session: Session, *, actor: Actor, hold_id: uuid.UUID, now: datetime
) -> LegalHoldPublic:
    authz.authorize(session, actor, Permission.hold_manage, now=now)
    hold = authz.get_visible(
        session, actor, LegalHold, hold_id, permission=Permission.hold_manage, now=now,
        what="legal hold",
    )  # fmt: skip
    return to_public(session, hold)


def list_holds(
    session: Session,
    *,
    actor: Actor,
    active: bool | None = None,
    now: datetime,
    limit: int = 1000,
) -> list[LegalHoldPublic]:
    """Holds the actor may see, newest first."""
    authz.authorize(session, actor, Permission.hold_manage, now=now)
    query = select(LegalHold)
    if active is True:
        query = query.where(col(LegalHold.released_at).is_(None))
    elif active is False:
        query = query.where(col(LegalHold.released_at).is_not(None))
    query = query.order_by(col(LegalHold.created_at).desc(), col(LegalHold.id)).limit(limit)
    return [to_public(session, h) for h in session.exec(authz.visible(query, actor))]
