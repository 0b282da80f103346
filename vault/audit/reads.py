"""The audit log as principals read it: every read through the one authorization and scope filter.

A principal limited to some tenants sees those tenants' events and nothing of another's; events
without a tenant are for principals over all tenants only. Chain verification and checkpoints
cover every tenant, so until the log can be verified per tenant they need a principal over all
tenants (a scoped one gets 403 ``all-tenants-required``, never a partial answer).

Kept apart from :mod:`vault.audit.chain` because :mod:`vault.authz` itself writes through the
chain: this module sits above both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from vault import authz
from vault.audit import chain, checkpoints
from vault.audit.chain import AuditFilter, Order
from vault.authz import Actor, Permission
from vault.models import AuditCheckpointPublic, AuditEventPublic

__all__ = ["AuditFilter", "Order", "list_checkpoints", "list_events", "verify"]


def list_events(
    session: Session,
    *,
    actor: Actor,
    limit: int,
    now: datetime,
    after_seq: int = 0,
    before_seq: int | None = None,
    order: Order = "asc",
    filters: AuditFilter | None = None,
) -> list[AuditEventPublic]:
    """Events in ``actor``'s scope matching ``filters``: the filters narrow the scope, never
    widen it (a scoped auditor asking for another tenant gets an empty list)."""
    authz.authorize(session, actor, Permission.audit_read, now=now)
    rows = chain.list_events(
        session, after_seq=after_seq, before_seq=before_seq, limit=limit, order=order,
        filters=filters, restrict=lambda q: authz.visible(q, actor),
    )  # fmt: skip
    return [chain.to_public(ev) for ev in rows]


def list_checkpoints(
    session: Session, *, actor: Actor, after_id: int, limit: int, now: datetime
) -> list[AuditCheckpointPublic]:
    authz.authorize(session, actor, Permission.audit_read, authz.EVERY_TENANT, now=now)
    return checkpoints.list_checkpoints(session, limit=limit, after_id=after_id)


def verify(
    session: Session, *, actor: Actor, public_key: bytes, now: datetime
) -> dict[str, Any]:
    """``public_key`` is :func:`checkpoints.trusted_public_key`, fetched by the caller before its
    transaction opens (it may ask the key provider); never from the DB or the exports."""
    authz.authorize(session, actor, Permission.audit_read, authz.EVERY_TENANT, now=now)
    result = checkpoints.verify_all(session, public_key=public_key)
    found = result.chain
    return {
        "ok": result.ok,
        "checked": found.checked,
        "head_seq": found.head_seq,
        "head_hash": found.head_hash,
        "first_bad_seq": result.first_bad_seq,
        "reason": result.reason,
        "checkpoint_id": result.checkpoint_id,
        "checkpoints_checked": result.checkpoints_checked,
        "latest_checkpoint_seq": result.latest_checkpoint_seq,
    }
