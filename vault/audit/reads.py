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
from vault.authz import Actor, Permission
from vault.context import Context
from vault.models import AuditCheckpointPublic, AuditEventPublic

__all__ = ["list_checkpoints", "list_events", "verify"]


def list_events(
    session: Session, *, actor: Actor, after_seq: int, limit: int, now: datetime
) -> list[AuditEventPublic]:
    authz.authorize(session, actor, Permission.audit_read, now=now)
    rows = chain.list_events(
        session, after_seq=after_seq, limit=limit, restrict=lambda q: authz.visible(q, actor)
    )
    return [chain.to_public(ev) for ev in rows]


def list_checkpoints(
    session: Session, *, actor: Actor, after_id: int, limit: int, now: datetime
) -> list[AuditCheckpointPublic]:
    authz.authorize(session, actor, Permission.audit_read, authz.EVERY_TENANT, now=now)
    return checkpoints.list_checkpoints(session, limit=limit, after_id=after_id)


def verify(ctx: Context, session: Session, *, actor: Actor, now: datetime) -> dict[str, Any]:
    authz.authorize(session, actor, Permission.audit_read, authz.EVERY_TENANT, now=now)
    # The trusted key comes from config or the provider, never from the DB or the exports.
    result = checkpoints.verify_all(session, public_key=checkpoints.trusted_public_key(ctx))
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
