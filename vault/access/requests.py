"""Access requests, four-eyes reviews, revocation, listings and the expiry sweep.

Rules (DESIGN.md "Access invariants"):
- a request names 1..100 stored recordings in the requester's scope, one purpose active on all of
  them, a duration within the purpose's ``max_access_minutes``, a reason and a ticket;
- four-eyes compares *owners*: the requester's owner never reviews, and one owner counts once
  however many principals it holds;
- a reviewer holds one of the purpose's ``approver_roles`` and has scope over every recording's
  tenant; the purpose is re-checked at approval time;
- a state change and its audit event share the caller's transaction (the caller commits).

Input rules and shared look-ups live in :mod:`vault.access.rules`, the listings in
:mod:`vault.access.queries`, break-glass in :mod:`vault.access.breakglass`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from vault import audit
from vault.access import grants
from vault.access.rules import (
    REVIEW_OVERDUE,
    approving_owners,
    check_comment,
    check_duration,
    check_ids,
    check_openable,
    check_reason,
    check_ref,
    effective_status,
    ensure_scope,
    grant_tenants,
    load_recordings,
    lock_row,
    owner_key,
    request_recording_ids,
    request_tenants,
    require_principal,
    same_owner,
    single_tenant,
)
from vault.authz import Actor, Permission, ensure
from vault.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from vault.leases import claim
from vault.models import (
    AccessRequest,
    AccessRequestRecording,
    AccessRequestStatus,
    Grant,
    GrantKind,
    Review,
    ReviewDecision,
    Role,
)
from vault.policy import Policy
from vault.tags import AuditAction

__all__ = [
    "EXPIRE_ACTOR", "RequestExpiredError", "create_request",
    "expire", "review", "revoke_grant", "revoke_request",
]  # fmt: skip

S = AccessRequestStatus
P = Permission
EXPIRE_ACTOR = "system:expire-grants"
# Roles that may revoke grants they do not hold (within their scope).
REVOKER_ROLES = frozenset({Role.approver, Role.security})
EXPIRE_BATCH = 500


class RequestExpiredError(ConflictError):
    """The request outlived its TTL. It has been marked expired (and audited) in the session:
    the caller commits that before answering."""


def _audit(session: Session, action: AuditAction, actor: str, now: datetime, **kw: Any) -> None:
    audit.record(session, action=action, actor=actor, now=now, **kw)


# --- requests -------------------------------------------------------------------------------------


def create_request(
    session: Session,
    *,
    actor: Actor,
    policy: Policy,
    recording_ids: Sequence[uuid.UUID],
    purpose: str,
    reason: str,
    ticket: str,
    duration_minutes: float,
    request_ttl: timedelta,
    now: datetime,
) -> AccessRequest:
    ensure(actor, P.access_request)
    require_principal(session, actor)
    rules = policy.purpose(purpose)
    ids = check_ids(recording_ids)
    duration = check_duration(duration_minutes, rules.max_access_minutes, purpose)
    reason, ticket = check_reason(reason), check_ref(ticket)
    if request_ttl <= timedelta(0):
        raise ValueError("request_ttl must be positive")
    recs = load_recordings(session, actor, ids)
    check_openable(session, recs, purpose, now)
    req = AccessRequest(
        purpose=purpose, reason=reason, ticket=ticket, duration_minutes=duration,
        requester_id=actor.id, requester_owner=owner_key(actor.owner), status=S.pending,
        approvals_required=rules.approvals, created_at=now, expires_at=now + request_ttl,
    )  # fmt: skip
    session.add(req)
    session.flush()
    for rid in ids:
        session.add(AccessRequestRecording(request_id=req.id, recording_id=rid))
    session.flush()
    tenants = {r.tenant_id for r in recs}
    _audit(
        session, AuditAction.access_request, actor.audit_name, now,
        tenant_id=single_tenant(tenants), target=str(req.id), purpose=purpose,
        details={
            "recording_ids": [str(i) for i in ids], "tenant_ids": sorted(map(str, tenants)),
            "ticket": ticket, "reason": reason, "duration_minutes": duration,
            "approvals_required": rules.approvals, "expires_at": audit.format_ts(req.expires_at),
        },
    )  # fmt: skip
    return req


def _mark_expired(session: Session, req: AccessRequest, actor: str, now: datetime) -> None:
    req.status, req.decided_at = S.expired, now
    session.add(req)
    session.flush()
    _audit(
        session, AuditAction.access_expire, actor, now, target=str(req.id), purpose=req.purpose,
        tenant_id=single_tenant(request_tenants(session, req.id)),
        details={"expires_at": audit.format_ts(req.expires_at)},
    )  # fmt: skip


def review(
    session: Session,
    *,
    actor: Actor,
    policy: Policy,
    request_id: uuid.UUID,
    decision: ReviewDecision | str,
    comment: str,
    now: datetime,
) -> AccessRequest:
    """Approve or deny; the grant is issued once enough distinct owners approve."""
    ensure(actor, P.access_review)
    try:
        decision = ReviewDecision(decision)
    except ValueError:
        raise InvalidInputError("decision must be approve or deny") from None
    comment = check_comment(comment)
    require_principal(session, actor)
    req: AccessRequest = lock_row(session, AccessRequest, request_id, "access request")
    # Authority before state, so nobody learns a request's state without the right to review it.
    if actor.id == req.requester_id or same_owner(actor.owner, req.requester_owner):
        raise PermissionDeniedError(
            "self-approval: the requester's owner can never review this request"
        )
    tenants = request_tenants(session, req.id)
    ensure_scope(actor, tenants, f"access request {req.id}")
    rules = policy.purpose(req.purpose)
    if actor.role not in rules.approver_roles:
        raise PermissionDeniedError(
            f"role {actor.role} may not review {req.purpose!r} requests "
            f"(approver roles: {', '.join(rules.approver_roles)})"
        )
    if effective_status(req, now) == S.expired and req.status == S.pending:
        _mark_expired(session, req, actor.audit_name, now)
        raise RequestExpiredError(f"access request {req.id} has expired")
    if req.status != S.pending:
        raise ConflictError(f"access request {req.id} is {req.status}, not pending")
    owner = owner_key(actor.owner)
    prior = session.exec(
        select(Review.id).where(Review.request_id == req.id, Review.reviewer_owner == owner)
    ).first()
    if prior is not None:
        raise ConflictError("your owner has already reviewed this request; an owner counts once")

    tenant, ids = single_tenant(tenants), request_recording_ids(session, req.id)
    if decision == ReviewDecision.approve:
        # Re-check now: the purpose may have ended, or the recording gone, since the request.
        check_openable(session, load_recordings(session, actor, ids), req.purpose, now)
        check_duration(req.duration_minutes, rules.max_access_minutes, req.purpose)
    session.add(
        Review(
            request_id=req.id, reviewer_id=actor.id, reviewer_owner=owner,
            decision=decision.value, comment=comment, created_at=now,
        )
    )  # fmt: skip
    session.flush()
    approvals = approving_owners(session, req.id)
    action = (
        AuditAction.access_approve
        if decision == ReviewDecision.approve
        else (AuditAction.access_deny)
    )
    _audit(
        session, action, actor.audit_name, now, tenant_id=tenant, target=str(req.id),
        purpose=req.purpose,
        details={"comment": comment, "approvals": approvals,
                 "approvals_required": req.approvals_required},
    )  # fmt: skip
    if decision == ReviewDecision.deny:
        req.status, req.decided_at = S.denied, now
    elif approvals >= req.approvals_required:
        grant = grants.issue_grant(
            session, principal_id=req.requester_id, owner=req.requester_owner,
            purpose=req.purpose, recording_ids=ids, not_before=now,
            expires_at=now + timedelta(minutes=req.duration_minutes), request_id=req.id,
        )  # fmt: skip
        req.status, req.decided_at, req.grant_id = S.approved, now, grant.id
        _audit(
            session, AuditAction.grant_create, actor.audit_name, now, tenant_id=tenant,
            target=str(grant.id), purpose=req.purpose, grant_id=grant.id,
            details={"request_id": str(req.id), "holder": str(req.requester_id),
                     "recording_ids": [str(i) for i in ids],
                     "expires_at": audit.format_ts(grant.expires_at)},
        )  # fmt: skip
    session.add(req)
    session.flush()
    return req


# --- revocation -----------------------------------------------------------------------------------


def _ensure_may_revoke(
    actor: Actor, *, holder_id: uuid.UUID, holder_owner: str, tenants: set[uuid.UUID], what: str
) -> None:
    """The holder themself (any of their principals), or an approver/security with full scope.
    Revoking only ever reduces access, so the local operator may too."""
    if actor.system or actor.id == holder_id or same_owner(actor.owner, holder_owner):
        return
    if actor.role not in REVOKER_ROLES:
        if not any(actor.in_scope(t) for t in tenants):
            raise NotFoundError(f"no {what}")
        raise PermissionDeniedError("only the holder, an approver or security may revoke this")
    ensure_scope(actor, tenants, what)


def _revoke(session: Session, actor: Actor, grant: Grant, reason: str, now: datetime) -> Grant:
    if grant.revoked_at is not None:
        raise ConflictError(f"grant {grant.id} is already revoked")
    if grant.expires_at <= now:
        raise ConflictError(f"grant {grant.id} has already expired")
    grant.revoked_at, grant.revoked_by = now, actor.id
    session.add(grant)
    if grant.request_id is not None:
        req = session.get(AccessRequest, grant.request_id)
        if req is not None and req.status == S.approved:
            req.status = S.revoked
            session.add(req)
    session.flush()
    _audit(
        session, AuditAction.grant_revoke, actor.audit_name, now, grant_id=grant.id,
        target=str(grant.id), purpose=grant.purpose,
        tenant_id=single_tenant(grant_tenants(session, grant.id)),
        details={"reason": reason, "kind": grant.kind, "holder": str(grant.principal_id),
                 "request_id": None if grant.request_id is None else str(grant.request_id)},
    )  # fmt: skip
    return grant


def revoke_grant(
    session: Session, *, actor: Actor, grant_id: uuid.UUID, reason: str = "", now: datetime
) -> Grant:
    """Revoke any grant, break-glass included. Revoking twice is a conflict."""
    ensure(actor, P.grant_revoke)
    reason = check_comment(reason)
    grant: Grant = lock_row(session, Grant, grant_id, "grant")
    tenants = grant_tenants(session, grant.id)
    _ensure_may_revoke(
        actor, holder_id=grant.principal_id, holder_owner=grant.owner, tenants=tenants,
        what=f"grant {grant.id}",
    )  # fmt: skip
    return _revoke(session, actor, grant, reason, now)


def revoke_request(
    session: Session, *, actor: Actor, request_id: uuid.UUID, reason: str = "", now: datetime
) -> AccessRequest:
    """Withdraw a pending request, or revoke the grant of an approved one."""
    ensure(actor, P.grant_revoke)
    reason = check_comment(reason)
    req: AccessRequest = lock_row(session, AccessRequest, request_id, "access request")
    tenants = request_tenants(session, req.id)
    _ensure_may_revoke(
        actor, holder_id=req.requester_id, holder_owner=req.requester_owner, tenants=tenants,
        what=f"access request {req.id}",
    )  # fmt: skip
    status = effective_status(req, now)
    if status == S.approved and req.grant_id is not None:
        _revoke(session, actor, lock_row(session, Grant, req.grant_id, "grant"), reason, now)
    elif status == S.pending:
        req.status, req.decided_at = S.revoked, now
        session.add(req)
        session.flush()
        # No dedicated tag for a withdrawn request: grant.revoke with the request as target.
        _audit(
            session, AuditAction.grant_revoke, actor.audit_name, now, target=str(req.id),
            purpose=req.purpose, tenant_id=single_tenant(tenants),
            details={"reason": reason, "kind": "request", "stage": "pending",
                     "request_id": str(req.id)},
        )  # fmt: skip
    else:
        raise ConflictError(f"access request {req.id} is {status}; nothing to revoke")
    return req


# --- the expire-grants job ------------------------------------------------------------------------


def _claim(session: Session, stmt: Any) -> list[Any]:
    return list(session.exec(claim(session, stmt.limit(EXPIRE_BATCH))).all())


def expire(session: Session, *, now: datetime, actor: str = EXPIRE_ACTOR) -> int:
    """Mark lapsed requests and grants, and flag overdue break-glass reviews once. Idempotent:
    every step only selects rows it has not marked yet. Returns the number of changes."""
    changed = 0
    lapsed = select(AccessRequest).where(
        AccessRequest.status == S.pending, col(AccessRequest.expires_at) <= now
    )
    while rows := _claim(session, lapsed):
        for req in rows:
            _mark_expired(session, req, actor, now)
        changed += len(rows)
    ended = select(Grant).where(
        col(Grant.expired_at).is_(None), col(Grant.revoked_at).is_(None),
        col(Grant.expires_at) <= now,
    )  # fmt: skip
    while rows := _claim(session, ended):
        for grant in rows:
            grant.expired_at = now
            session.add(grant)
            session.flush()
            _audit(
                session, AuditAction.grant_expire, actor, now, grant_id=grant.id,
                target=str(grant.id), purpose=grant.purpose,
                tenant_id=single_tenant(grant_tenants(session, grant.id)),
                details={"expires_at": audit.format_ts(grant.expires_at), "kind": grant.kind},
            )  # fmt: skip
        changed += len(rows)
    overdue = select(Grant).where(
        Grant.kind == GrantKind.break_glass.value, col(Grant.needs_review).is_(True),
        col(Grant.reviewed_at).is_(None), col(Grant.overdue_flagged_at).is_(None),
        col(Grant.created_at) < now - REVIEW_OVERDUE,
    )  # fmt: skip
    while rows := _claim(session, overdue):
        for grant in rows:
            grant.overdue_flagged_at = now
            session.add(grant)
            session.flush()
            _audit(
                session, AuditAction.break_glass_overdue, actor, now, grant_id=grant.id,
                target=str(grant.id), purpose=grant.purpose,
                tenant_id=single_tenant(grant_tenants(session, grant.id)),
                details={"holder": str(grant.principal_id), "incident_ref": grant.incident_ref,
                         "opened_at": audit.format_ts(grant.created_at)},
            )  # fmt: skip
        changed += len(rows)
    return changed
