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

from sqlmodel import Session, select

from vault import audit, authz
from vault.access import grants
from vault.access.rules import (
    check_comment,
    check_duration,
    check_ids,
    check_openable,
    check_reason,
    check_ref,
    grant_tenants,
    lock_row,
    require_principal,
    single_tenant,
)
from vault.authz import Actor, Permission
from vault.errors import ConflictError
from vault.models import Grant, GrantKind, Principal
from vault.policy import Policy
from vault.tags import AuditAction

MAX_BREAK_GLASS_MINUTES = 60.0


def open_break_glass(session: Session, owner: str) -> Grant | None:
    """The owner's unreviewed break-glass grant, if any (expired or revoked ones count too:
    the review is still owed)."""
    stmt = select(Grant).where(
        Grant.owner == owner, Grant.kind == GrantKind.break_glass.value,
        Grant.review_open(),
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
    authz.authorize(session, actor, Permission.break_glass, now=now)
    rules = policy.purpose(purpose)
    ids = check_ids(recording_ids)
    limit = min(MAX_BREAK_GLASS_MINUTES, rules.max_access_minutes)
    duration = check_duration(duration_minutes, limit, purpose)
    incident_ref, reason = check_ref(incident_ref, "incident_ref"), check_reason(reason)
    require_principal(session, actor)
    # Lock every principal of this owner: two concurrent break-glass calls by one person
    # serialise here, so the one-open-grant rule holds on PostgreSQL too.
    session.exec(
        select(Principal.id).where(Principal.owner_ref == actor.owner).with_for_update()
    ).all()
    recs = authz.get_visible_many(
        session, actor, ids, permission=Permission.break_glass, now=now
    )
    # A restriction of processing does not stop security: the grant is flagged instead.
    restricted = check_openable(session, recs, purpose, now, break_glass=True)
    existing = open_break_glass(session, actor.owner)
    if existing is not None:
        raise ConflictError(
            f"an unreviewed break-glass grant ({existing.id}) is already open for your owner; "
            "it must be reviewed first"
        )
    grant = grants.issue_grant(
        session, principal_id=actor.id, owner=actor.owner, purpose=purpose,
        recording_ids=ids, not_before=now, expires_at=now + timedelta(minutes=duration),
        kind=GrantKind.break_glass, incident_ref=incident_ref, reason=reason,
        restricted=bool(restricted),
    )  # fmt: skip
    tenants = {r.tenant_id for r in recs}
    audit.record(
        session, action=AuditAction.break_glass, actor=actor.audit_name, now=now,
        tenant_id=single_tenant(tenants), target=str(grant.id), purpose=purpose,
        grant_id=grant.id,
        details={"recording_ids": [str(i) for i in ids],
                 "tenant_ids": sorted(map(str, tenants)), "incident_ref": incident_ref,
                 "reason": reason, "duration_minutes": duration,
                 "expires_at": audit.format_ts(grant.expires_at),
                 "restricted": bool(restricted),
                 "restricted_recording_ids": sorted(map(str, restricted))},
    )  # fmt: skip
    return grant


def review_break_glass(
    session: Session, *, actor: Actor, grant_id: uuid.UUID, comment: str, now: datetime
) -> Grant:
    """Close the after-review of a break-glass grant (another owner's, within scope)."""
    authz.authorize(session, actor, Permission.break_glass_review, now=now)
    comment = check_comment(comment, required=True)
    require_principal(session, actor)
    grant: Grant = lock_row(session, Grant, grant_id, "grant")
    tenants = grant_tenants(session, grant.id)
    target = authz.objects(
        tenants, grant.id, holder_id=grant.principal_id, holder_owner=grant.owner,
        kind=grant.kind,
    )  # fmt: skip
    authz.authorize(session, actor, Permission.break_glass_review, target, now=now)
    if grant.kind != GrantKind.break_glass.value:
        raise ConflictError(f"grant {grant.id} is not a break-glass grant; nothing to review")
    if grant.reviewed_at is not None:
        raise ConflictError(f"grant {grant.id} was already reviewed")
    overdue = grant.review_overdue_at(now)
    grant.reviewed_at, grant.reviewed_by, grant.review_comment = now, actor.id, comment
    session.add(grant)
    session.flush()
    audit.record(
        session, action=AuditAction.break_glass_review, actor=actor.audit_name, now=now,
        tenant_id=single_tenant(tenants), target=str(grant.id), purpose=grant.purpose,
        grant_id=grant.id,
        details={"comment": comment, "holder": str(grant.principal_id),
                 "incident_ref": grant.incident_ref,
                 "overdue": overdue, "restricted": grant.restricted},
    )  # fmt: skip
    return grant
