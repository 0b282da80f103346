"""Approving a disclosure, and the after-review of an emergency one.

Four-eyes compares owners (:mod:`vault.authz` owns the rule, ``_disclosure_four_eyes``): the
approvers are two owners other than the requester's and than each other, one privacy and one
security principal; an emergency disclosure needs one approver of another owner, then an
after-review by yet another owner (privacy or security), owed within 24 h of the approval and
overdue after that (the break-glass rule, :func:`vault.models.access.review_overdue_since`).

An approver approves an exact revision and the exact recipient key fingerprint, and says how
the key was verified out of band (required). The unique constraints (disclosure, revision,
owner) and (disclosure, revision, role) hold the rule under concurrency as well.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlmodel import Session

from vault import audit, authz
from vault.access.rules import check_comment, check_reason, require_principal
from vault.authz import Actor, Permission
from vault.disclosures import register, states
from vault.errors import (
    ConflictError,
    DisclosureRevisionError,
    DisclosureStateError,
    RecipientMismatchError,
)
from vault.models import Disclosure, DisclosureApproval, DisclosureStatus
from vault.tags import AuditAction

__all__ = ["approve", "review"]

S = DisclosureStatus


def _target(row: Disclosure, excluded: set[str], roles: frozenset[str]) -> authz.Resource:
    return authz.objects(
        [row.tenant_id], row.id, holder_id=row.requested_by, holder_owner=row.requester_owner,
        excluded_owners=frozenset(excluded), approver_roles=roles,
    )  # fmt: skip


def approve(
    session: Session,
    *,
    actor: Actor,
    disclosure_id: uuid.UUID,
    revision: int,
    recipient_fingerprint: str,
    verification: str,
    now: datetime,
) -> Disclosure:
    """Record one approval of ``revision``; the request becomes ``approved`` with the last one
    it needs."""
    row = register.get(
        session, actor=actor, disclosure_id=disclosure_id, now=now,
        permission=Permission.disclosure_approve, lock=True,
    )  # fmt: skip
    verification = check_reason(verification, "verification")
    require_principal(session, actor)
    given = register.approvals_of(session, row)
    missing = register.missing_roles(row, given)
    authz.authorize(
        session, actor, Permission.disclosure_approve,
        _target(row, {a.approver_owner for a in given}, missing or register.APPROVER_ROLES),
        now=now,
    )  # fmt: skip
    if row.status != S.received:
        raise DisclosureStateError(f"disclosure {row.id} is {row.status}; nothing to approve")
    if revision != row.revision:
        raise DisclosureRevisionError(
            f"disclosure {row.id} is at revision {row.revision}, not {revision}: it changed "
            "and its approvals were reset"
        )
    if recipient_fingerprint.strip() != row.recipient_fingerprint:
        raise RecipientMismatchError(
            "the fingerprint approved is not the one of the disclosure's recipient key"
        )
    if not missing:  # cannot happen while received; kept as a guard
        raise ConflictError("the disclosure has every approval it needs")
    approval = DisclosureApproval(
        disclosure_id=row.id, revision=row.revision, approver_id=actor.id,
        approver_owner=actor.owner, role=str(actor.role),
        recipient_fingerprint=row.recipient_fingerprint, verification=verification,
        created_at=now,
    )  # fmt: skip
    session.add(approval)
    session.flush()
    audit.record(
        session, action=AuditAction.disclosure_approval, actor=actor.audit_name, now=now,
        tenant_id=row.tenant_id, target=str(row.id),
        details={"revision": row.revision, "role": str(actor.role),
                 "recipient_fingerprint": row.recipient_fingerprint,
                 "verification": verification},
    )  # fmt: skip
    if not register.missing_roles(row, [*given, approval]):
        states.transition(
            session, row, from_=S.received, to=S.approved, actor=actor.audit_name, now=now,
            values={"approved_at": now},
            where=[Disclosure.revision == row.revision],
            details={"approvers": [str(a.approver_id) for a in (*given, approval)],
                     "emergency": row.emergency},
        )  # fmt: skip
    return row


def review(
    session: Session, *, actor: Actor, disclosure_id: uuid.UUID, comment: str, now: datetime
) -> Disclosure:
    """Close the after-review of an emergency disclosure (late is allowed and says so)."""
    row = register.get(
        session, actor=actor, disclosure_id=disclosure_id, now=now,
        permission=Permission.disclosure_review, lock=True,
    )  # fmt: skip
    comment = check_comment(comment, required=True)
    require_principal(session, actor)
    approvers = {a.approver_owner for a in register.approvals_of(session, row)}
    authz.authorize(
        session, actor, Permission.disclosure_review,
        _target(row, approvers, register.APPROVER_ROLES), now=now,
    )  # fmt: skip
    if not row.review_open():
        raise DisclosureStateError(
            f"disclosure {row.id} owes no after-review (not an approved emergency one, or "
            "already reviewed)"
        )
    overdue = bool(row.review_overdue_at(now))
    row.reviewed_at, row.reviewed_by, row.review_comment = now, actor.id, comment
    session.add(row)
    session.flush()
    audit.record(
        session, action=AuditAction.disclosure_review, actor=actor.audit_name, now=now,
        tenant_id=row.tenant_id, target=str(row.id),
        details={"comment": comment, "overdue": overdue, "revision": row.revision},
    )  # fmt: skip
    return row
