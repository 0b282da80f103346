"""The audit log as principals read it: every read through the one authorization and scope filter.

A principal limited to some tenants sees those tenants' events and nothing of another's; events
without a tenant are for principals over all tenants only. An inclusion proof is an event read:
for an event outside the caller's scope it answers exactly as for one that does not exist.
Signed tree heads and consistency proofs are about the whole log but reveal only sizes, hashes
and per-tenant counts, so every principal with audit access gets them: that is what lets a
tenant-scoped auditor verify its own events. Verifying the log in the database (every event of
every tenant) still needs a principal over all tenants (403 ``all-tenants-required``).

Kept apart from :mod:`vault.audit.chain` because :mod:`vault.authz` itself writes through it:
this module sits above both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from vault import authz
from vault.audit import chain, checkpoints, heads, logcheck, tree
from vault.audit.chain import AuditFilter, Order
from vault.authz import Actor, Permission
from vault.errors import NotFoundError
from vault.models import AuditCheckpointPublic, AuditEvent, AuditEventPublic, AuditTreeHeadPublic

__all__ = [
    "AuditFilter", "Order", "consistency", "inclusion", "list_checkpoints", "list_events",
    "list_heads", "verify",
]  # fmt: skip


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


def inclusion(
    session: Session, *, actor: Actor, seq: int, tree_size: int, now: datetime
) -> dict[str, Any]:
    """{seq, leaf_index, tree_size, path: [hex]} for an event the caller may see."""
    authz.authorize(session, actor, Permission.audit_read, now=now)
    query = select(AuditEvent.seq, AuditEvent.leaf_index).where(AuditEvent.seq == seq)
    found = session.exec(authz.visible(query, actor)).first()
    if found is None:
        raise NotFoundError("no such audit event")
    leaf = found[1]
    path = tree.inclusion(session, leaf_index=leaf, tree_size=tree_size)
    return {"seq": seq, "leaf_index": leaf, "tree_size": tree_size,
            "path": [h.hex() for h in path]}  # fmt: skip


def consistency(
    session: Session, *, actor: Actor, first: int, second: int, now: datetime
) -> dict[str, Any]:
    authz.authorize(session, actor, Permission.audit_read, now=now)
    path = tree.consistency(session, first=first, second=second)
    return {"from": first, "to": second, "path": [h.hex() for h in path]}


def list_heads(
    session: Session, *, actor: Actor, after_id: int, limit: int, now: datetime
) -> list[AuditTreeHeadPublic]:
    authz.authorize(session, actor, Permission.audit_read, now=now)
    return heads.list_heads(session, limit=limit, after_id=after_id)


def list_checkpoints(
    session: Session, *, actor: Actor, after_id: int, limit: int, now: datetime
) -> list[AuditCheckpointPublic]:
    """Legacy chain checkpoints: they sign the chain of every tenant's events."""
    authz.authorize(session, actor, Permission.audit_read, authz.EVERY_TENANT, now=now)
    return checkpoints.list_checkpoints(session, limit=limit, after_id=after_id)


def verify(session: Session, *, actor: Actor, public_key: bytes, now: datetime) -> dict[str, Any]:
    """``public_key`` is :func:`checkpoints.trusted_public_key`, fetched by the caller before its
    transaction opens (it may ask the key provider); never from the DB or the exports."""
    authz.authorize(session, actor, Permission.audit_read, authz.EVERY_TENANT, now=now)
    result = logcheck.verify_all(session, public_key=public_key)
    found = result.events
    return {
        "ok": result.ok,
        "checked": found.checked,
        "head_seq": found.head_seq,
        "head_hash": found.head_hash,
        "tree_size": found.tree_size,
        "first_bad_seq": result.first_bad_seq,
        "reason": result.reason,
        "head_id": result.head_id,
        "heads_checked": result.heads_checked,
        "latest_tree_size": result.latest_tree_size,
        "checkpoint_id": result.checkpoint_id,
        "checkpoints_checked": result.checkpoints_checked,
        "latest_checkpoint_seq": result.latest_checkpoint_seq,
    }
