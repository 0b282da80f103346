"""Grants: issuing them, and the one check every content read goes through.

A grant opens content only while all of this holds: it belongs to the caller, covers the
recording, is inside ``[not_before, expires_at)``, is not revoked, its purpose is still active on
the recording, the recording is not disposed of, and it is not restricted (break-glass excepted:
:func:`vault.models.restriction_allows`). Playback calls :func:`still_valid` again at
every segment, so revocation or expiry ends a running stream.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault import authz
from vault.authz import Actor, Permission
from vault.db import single_statement_connection
from vault.errors import GoneError, NotFoundError
from vault.models import (
    Grant,
    GrantKind,
    GrantPublic,
    GrantRecording,
    Recording,
    RecordingPurpose,
    RecordingStatus,
    restriction_allows,
)

UNREADABLE = {RecordingStatus.pending, RecordingStatus.failed}
GONE = {RecordingStatus.disposing, RecordingStatus.disposed}


def issue_grant(
    session: Session,
    *,
    principal_id: uuid.UUID,
    owner: str,
    purpose: str,
    recording_ids: Sequence[uuid.UUID],
    not_before: datetime,
    expires_at: datetime,
    kind: GrantKind = GrantKind.request,
    request_id: uuid.UUID | None = None,
    incident_ref: str | None = None,
    reason: str | None = None,
    restricted: bool = False,
) -> Grant:
    """Insert a grant and its coverage rows; the caller audits and commits."""
    if not recording_ids:
        raise ValueError("a grant covers at least one recording")
    if expires_at <= not_before:
        raise ValueError("a grant must end after it starts")
    grant = Grant(
        kind=kind, principal_id=principal_id, owner=owner, purpose=purpose,
        request_id=request_id, not_before=not_before, expires_at=expires_at,
        created_at=not_before, incident_ref=incident_ref, reason=reason,
        needs_review=kind == GrantKind.break_glass, restricted=restricted,
    )  # fmt: skip
    session.add(grant)
    session.flush()
    for rid in sorted(set(recording_ids)):
        session.add(GrantRecording(grant_id=grant.id, recording_id=rid))
    session.flush()
    return grant


def recording_ids(session: Session, grant_id: uuid.UUID) -> list[uuid.UUID]:
    rows = session.exec(
        select(GrantRecording.recording_id).where(GrantRecording.grant_id == grant_id)
    )
    return sorted(rows.all())


def to_public(session: Session, grant: Grant, *, now: datetime) -> GrantPublic:
    open_review = grant.review_open()
    overdue = grant.review_overdue_at(now)
    return GrantPublic(
        id=grant.id, kind=GrantKind(grant.kind), principal_id=grant.principal_id,
        purpose=grant.purpose, recording_ids=recording_ids(session, grant.id),
        request_id=grant.request_id, not_before=grant.not_before, expires_at=grant.expires_at,
        revoked_at=grant.revoked_at, active=grant.active_at(now), needs_review=open_review,
        review_overdue=overdue, reviewed_at=grant.reviewed_at, incident_ref=grant.incident_ref,
        restricted=grant.restricted,
    )  # fmt: skip


@functools.cache
def _authorize_statement(all_tenants: bool, with_grant: bool) -> Any:
    """:func:`authorize_read`'s one statement (issue #12: the Range request), built once per
    scope shape: the recording through the scope filter, outer-joined to the caller's usable
    grant that lasts longest; run in autocommit on PostgreSQL."""
    now = sa.bindparam("now", type_=Grant.__table__.c.expires_at.type)  # type: ignore[attr-defined]
    usable = sa.and_(
        col(GrantRecording.recording_id) == col(Recording.id),
        col(Grant.principal_id) == sa.bindparam("principal_id", type_=sa.Uuid()),
        Grant.active_at(now),
        RecordingPurpose.active_at(now),
        restriction_allows(col(Grant.kind), col(GrantRecording.recording_id)),
        col(Grant.id) == sa.bindparam("grant_id", type_=sa.Uuid()) if with_grant else sa.true(),
    )
    grants = sa.join(
        GrantRecording, Grant, col(GrantRecording.grant_id) == col(Grant.id)
    ).join(
        RecordingPurpose,
        sa.and_(
            col(RecordingPurpose.recording_id) == col(GrantRecording.recording_id),
            col(RecordingPurpose.purpose) == col(Grant.purpose),
        ),
    )  # fmt: skip
    both = select(Recording, Grant).select_from(Recording)
    return (
        authz.visible_prepared(both, all_tenants=all_tenants)
        .outerjoin(grants, usable)
        .where(col(Recording.id) == sa.bindparam("recording_id", type_=sa.Uuid()))
        .order_by(col(Grant.expires_at).desc().nulls_last())
        .limit(1)
    )


def authorize_read(
    session: Session,
    *,
    actor: Actor,
    recording_id: uuid.UUID,
    grant_id: uuid.UUID | None,
    now: datetime,
) -> tuple[Grant, Recording]:
    """The grant that lets ``actor`` read this recording now, or a domain error.

    Not found (missing or out of scope) -> NotFoundError; disposed -> GoneError; no usable grant
    -> PermissionDeniedError, audited by :func:`vault.authz.authorize` (content is never a role
    permission). Without ``grant_id`` the caller's active covering grant that lasts longest is
    used.
    """
    params = {
        **authz.scope_params(actor), "recording_id": recording_id, "principal_id": actor.id,
        "now": now, "grant_id": grant_id,
    }  # fmt: skip
    single_statement_connection(session)
    statement = _authorize_statement(actor.all_tenants, grant_id is not None)
    found = session.exec(statement, params=params).first()
    if found is None:  # missing or out of scope: the one answer, audited by the scope's owner
        authz.get_visible(
            session, actor, Recording, recording_id, permission=Permission.recording_content_read,
            now=now, what="recording",
        )  # fmt: skip
        raise NotFoundError(f"no recording {recording_id}")  # pragma: no cover (raced)
    recording, grant = found
    if recording.status in GONE:
        raise GoneError(f"recording {recording_id} has been disposed of")
    if recording.status in UNREADABLE:
        raise NotFoundError(f"no recording {recording_id}")
    if grant is None:
        target = authz.objects([recording.tenant_id], recording_id)
        authz.authorize(session, actor, Permission.recording_content_read, target, now=now)
    assert grant is not None
    return grant, recording


# The per-segment re-check, built once: a stream runs it for every MiB it sends. Its parameters
# have names of their own, so it can be the condition of another statement (the read's event).
_NOW = sa.bindparam("valid_now", type_=Grant.__table__.c.expires_at.type)  # type: ignore[attr-defined]
_STILL_VALID = (
    sa.select(sa.literal(1))
    .select_from(Grant)
    .join(GrantRecording, col(GrantRecording.grant_id) == col(Grant.id))
    .join(Recording, col(Recording.id) == col(GrantRecording.recording_id))
    .join(
        RecordingPurpose,
        sa.and_(
            col(RecordingPurpose.recording_id) == col(Recording.id),
            col(RecordingPurpose.purpose) == col(Grant.purpose),
        ),
    )
    .where(
        col(Grant.id) == sa.bindparam("valid_grant_id", type_=sa.Uuid()),
        col(GrantRecording.recording_id) == sa.bindparam("valid_recording_id", type_=sa.Uuid()),
        Grant.active_at(_NOW),
        col(Recording.status).not_in(sorted(GONE)),
        RecordingPurpose.active_at(_NOW),
        restriction_allows(col(Grant.kind), col(Recording.id)),
    )
)  # fmt: skip


def still_valid_check(
    *, grant_id: uuid.UUID, recording_id: uuid.UUID, now: datetime
) -> tuple[sa.Select[Any], dict[str, Any]]:
    """The re-check as a statement and its parameters: it returns a row while the grant holds
    (as ``only_if`` of :func:`vault.audit.record`: the read's event is written only then)."""
    return _STILL_VALID, {"valid_grant_id": grant_id, "valid_recording_id": recording_id,
                          "valid_now": now}  # fmt: skip


def still_valid(
    db: Session | sa.Connection, *, grant_id: uuid.UUID, recording_id: uuid.UUID, now: datetime
) -> bool:
    """The per-segment re-check during a stream: one indexed query, and it fails closed."""
    statement, params = still_valid_check(grant_id=grant_id, recording_id=recording_id, now=now)
    return db.execute(statement, params).first() is not None
