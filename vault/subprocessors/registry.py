"""The sub-processor registry: admins add and remove entries, staff read it, everyone sees the
public list, and a ``subprocessor`` principal is bound to one entry.

Removal keeps the row (``removed_at``, who, why) and, in the same unit of work, revokes the
entry's open hand-offs and its principals: from that commit on nothing of the sub-processor's
opens anything (authentication also refuses a principal bound to a removed entry).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from crypto.age import AgeRecipientError, parse_recipient
from vault import audit, authz
from vault.authz import Actor, Permission
from vault.errors import (
    ConflictError,
    NotFoundError,
    SubprocessorKeyError,
    UnknownSubprocessorError,
)
from vault.identity import principals
from vault.identity.owners import Owner
from vault.models import (
    Principal,
    Role,
    Subprocessor,
    SubprocessorCreate,
    SubprocessorListing,
    SubprocessorPrincipal,
    SubprocessorPublic,
)
from vault.policy import Policy
from vault.subprocessors import handoffs
from vault.tags import AuditAction

__all__ = [
    "add_principal", "add_subprocessor", "list_subprocessors", "public_list",
    "remove_subprocessor", "to_public",
]  # fmt: skip


def to_public(row: Subprocessor) -> SubprocessorPublic:
    return SubprocessorPublic(
        id=row.id, name=row.name, purpose=row.purpose, region=row.region,
        contract_ref=row.contract_ref, age_recipient=row.age_recipient,
        age_fingerprint=parse_recipient(row.age_recipient).fingerprint, added_at=row.added_at,
        removed_at=row.removed_at, removal_reason=row.removal_reason,
    )  # fmt: skip


def add_subprocessor(
    session: Session, *, actor: Actor, policy: Policy, body: SubprocessorCreate, now: datetime
) -> SubprocessorPublic:
    authz.authorize(session, actor, Permission.subprocessor_manage, now=now)
    policy.purpose(body.purpose)  # UnknownPurposeError names the known ones
    try:
        recipient = parse_recipient(body.age_recipient)
    except AgeRecipientError as exc:
        raise SubprocessorKeyError(str(exc), field="age_recipient") from None
    if session.exec(select(Subprocessor.id).where(Subprocessor.name == body.name)).first():
        # Names are never reused: an opt-in names the entry it was given for.
        raise ConflictError(f"a sub-processor named {body.name!r} exists or existed")
    row = Subprocessor(
        name=body.name, purpose=body.purpose, region=body.region, contract_ref=body.contract_ref,
        age_recipient=recipient.text, added_at=now, added_by=actor.audit_name,
    )  # fmt: skip
    session.add(row)
    try:
        session.flush()
    except sa.exc.IntegrityError as exc:  # lost a race with a concurrent add
        raise ConflictError(f"a sub-processor named {body.name!r} exists or existed") from exc
    audit.record(
        session, action=AuditAction.subprocessor_add, actor=actor.audit_name, now=now,
        target=str(row.id),
        details={"name": row.name, "purpose": row.purpose, "region": row.region,
                 "age_fingerprint": recipient.fingerprint},
    )  # fmt: skip
    return to_public(row)


def remove_subprocessor(
    session: Session, *, actor: Actor, name: str, reason: str, now: datetime
) -> SubprocessorPublic:
    """Remove the entry; its open hand-offs and its principals are revoked with it."""
    authz.authorize(session, actor, Permission.subprocessor_manage, now=now)
    row = session.exec(
        select(Subprocessor).where(Subprocessor.name == name).with_for_update()
    ).first()
    if row is None:
        raise NotFoundError(f"no sub-processor {name!r}")
    if row.removed_at is not None:
        raise ConflictError(f"sub-processor {name!r} was already removed")
    row.removed_at, row.removed_by, row.removal_reason = now, actor.audit_name, reason
    session.add(row)
    session.flush()
    revoked = handoffs.revoke_open(session, subprocessor_id=row.id, reason="subprocessor-removed",
                                   now=now)  # fmt: skip
    bound = session.exec(
        select(Principal.name)
        .join(SubprocessorPrincipal, col(SubprocessorPrincipal.principal_id) == col(Principal.id))
        .where(SubprocessorPrincipal.subprocessor_id == row.id, col(Principal.revoked_at).is_(None))
        .order_by(col(Principal.name))
    ).all()
    for principal in bound:
        principals.revoke_principal(session, actor=actor, name=principal, now=now)
    audit.record(
        session, action=AuditAction.subprocessor_remove, actor=actor.audit_name, now=now,
        target=str(row.id),
        details={"reason": reason, "handoffs_revoked": revoked, "principals_revoked": len(bound)},
    )  # fmt: skip
    return to_public(row)


def list_subprocessors(
    session: Session, *, actor: Actor, now: datetime
) -> list[SubprocessorPublic]:
    authz.authorize(session, actor, Permission.subprocessor_read, now=now)
    return [to_public(r) for r in _all(session)]


def public_list(session: Session) -> list[SubprocessorListing]:
    """Every entry ever listed, removed ones with their date: no contract, no key."""
    fields = ("name", "purpose", "region", "added_at", "removed_at")
    return [SubprocessorListing(**{f: getattr(r, f) for f in fields}) for r in _all(session)]


def _all(session: Session) -> list[Subprocessor]:
    ordered = select(Subprocessor).order_by(col(Subprocessor.added_at), col(Subprocessor.name))
    return list(session.exec(ordered).all())


def add_principal(
    session: Session,
    *,
    actor: Actor,
    name: str,
    owner: Owner,
    subprocessor: str,
    now: datetime,
    expires_at: datetime | None = None,
    rng: Callable[[int], bytes] | None = None,
) -> tuple[Principal, str]:
    """A principal of role ``subprocessor`` bound to the listed entry ``subprocessor``."""
    authz.authorize(session, actor, Permission.principal_manage, now=now)
    sp_id: uuid.UUID | None = session.exec(
        select(Subprocessor.id)
        .where(Subprocessor.name == subprocessor, col(Subprocessor.removed_at).is_(None))
        .with_for_update(read=True)  # a removal racing this waits, then revokes the principal
    ).first()
    if sp_id is None:
        raise UnknownSubprocessorError(f"no listed sub-processor {subprocessor!r}")
    return principals.add_principal(
        session, actor=actor, name=name, role=Role.subprocessor, owner=owner, tenants=[],
        all_tenants=False, now=now, expires_at=expires_at, rng=rng, subprocessor_id=sp_id,
    )  # fmt: skip
