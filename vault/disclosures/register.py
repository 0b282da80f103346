"""Registering a request from an authority, changing it, objecting to it, closing it, reading it.

The scope is resolved once, here: recording ids, or a tenant and call ids, through the one scope
filter (:func:`vault.authz.visible`); call ids are never stored nor audited (the event carries
counts). A disclosure covers stored recordings of one tenant: that tenant is the customer who is
notified. Recordings already disposed of or erased no longer exist and cannot be disclosed; a
restricted recording may be (a legal order overrides a restriction of use): it is listed in
``restricted_recording_ids`` for the approvers and in the audit events.

Any change to what was asked (scope, recipient, authority, legal basis or reference, emergency)
bumps ``revision``: approvals of an older revision no longer count (they stay on record), an
approved request returns to ``received``, and the change is audited with its reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from crypto.age import AgeRecipient, AgeRecipientError, parse_recipient
from vault import audit, authz, exports
from vault.access.rules import check_reason, require_principal
from vault.authz import Actor, Permission
from vault.disclosures import states
from vault.errors import DisclosureScopeError, DisclosureStateError, RecipientKeyError
from vault.identity.tenants import tenant_for_write
from vault.models import (
    REVIEW_OVERDUE,
    Disclosure,
    DisclosureApproval,
    DisclosurePublic,
    DisclosureRecording,
    DisclosureStatus,
    Recording,
    RecordingStatus,
    Role,
)
from vault.models.disclosures import (
    MAX_DISCLOSURE_RECORDINGS,
    DisclosureApprovalPublic,
    DisclosureCreate,
    DisclosureUpdate,
)
from vault.privacy.rules import restricted_of
from vault.tags import AuditAction

__all__ = [
    "close", "get", "list_disclosures", "missing_roles", "object_to", "receive", "recording_ids",
    "to_public", "update",
]  # fmt: skip

S = DisclosureStatus
OPEN = (S.received, S.approved)  # a request that may still change
APPROVER_ROLES = frozenset({Role.privacy.value, Role.security.value})
ANY = "any"


def _recipient(text: str) -> AgeRecipient:
    try:
        return parse_recipient(text)
    except AgeRecipientError as exc:
        raise RecipientKeyError(str(exc)) from None


def _scope(
    session: Session,
    actor: Actor,
    *,
    recording_ids: Sequence[uuid.UUID] | None,
    tenant: str | None,
    call_ids: Sequence[str] | None,
    now: datetime,
) -> list[Recording]:
    """The stored recordings the scope names, all of one tenant, in id order."""
    by_ids = recording_ids is not None
    if by_ids == (tenant is not None or call_ids is not None):
        raise DisclosureScopeError("give either recording_ids, or tenant and call_ids")
    if by_ids:
        ids = list(dict.fromkeys(recording_ids or ()))
        if not 1 <= len(ids) <= MAX_DISCLOSURE_RECORDINGS:
            raise DisclosureScopeError(f"name 1 to {MAX_DISCLOSURE_RECORDINGS} recordings")
        recs = authz.get_visible_many(
            session, actor, ids, permission=Permission.disclosure_manage, now=now
        )
    else:
        wanted = list(dict.fromkeys(call_ids or ()))
        if tenant is None or not 1 <= len(wanted) <= MAX_DISCLOSURE_RECORDINGS:
            raise DisclosureScopeError(
                f"give a tenant and 1 to {MAX_DISCLOSURE_RECORDINGS} call ids"
            )
        target = tenant_for_write(session, actor, tenant, Permission.disclosure_manage, now=now)
        query = select(Recording).where(
            Recording.tenant_id == target.id, col(Recording.call_id).in_(wanted)
        )
        recs = list(session.exec(authz.visible(query, actor).order_by(col(Recording.id))))
        found = {r.call_id for r in recs}
        if len(found) != len(wanted):  # never say which: call ids stay out of errors
            raise DisclosureScopeError(
                f"{len(wanted) - len(found)} of the call ids match no recording of the tenant"
            )
    if len({r.tenant_id for r in recs}) != 1:
        raise DisclosureScopeError("a disclosure covers recordings of one tenant only")
    gone = [r.id for r in recs if r.status != RecordingStatus.stored]
    if gone:
        raise DisclosureScopeError(
            f"{len(gone)} recording(s) are not stored (disposed of, erased or failed), first "
            f"{min(gone)}: what no longer exists cannot be disclosed"
        )
    return sorted(recs, key=lambda r: r.id)


def recording_ids(session: Session, disclosure_id: uuid.UUID) -> list[uuid.UUID]:
    rows = session.exec(
        select(DisclosureRecording.recording_id).where(
            DisclosureRecording.disclosure_id == disclosure_id
        )
    ).all()
    return sorted(rows)


def _set_scope(session: Session, row: Disclosure, recs: Sequence[Recording]) -> None:
    for link in session.exec(
        select(DisclosureRecording).where(DisclosureRecording.disclosure_id == row.id)
    ).all():
        session.delete(link)
    session.flush()
    for rec in recs:
        session.add(DisclosureRecording(disclosure_id=row.id, recording_id=rec.id))
    session.flush()


def _scope_details(session: Session, recs: Sequence[Recording]) -> dict[str, Any]:
    restricted = restricted_of(session, [r.id for r in recs])
    return {
        "recording_ids": [str(r.id) for r in recs],
        "restricted_recording_ids": sorted(map(str, restricted)),
    }


def receive(session: Session, *, actor: Actor, body: DisclosureCreate, now: datetime) -> Disclosure:
    """Register a request (``received``), audited with counts and opaque ids only."""
    authz.authorize(session, actor, Permission.disclosure_manage, now=now)
    require_principal(session, actor)
    recipient = _recipient(body.recipient)
    recs = _scope(
        session, actor, recording_ids=body.recording_ids, tenant=body.tenant,
        call_ids=body.call_ids, now=now,
    )  # fmt: skip
    row = Disclosure(
        tenant_id=recs[0].tenant_id, authority=body.authority, legal_basis=body.legal_basis,
        legal_reference=body.legal_reference, received_at=body.received_at,
        emergency=body.emergency, status=S.received.value, revision=1,
        recipient=recipient.text, recipient_fingerprint=recipient.fingerprint,
        requested_by=actor.id, requester_owner=actor.owner, created_at=now, updated_at=now,
        needs_review=body.emergency,
    )  # fmt: skip
    session.add(row)
    session.flush()
    _set_scope(session, row, recs)
    audit.record(
        session, action=AuditAction.disclosure_receive, actor=actor.audit_name, now=now,
        tenant_id=row.tenant_id, target=str(row.id),
        details={"authority": row.authority, "legal_reference": row.legal_reference,
                 "emergency": row.emergency, "recipient_fingerprint": row.recipient_fingerprint,
                 "by_call_ids": body.call_ids is not None, **_scope_details(session, recs)},
    )  # fmt: skip
    return row


def get(
    session: Session, *, actor: Actor, disclosure_id: uuid.UUID, now: datetime,
    permission: Permission = Permission.disclosure_read, lock: bool = False,
) -> Disclosure:  # fmt: skip
    """The disclosure if the actor may see it (404 otherwise, like a missing one)."""
    authz.authorize(session, actor, permission, now=now)
    return authz.get_visible(
        session, actor, Disclosure, disclosure_id, permission=permission, now=now,
        what="disclosure", lock=lock,
    )  # fmt: skip


def list_disclosures(
    session: Session, *, actor: Actor, status: DisclosureStatus | None, now: datetime
) -> list[Disclosure]:
    authz.authorize(session, actor, Permission.disclosure_read, now=now)
    query = select(Disclosure)
    if status is not None:
        query = query.where(Disclosure.status == status.value)
    return list(session.exec(authz.visible(query, actor).order_by(col(Disclosure.created_at))))


_FIELDS = ("authority", "legal_basis", "legal_reference", "received_at", "emergency")


def update(
    session: Session, *, actor: Actor, disclosure_id: uuid.UUID, body: DisclosureUpdate,
    now: datetime,
) -> Disclosure:  # fmt: skip
    """Change the request: a new revision, approvals reset, back to ``received``."""
    row = get(
        session, actor=actor, disclosure_id=disclosure_id, now=now,
        permission=Permission.disclosure_manage, lock=True,
    )  # fmt: skip
    reason = check_reason(body.reason)
    if row.status not in OPEN:
        raise DisclosureStateError(f"disclosure {row.id} is {row.status}; it can no longer change")
    values: dict[str, Any] = {}
    for name in _FIELDS:
        value = getattr(body, name)
        if value is not None and value != getattr(row, name):
            values[name] = value
    if body.recipient is not None:
        recipient = _recipient(body.recipient)
        if recipient.text != row.recipient:
            values["recipient"] = recipient.text
            values["recipient_fingerprint"] = recipient.fingerprint
    scope: dict[str, Any] = {}
    if body.recording_ids is not None or body.tenant is not None or body.call_ids is not None:
        recs = _scope(
            session, actor, recording_ids=body.recording_ids, tenant=body.tenant,
            call_ids=body.call_ids, now=now,
        )  # fmt: skip
        if recs[0].tenant_id != row.tenant_id:
            raise DisclosureScopeError("the scope must stay within the disclosure's tenant")
        if [r.id for r in recs] != recording_ids(session, row.id):
            _set_scope(session, row, recs)
            scope = _scope_details(session, recs)
    if not values and not scope:
        raise DisclosureStateError("nothing changed: the request is as it was")
    if "emergency" in values:
        values["needs_review"] = values["emergency"]
    changed = sorted([*values, *(["scope"] if scope else [])])
    states.transition(
        session, row, from_=OPEN, to=S.received, actor=actor.audit_name, now=now,
        values={**values, "revision": row.revision + 1, "approved_at": None},
        details={"changed": [c for c in changed if c != "needs_review"], "reason": reason,
                 "approvals_reset": True, **scope,
                 **({"recipient_fingerprint": values["recipient_fingerprint"]}
                    if "recipient_fingerprint" in values else {})},
    )  # fmt: skip
    return row


def object_to(
    session: Session, *, actor: Actor, disclosure_id: uuid.UUID, reason: str, now: datetime
) -> Disclosure:
    """Object to an improperly issued request: nothing is ever exported for it."""
    row = get(
        session, actor=actor, disclosure_id=disclosure_id, now=now,
        permission=Permission.disclosure_manage, lock=True,
    )  # fmt: skip
    reason = check_reason(reason)
    states.transition(
        session, row, from_=S.received, to=S.objected, actor=actor.audit_name, now=now,
        values={"objected_at": now, "objection_reason": reason}, details={"reason": reason},
    )  # fmt: skip
    return row


def close(
    session: Session, *, actor: Actor, disclosure_id: uuid.UUID, reason: str, now: datetime
) -> Disclosure:
    """Close the matter; any download not yet completed is withdrawn (the purge job deletes
    its object)."""
    row = get(
        session, actor=actor, disclosure_id=disclosure_id, now=now,
        permission=Permission.disclosure_manage, lock=True,
    )  # fmt: skip
    reason = check_reason(reason)
    revoked = exports.revoke(
        session, subject_id=row.id, reason="disclosure closed", actor=actor.audit_name, now=now
    )
    states.transition(
        session, row, from_=(S.received, S.approved, S.objected, S.disclosed), to=S.closed,
        actor=actor.audit_name, now=now, values={"closed_at": now, "close_reason": reason},
        details={"reason": reason, "exports_revoked": revoked},
    )  # fmt: skip
    return row


# --- the public view ----------------------------------------------------------------------------


def approvals_of(session: Session, row: Disclosure) -> list[DisclosureApproval]:
    """Approvals of the current revision, oldest first."""
    return list(
        session.exec(
            select(DisclosureApproval)
            .where(
                DisclosureApproval.disclosure_id == row.id,
                DisclosureApproval.revision == row.revision,
            )
            .order_by(col(DisclosureApproval.created_at))
        )
    )


def missing_roles(row: Disclosure, approvals: Sequence[DisclosureApproval]) -> frozenset[str]:
    """Roles still to approve the current revision: one of either for an emergency, else one
    privacy and one security principal (of two owners, neither the requester's)."""
    if row.emergency:
        return frozenset() if approvals else APPROVER_ROLES
    return APPROVER_ROLES - {a.role for a in approvals}


def to_public(session: Session, row: Disclosure, *, now: datetime) -> DisclosurePublic:
    approvals = approvals_of(session, row)
    ids = recording_ids(session, row.id)
    missing = missing_roles(row, approvals) if row.status == S.received else frozenset()
    manifest = None
    if row.manifest_statement and row.manifest_signature:
        manifest = {"statement": row.manifest_statement, "signature": row.manifest_signature}
    return DisclosurePublic(
        **{name: getattr(row, name) for name in (
            "id", "tenant_id", "authority", "legal_basis", "legal_reference", "received_at",
            "emergency", "revision", "recipient", "recipient_fingerprint", "requested_by",
            "created_at", "objected_at", "objection_reason", "approved_at", "disclosed_at",
            "export_expires_at", "closed_at", "close_reason", "reviewed_at", "notified_at",
            "notification_channel", "notification_barred", "barred_reference",
            "barred_review_at",
        )},
        status=S(row.status), recording_ids=ids,
        restricted_recording_ids=sorted(restricted_of(session, ids)),
        approvals=[DisclosureApprovalPublic.model_validate(a, from_attributes=True)
                   for a in approvals],
        approvals_required=sorted([ANY] if row.emergency and missing else missing),
        review_due_at=review_due_at(row),
        review_overdue=bool(row.review_overdue_at(now)),
        notification_review_due=bool(row.notification_review_due(now)),
        manifest=manifest,
        exports=[e.model_dump(mode="json") for e in exports.receipts(session, subject_id=row.id)],
    )  # fmt: skip


def review_due_at(row: Disclosure) -> datetime | None:
    if not row.needs_review or row.approved_at is None:
        return None
    return row.approved_at + REVIEW_OVERDUE
