"""Redaction rows: requests, the on-expiry queue, claiming, and the state changes of a run.

A redaction is ``queued`` -> ``running`` (claimed with ``FOR UPDATE SKIP LOCKED`` and a lease)
-> ``verified`` or ``failed``. A run whose lease ran out was abandoned by a crashed worker: the
next claim takes it again, up to :data:`MAX_ATTEMPTS`. The derivative's pending row from the
crashed run is the sweeper's, like any abandoned ingest.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault import audit, authz
from vault.authz import Actor, Permission
from vault.errors import ConflictError, InvalidInputError
from vault.leases import claim as claim_rows
from vault.models import (
    Recording,
    RecordingPurpose,
    RecordingStatus,
    Redaction,
    RedactionPublic,
    RedactionStatus,
    RedactionTrigger,
)
from vault.policy import Policy
from vault.tags import AuditAction, Outcome

__all__ = [
    "LEASE", "MAX_ATTEMPTS", "claim", "fail", "get", "progress", "request", "to_public",
]  # fmt: skip

LEASE = timedelta(minutes=15)
MAX_ATTEMPTS = 3
R = RedactionStatus


def to_public(red: Redaction) -> RedactionPublic:
    return RedactionPublic(
        id=red.id, recording_id=red.recording_id, profile=red.profile,
        purposes=red.purpose_names(), trigger=RedactionTrigger(red.trigger),
        status=RedactionStatus(red.status), progress=red.progress, failed_check=red.failed_check,
        derivative_id=red.derivative_id, created_at=red.created_at, started_at=red.started_at,
        finished_at=red.finished_at,
    )  # fmt: skip


def request(
    session: Session,
    *,
    actor: Actor,
    policy: Policy,
    recording_id: uuid.UUID,
    profile: str,
    purposes: Sequence[str],
    now: datetime,
) -> Redaction:
    """Queue a redaction of a stored recording into a derivative with ``purposes``.

    The purposes must be active on the recording now (a derivative never widens what the
    original may be used for); a derivative is not redacted again by the same profile.
    """
    authz.authorize(session, actor, Permission.redaction_manage, now=now)
    rec = authz.get_visible(
        session, actor, Recording, recording_id, permission=Permission.redaction_manage,
        now=now, what="recording",
    )  # fmt: skip
    policy.profile(profile)  # UnknownProfileError names the known ones
    if rec.status != RecordingStatus.stored:
        raise ConflictError(f"only stored recordings can be redacted (this one is {rec.status})")
    names = sorted({p.strip() for p in purposes if isinstance(p, str) and p.strip()})
    if not names:
        raise InvalidInputError("at least one purpose is required")
    for name in names:
        policy.purpose(name)
    active = set(session.exec(
        select(RecordingPurpose.purpose).where(
            RecordingPurpose.recording_id == rec.id, RecordingPurpose.active_at(now))
    ).all())  # fmt: skip
    missing = [n for n in names if n not in active]
    if missing:
        raise InvalidInputError(
            f"purpose {missing[0]!r} is not active on this recording; a derivative may carry "
            "only purposes its original still has"
        )
    if rec.parent_id is not None and session.exec(
        select(Redaction.id).where(Redaction.derivative_id == rec.id, Redaction.profile == profile)
    ).first() is not None:
        raise ConflictError(f"this recording is already a {profile!r} derivative")
    red = Redaction(
        recording_id=rec.id, tenant_id=rec.tenant_id, profile=profile, purposes=json.dumps(names),
        trigger=RedactionTrigger.request.value, status=R.queued.value, created_at=now,
        requested_by=None if actor.system else actor.id,
    )  # fmt: skip
    session.add(red)
    session.flush()
    audit.record(
        session, action=AuditAction.redaction_request, actor=actor.audit_name, now=now,
        tenant_id=rec.tenant_id, target=str(rec.id),
        details={"redaction_id": str(red.id), "profile": profile, "purposes": names},
    )  # fmt: skip
    return red


def get(session: Session, *, actor: Actor, redaction_id: uuid.UUID, now: datetime) -> Redaction:
    authz.authorize(session, actor, Permission.redaction_manage, now=now)
    return authz.get_visible(
        session, actor, Redaction, redaction_id, permission=Permission.redaction_manage, now=now,
        what="redaction",
    )  # fmt: skip


def claim(
    session: Session, *, now: datetime, trigger: RedactionTrigger | None = None,
    only: Sequence[uuid.UUID] | None = None,
) -> Redaction | None:  # fmt: skip
    """Claim one queued redaction, or a running one whose lease has run out (a crashed run)."""
    ready = sa.or_(
        Redaction.status == R.queued.value,
        sa.and_(Redaction.status == R.running.value, col(Redaction.lease_until) < now),
    )
    query = select(Redaction).where(ready)
    if trigger is not None:
        query = query.where(Redaction.trigger == trigger.value)
    if only is not None:
        query = query.where(col(Redaction.id).in_(list(only)))
    red = session.exec(
        claim_rows(session, query.order_by(col(Redaction.created_at), col(Redaction.id)).limit(1))
    ).first()
    if red is None:
        return None
    if red.attempts >= MAX_ATTEMPTS:
        fail(session, red, check="attempts-exhausted", now=now)
        return None
    red.status, red.attempts, red.lease_until = R.running.value, red.attempts + 1, now + LEASE
    red.started_at, red.progress = now, 0
    session.add(red)
    session.flush()
    return red


def progress(session: Session, redaction_id: uuid.UUID, percent: int, *, now: datetime) -> None:
    """Progress, and a renewed lease: a run that still reports is not abandoned."""
    session.execute(
        sa.update(Redaction)
        .where(col(Redaction.id) == redaction_id, Redaction.status == R.running.value)
        .values(progress=max(0, min(100, percent)), lease_until=now + LEASE)
    )


def fail(session: Session, red: Redaction, *, check: str, now: datetime) -> None:
    """``failed`` with the check that failed, audited (no derivative was kept)."""
    red.status, red.failed_check, red.finished_at = R.failed.value, check, now
    red.lease_until = None
    session.add(red)
    session.flush()
    audit.record(
        session, action=AuditAction.redaction_failed, actor="system:redaction", now=now,
        outcome=Outcome.failed, tenant_id=red.tenant_id, target=str(red.recording_id),
        details={"redaction_id": str(red.id), "profile": red.profile, "check": check,
                 "trigger": red.trigger},
    )  # fmt: skip
