"""Access requests, four-eyes reviews, revocation and the expiry sweep.

Rules (DESIGN.md "Access invariants"), decided by :func:`vault.authz.authorize` and its object
rules where they are about *who*, here where they are about *state*:
- a request names 1..100 stored recordings in the requester's scope, one purpose active on all of
  them, a duration within the purpose's ``max_access_minutes``, a reason and a ticket;
- four-eyes compares *owners*: the requester's owner never reviews, and one owner counts once
  however many principals it holds;
- a reviewer holds one of the purpose's ``approver_roles`` and has scope over every recording's
  tenant; the purpose is re-checked at approval time;
- a state change and its audit event share the caller's unit of work. An expiry noticed while
  refusing a review is written in a short transaction of its own (``vault.db.detached``), so it
  survives the refusal's rollback.

Input rules and shared look-ups live in :mod:`vault.access.rules`, the listings in
:mod:`vault.access.queries`, break-glass in :mod:`vault.access.breakglass`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from vault import audit, authz
from vault.access import grants
from vault.access.rules import (
    approving_owners,
    check_comment,
    check_duration,
    check_ids,
    check_openable,
    check_reason,
    check_ref,
    effective_status,
    grant_tenants,
    lock_row,
    request_recording_ids,
    request_tenants,
    require_principal,
    single_tenant,
)
from vault.authz import Actor, Permission
from vault.db import detached
from vault.errors import ConflictError, InvalidInputError
from vault.leases import claim
from vault.models import (
    AccessRequest,
    AccessRequestRecording,
    AccessRequestStatus,
    Grant,
    GrantRecording,
    Review,
    ReviewDecision,
)
from vault.policy import Policy
from vault.tags import AuditAction
from vault.tenants.policy import effective_for

__all__ = [
    "EXPIRE_ACTOR", "RequestExpiredError", "create_request", "expire", "review", "revoke_covering",
    "revoke_grant", "revoke_request",
]  # fmt: skip

S = AccessRequestStatus
P = Permission
EXPIRE_ACTOR = "system:expire-grants"
EXPIRE_BATCH = 500


class RequestExpiredError(ConflictError):
    """The request outlived its TTL; its expiry is recorded in a transaction of its own."""


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
    authz.authorize(session, actor, P.access_request, now=now)
    require_principal(session, actor)
    policy.purpose(purpose)  # an unknown purpose is refused before anything is looked up
    ids = check_ids(recording_ids)
    reason, ticket = check_reason(reason), check_ref(ticket)
    if request_ttl <= timedelta(0):
        raise ValueError("request_ttl must be positive")
    recs = authz.get_visible_many(session, actor, ids, permission=P.access_request, now=now)
    # The recordings' tenants' restrictions (disabled purpose, more approvals) apply.
    rules = effective_for(session, policy, {r.tenant_id for r in recs}).purpose(purpose)
    duration = check_duration(duration_minutes, rules.max_access_minutes, purpose)
    check_openable(session, recs, purpose, now)
    req = AccessRequest(
        purpose=purpose, reason=reason, ticket=ticket, duration_minutes=duration,
        requester_id=actor.id, requester_owner=actor.owner, status=S.pending,
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


def _expire_detached(request_id: uuid.UUID, actor: str, now: datetime) -> Any:
    def write(session: Session) -> None:
        req = lock_row(session, AccessRequest, request_id, "access request")
        if req.lapsed_at(now):  # still pending: nobody recorded the expiry meanwhile
            _mark_expired(session, req, actor, now)

    return write


def _request_resource(
    req: AccessRequest, policy: Policy, tenants: set[uuid.UUID]
) -> authz.Resource:
    return authz.objects(
        tenants, req.id, holder_id=req.requester_id,
        holder_owner=req.requester_owner,
        approver_roles=frozenset(policy.purpose(req.purpose).approver_roles),
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
    authz.authorize(session, actor, P.access_review, now=now)
    try:
        decision = ReviewDecision(decision)
    except ValueError:
        raise InvalidInputError("decision must be approve or deny") from None
    comment = check_comment(comment)
    require_principal(session, actor)
    req: AccessRequest = lock_row(session, AccessRequest, request_id, "access request")
    tenants = request_tenants(session, req.id)
    policy = effective_for(session, policy, tenants)
    # Authority before state, so nobody learns a request's state without the right to review it.
    target = _request_resource(req, policy, tenants)
    authz.authorize(session, actor, P.access_review, target, now=now)
    if req.lapsed_at(now):
        detached(session, _expire_detached(req.id, actor.audit_name, now))
        raise RequestExpiredError(f"access request {req.id} has expired")
    if req.status != S.pending:
        raise ConflictError(f"access request {req.id} is {req.status}, not pending")
    owner = actor.owner
    prior = session.exec(
        select(Review.id).where(Review.request_id == req.id, Review.reviewer_owner == owner)
    ).first()
    if prior is not None:
        raise ConflictError("your owner has already reviewed this request; an owner counts once")

    rules = policy.purpose(req.purpose)
    tenant = single_tenant(target.tenants)
    ids = request_recording_ids(session, req.id)
    if decision == ReviewDecision.approve:
        # Re-check now: the purpose may have ended, or the recording gone, since the request.
        recs = authz.get_visible_many(session, actor, ids, permission=P.access_review, now=now)
        check_openable(session, recs, req.purpose, now)
        check_duration(req.duration_minutes, rules.max_access_minutes, req.purpose)
    session.add(
        Review(
            request_id=req.id, reviewer_id=actor.id, reviewer_owner=owner,
            decision=decision.value, comment=comment, created_at=now,
        )
    )  # fmt: skip
    session.flush()
    approvals = approving_owners(session, req.id)
    approved = decision == ReviewDecision.approve
    _audit(
        session, AuditAction.access_approve if approved else AuditAction.access_deny,
        actor.audit_name, now, tenant_id=tenant, target=str(req.id), purpose=req.purpose,
        details={"comment": comment, "approvals": approvals,
                 "approvals_required": req.approvals_required},
    )  # fmt: skip
    if not approved:
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
    authz.authorize(session, actor, P.grant_revoke, now=now)
    reason = check_comment(reason)
    grant: Grant = lock_row(session, Grant, grant_id, "grant")
    target = authz.objects(
        grant_tenants(session, grant.id), grant.id, holder_id=grant.principal_id,
        holder_owner=grant.owner,
    )  # fmt: skip
    authz.authorize(session, actor, P.grant_revoke, target, now=now)
    return _revoke(session, actor, grant, reason, now)


def revoke_request(
    session: Session, *, actor: Actor, request_id: uuid.UUID, reason: str = "", now: datetime
) -> AccessRequest:
    """Withdraw a pending request, or revoke the grant of an approved one."""
    authz.authorize(session, actor, P.grant_revoke, now=now)
    reason = check_comment(reason)
    req: AccessRequest = lock_row(session, AccessRequest, request_id, "access request")
    tenants = request_tenants(session, req.id)
    target = authz.objects(
        tenants, req.id, holder_id=req.requester_id, holder_owner=req.requester_owner
    )
    authz.authorize(session, actor, P.grant_revoke, target, now=now)
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


def revoke_covering(
    session: Session, *, actor: Actor, recording_id: uuid.UUID, reason: str, now: datetime
) -> int:
    """End every running or future grant covering a recording (a restriction of processing),
    break-glass ones included, each revoked and audited like any revocation. The caller has
    authorised the act on the recording; the grants are locked so a concurrent revocation
    serialises with this one."""
    running = (
        select(Grant)
        .join(GrantRecording, col(GrantRecording.grant_id) == col(Grant.id))
        .where(
            GrantRecording.recording_id == recording_id,
            col(Grant.revoked_at).is_(None), col(Grant.expires_at) > now,
        )
        .order_by(col(Grant.id))
        .with_for_update(of=Grant)
    )  # fmt: skip
    rows = list(session.exec(running).all())
    for grant in rows:
        _revoke(session, actor, grant, reason, now)
    return len(rows)


# --- the expire-grants job ------------------------------------------------------------------------


def _claim(session: Session, stmt: Any) -> list[Any]:
    return list(session.exec(claim(session, stmt.limit(EXPIRE_BATCH))).all())


def expire(session: Session, *, now: datetime, actor: str = EXPIRE_ACTOR) -> int:
    """Mark lapsed requests and grants, and flag overdue break-glass reviews once. Idempotent:
    every step only selects rows it has not marked yet. Returns the number of changes."""
    changed = 0
    lapsed = select(AccessRequest).where(AccessRequest.lapsed_at(now))
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
        Grant.review_overdue_at(now), col(Grant.overdue_flagged_at).is_(None)
    )
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
