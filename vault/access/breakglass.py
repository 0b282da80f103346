"""Break-glass: an immediate, short grant for security principals, reviewed afterwards.

- security role only, with scope over every recording's tenant, at most 60 minutes (and never
  beyond the purpose's own ``max_access_minutes``), the purpose active on every recording;
- ``incident_ref`` (``INC-42`` or an ``https://`` URL) and a non-trivial reason are required;
- one unreviewed break-glass grant at a time. We count per *owner* rather than per principal, so
  a person holding two security keys cannot open two (stricter than, and implying, DESIGN.md's
  per-principal rule);
- the after-review is done by a security principal of another owner; a review still open after
  24 h is audited once as overdue by :func:`vault.access.requests.expire`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from vault import audit
from vault.access import grants
from vault.access.rules import (
    REVIEW_OVERDUE,
    check_comment,
    check_duration,
    check_ids,
    check_openable,
    check_reason,
    check_ref,
    ensure_scope,
    grant_tenants,
    load_recordings,
    owner_key,
    require_principal,
    same_owner,
    single_tenant,
)
from vault.authz import Actor, Permission, ensure
from vault.errors import ConflictError, NotFoundError, PermissionDeniedError
from vault.models import Grant, GrantKind, Principal, Role
from vault.policy import Policy
from vault.tags import AuditAction

MAX_BREAK_GLASS_MINUTES = 60.0


def _ensure_security(actor: Actor, permission: Permission) -> None:
    ensure(actor, permission)
    # The local operator holds every permission, but break-glass is a person's act.
    if actor.system or actor.role != Role.security:
        raise PermissionDeniedError("break-glass is for security principals only")


def open_break_glass(session: Session, owner: str) -> Grant | None:
    """The owner's unreviewed break-glass grant, if any (expired or revoked ones count too:
    the review is still owed)."""
    stmt = select(Grant).where(
        Grant.owner == owner_key(owner), Grant.kind == GrantKind.break_glass.value,
        col(Grant.needs_review).is_(True), col(Grant.reviewed_at).is_(None),
    )  # fmt: skip
    return session.exec(stmt).first()


def break_glass(
    session: Session,
    *,
    actor: Actor,
    policy: Policy,
    recording_ids: Sequence[uuid.UUID],
    purpose: str,
    incident_ref: str,
    reason: str,
    duration_minutes: float,
    now: datetime,
) -> Grant:
    _ensure_security(actor, Permission.break_glass)
    rules = policy.purpose(purpose)
    ids = check_ids(recording_ids)
    limit = min(MAX_BREAK_GLASS_MINUTES, rules.max_access_minutes)
    duration = check_duration(duration_minutes, limit, purpose)
    incident_ref, reason = check_ref(incident_ref, "incident_ref"), check_reason(reason)
    require_principal(session, actor)
    # Lock every principal of this owner: two concurrent break-glass calls by one person
    # serialise here, so the one-open-grant rule holds on PostgreSQL too.
    session.exec(
        select(Principal.id).where(Principal.owner == owner_key(actor.owner)).with_for_update()
    ).all()
    recs = load_recordings(session, actor, ids)
    check_openable(session, recs, purpose, now)
    existing = open_break_glass(session, actor.owner)
    if existing is not None:
        raise ConflictError(
            f"an unreviewed break-glass grant ({existing.id}) is already open for your owner; "
            "it must be reviewed first"
        )
    grant = grants.issue_grant(
        session, principal_id=actor.id, owner=owner_key(actor.owner), purpose=purpose,
        recording_ids=ids, not_before=now, expires_at=now + timedelta(minutes=duration),
        kind=GrantKind.break_glass, incident_ref=incident_ref, reason=reason,
    )  # fmt: skip
    tenants = {r.tenant_id for r in recs}
    audit.record(
        session, action=AuditAction.break_glass, actor=actor.audit_name, now=now,
        tenant_id=single_tenant(tenants), target=str(grant.id), purpose=purpose,
        grant_id=grant.id,
        details={"recording_ids": [str(i) for i in ids],
                 "tenant_ids": sorted(map(str, tenants)), "incident_ref": incident_ref,
                 "reason": reason, "duration_minutes": duration,
                 "expires_at": audit.format_ts(grant.expires_at)},
    )  # fmt: skip
    return grant


def review_break_glass(
    session: Session, *, actor: Actor, grant_id: uuid.UUID, comment: str, now: datetime
) -> Grant:
    """Close the after-review of a break-glass grant (another owner's, within scope)."""
    _ensure_security(actor, Permission.break_glass_review)
    comment = check_comment(comment, required=True)
    require_principal(session, actor)
    grant = session.get(Grant, grant_id, with_for_update=True, populate_existing=True)
    if grant is None:
        raise NotFoundError(f"no grant {grant_id}")
    tenants = grant_tenants(session, grant.id)
    ensure_scope(actor, tenants, f"grant {grant.id}")
    if grant.kind != GrantKind.break_glass.value:
        raise ConflictError(f"grant {grant.id} is not a break-glass grant; nothing to review")
    if actor.id == grant.principal_id or same_owner(actor.owner, grant.owner):
        raise PermissionDeniedError(
            "a break-glass grant is reviewed by a security principal of another owner"
        )
    if grant.reviewed_at is not None:
        raise ConflictError(f"grant {grant.id} was already reviewed")
    grant.reviewed_at, grant.reviewed_by, grant.review_comment = now, actor.id, comment
    session.add(grant)
    session.flush()
    audit.record(
        session, action=AuditAction.break_glass_review, actor=actor.audit_name, now=now,
        tenant_id=single_tenant(tenants), target=str(grant.id), purpose=grant.purpose,
        grant_id=grant.id,
        details={"comment": comment, "holder": str(grant.principal_id),
                 "incident_ref": grant.incident_ref,
                 "overdue": now - grant.created_at > REVIEW_OVERDUE},
    )  # fmt: skip
    return grant
