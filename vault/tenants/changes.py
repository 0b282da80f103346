"""Tenant changes: an admin proposes, a privacy principal of another owner approves.

One mechanism for every tenant-level change (offboarding, policy restrictions, authorisations):
a proposal is a :class:`~vault.models.TenantChange` row that does nothing by itself; a newer
proposal of the same kind supersedes a pending one; approval names the change id it saw (so a
proposal swapped in between is never approved by mistake) and runs the kind's ``apply`` in the
same unit of work as the approval and its audit event. Four-eyes compares owners (the object
rule of ``tenant:change:approve`` in :mod:`vault.authz.rules`): the proposer's owner, through
any of its keys, and the local operator never approve.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault import audit, authz
from vault.authz import Actor, Permission
from vault.errors import ConflictError, InvalidInputError, NotFoundError, TenantOffboardingError
from vault.identity.tenants import tenant_for_write
from vault.models import (
    ChangeKind,
    ChangeStatus,
    Tenant,
    TenantChange,
    TenantChangePublic,
    TenantStatus,
)
from vault.tags import AuditAction

__all__ = ["Apply", "approve", "pending", "propose", "to_public"]

P = Permission
# What a kind does once approved: (session, change, tenant, payload) -> audit details.
Apply = Callable[[Session, TenantChange, Tenant, dict[str, Any]], dict[str, Any]]


def _reason(reason: object) -> str:
    text = reason.strip() if isinstance(reason, str) else ""
    if not text or len(text) > 2000:
        raise InvalidInputError("reason: 1-2000 characters", field="reason")
    return text


def propose(
    session: Session,
    *,
    actor: Actor,
    tenant: str,
    kind: ChangeKind,
    payload: dict[str, Any],
    reason: str,
    now: datetime,
) -> TenantChange:
    """Record a proposal (validated by the caller) in the caller's unit of work."""
    authz.authorize(session, actor, P.tenant_change_propose, now=now)
    target = tenant_for_write(session, actor, tenant, P.tenant_change_propose, now=now)
    if target.status != TenantStatus.active:
        raise TenantOffboardingError(f"tenant {target.name!r} is {target.status}")
    text = _reason(reason)
    session.execute(
        sa.update(TenantChange)
        .where(
            col(TenantChange.tenant_id) == target.id,
            col(TenantChange.kind) == kind.value,
            col(TenantChange.status) == ChangeStatus.pending.value,
        )
        .values(status=ChangeStatus.superseded.value)
    )
    change = TenantChange(
        tenant_id=target.id, kind=kind.value, status=ChangeStatus.pending.value,
        payload=json.dumps(payload, sort_keys=True, separators=(",", ":")), reason=text,
        proposed_by=actor.audit_name, proposed_owner=actor.owner, proposed_at=now,
    )  # fmt: skip
    session.add(change)
    session.flush()
    audit.record(
        session, action=AuditAction.tenant_change_propose, actor=actor.audit_name, now=now,
        tenant_id=target.id, target=str(change.id),
        details={"kind": kind.value, "change_id": str(change.id), "payload": payload,
                 "reason": text},
    )  # fmt: skip
    return change


def approve(
    session: Session,
    *,
    actor: Actor,
    tenant: str,
    kind: ChangeKind,
    change_id: uuid.UUID,
    now: datetime,
    apply: Apply,
) -> TenantChange:
    """Approve the pending change ``change_id`` of ``kind`` and apply it, in one unit of work."""
    authz.authorize(session, actor, P.tenant_change_approve, now=now)
    target = tenant_for_write(session, actor, tenant, P.tenant_change_approve, now=now)
    change = session.exec(
        select(TenantChange)
        .where(
            TenantChange.id == change_id,
            TenantChange.tenant_id == target.id,
            TenantChange.kind == kind.value,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if change is None:
        raise NotFoundError(f"no {kind.value} change {change_id} for this tenant")
    authz.authorize(
        session, actor, P.tenant_change_approve,
        authz.objects([target.id], change.id, holder_owner=change.proposed_owner), now=now,
    )  # fmt: skip
    if change.status != ChangeStatus.pending:
        raise ConflictError(f"change {change.id} is {change.status}, not pending")
    tenant_row = session.exec(select(Tenant).where(Tenant.id == target.id).with_for_update()).one()
    if tenant_row.status != TenantStatus.active:
        raise TenantOffboardingError(f"tenant {tenant_row.name!r} is {tenant_row.status}")
    change.status = ChangeStatus.approved.value
    change.approved_by, change.approved_owner, change.approved_at = (
        actor.audit_name, actor.owner, now,
    )  # fmt: skip
    session.add(change)
    session.flush()
    details = apply(session, change, tenant_row, json.loads(change.payload))
    audit.record(
        session, action=AuditAction.tenant_change_approve, actor=actor.audit_name, now=now,
        tenant_id=target.id, target=str(change.id),
        details={"kind": kind.value, "change_id": str(change.id),
                 "proposed_by": change.proposed_by, **details},
    )  # fmt: skip
    return change


def pending(session: Session, tenant_id: uuid.UUID) -> list[TenantChange]:
    return list(
        session.exec(
            select(TenantChange)
            .where(
                TenantChange.tenant_id == tenant_id,
                TenantChange.status == ChangeStatus.pending.value,
            )
            .order_by(col(TenantChange.proposed_at))
        ).all()
    )


def to_public(
    change: TenantChange, tenant: Tenant, dry_run: dict[str, Any] | None = None
) -> TenantChangePublic:
    return TenantChangePublic(
        id=change.id, tenant=tenant.name, kind=ChangeKind(change.kind),
        status=ChangeStatus(change.status), payload=json.loads(change.payload),
        reason=change.reason, proposed_by=change.proposed_by, proposed_at=change.proposed_at,
        approved_by=change.approved_by, approved_at=change.approved_at, dry_run=dry_run,
    )  # fmt: skip
