"""The read side of access: request shapes and the listings of requests and grants.

Requesters see their own requests; reviewers (access:review) also see every request wholly inside
their scope. Grants: the caller's own; security (grant:read:all) sees every grant in its scope.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault.access import grants
from vault.access.rules import (
    REVIEW_OVERDUE,
    approving_owners,
    effective_status,
    request_recording_ids,
)
from vault.authz import Actor, Permission
from vault.errors import InvalidInputError, PermissionDeniedError
from vault.models import (
    AccessRequest,
    AccessRequestPublic,
    AccessRequestRecording,
    AccessRequestStatus,
    Grant,
    GrantPublic,
    GrantRecording,
    Recording,
)

S = AccessRequestStatus
P = Permission


def _all_in_scope(actor: Actor, link: Any, key: Any, owner_col: Any) -> Any:
    if actor.all_tenants:
        return sa.true()
    outside = (
        select(link.recording_id)
        .join(Recording, col(Recording.id) == col(link.recording_id))
        .where(key == owner_col, col(Recording.tenant_id).not_in(actor.tenant_ids))
    )
    return ~sa.exists(outside)


def to_public_request(
    session: Session, request: AccessRequest, now: datetime
) -> AccessRequestPublic:
    return AccessRequestPublic(
        id=request.id, purpose=request.purpose, reason=request.reason, ticket=request.ticket,
        duration_minutes=request.duration_minutes, requester_id=request.requester_id,
        status=effective_status(request, now),
        recording_ids=request_recording_ids(session, request.id),
        approvals_required=request.approvals_required,
        approvals=approving_owners(session, request.id), created_at=request.created_at,
        expires_at=request.expires_at, decided_at=request.decided_at, grant_id=request.grant_id,
    )  # fmt: skip


def list_requests(
    session: Session, *, actor: Actor, status: S | str | None, now: datetime, limit: int = 500
) -> list[AccessRequestPublic]:
    """Requesters see their own; reviewers also see every request wholly inside their scope."""
    if not (actor.can(P.access_request) or actor.can(P.access_review)):
        raise PermissionDeniedError(f"role {actor.role} lacks {P.access_request}")
    q = select(AccessRequest)
    mine = AccessRequest.requester_id == actor.id
    if actor.can(P.access_review):
        ar = AccessRequestRecording
        q = q.where(sa.or_(mine, _all_in_scope(actor, ar, ar.request_id, AccessRequest.id)))
    else:
        q = q.where(mine)
    if status is not None:
        try:
            wanted = S(status)
        except ValueError:
            raise InvalidInputError(f"unknown status {status!r}; one of {', '.join(S)}") from None
        lapsed = sa.and_(AccessRequest.status == S.pending, col(AccessRequest.expires_at) <= now)
        if wanted == S.pending:
            q = q.where(AccessRequest.status == S.pending, col(AccessRequest.expires_at) > now)
        elif wanted == S.expired:
            q = q.where(sa.or_(AccessRequest.status == S.expired, lapsed))
        else:
            q = q.where(AccessRequest.status == wanted)
    q = q.order_by(col(AccessRequest.created_at).desc(), col(AccessRequest.id)).limit(limit)
    return [to_public_request(session, r, now) for r in session.exec(q).all()]


def list_grants(
    session: Session,
    *,
    actor: Actor,
    active: bool | None,
    needs_review: bool | None,
    now: datetime,
    limit: int = 500,
) -> list[GrantPublic]:
    """The caller's own grants; security (grant:read:all) sees every grant in its scope."""
    q = select(Grant)
    mine = Grant.principal_id == actor.id
    if actor.can(P.grant_read_all):
        gr = GrantRecording
        q = q.where(sa.or_(mine, _all_in_scope(actor, gr, gr.grant_id, Grant.id)))
    else:
        q = q.where(mine)
    live = sa.and_(
        col(Grant.revoked_at).is_(None), col(Grant.not_before) <= now, col(Grant.expires_at) > now
    )
    open_review = sa.and_(col(Grant.needs_review).is_(True), col(Grant.reviewed_at).is_(None))
    if active is not None:
        q = q.where(live if active else ~live)
    if needs_review is not None:
        q = q.where(open_review if needs_review else ~open_review)
    q = q.order_by(col(Grant.created_at).desc(), col(Grant.id)).limit(limit)
    overdue = REVIEW_OVERDUE.total_seconds()
    return [grants.to_public(session, g, now=now, overdue_after=overdue) for g in session.exec(q)]
