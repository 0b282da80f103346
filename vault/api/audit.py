"""/v1/audit: the events, the Merkle log's proofs and signed tree heads, and verification.

Reads go through :mod:`vault.audit.reads` (authorization and the scope filter). The list's
filters are checked twice on purpose: shapes and lengths here, as query types, and their meaning
(a known action, ``from`` not after ``to``) in :class:`vault.audit.chain.AuditFilter`, which
answers 422 ``invalid-input`` for callers that do not come through HTTP too.

Proofs follow RFC 6962 (hashes in hex): ``/proof`` answers 404 ``not-found`` for an event the
caller cannot see or that does not exist, 404 ``audit-tree-size-unknown`` for a size the log has
not reached, 409 ``audit-leaf-not-in-tree`` for an event not (yet) in that tree; ``/consistency``
422 ``audit-tree-range-invalid`` when ``from`` is after ``to``."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query

from vault.api.deps import CtxDep, CurrentActor, ReadSessionDep
from vault.audit import checkpoints, reads
from vault.models import AuditCheckpointPublic, AuditEventPublic, AuditTreeHeadPublic
from vault.validation import BIGINT_MAX, Text, Timestamp

router = APIRouter(prefix="/v1/audit", tags=["audit"])

Size = Annotated[int, Query(ge=0, le=BIGINT_MAX)]


@router.get("", response_model=list[AuditEventPublic])
def list_events(
    ctx: CtxDep,
    session: ReadSessionDep,
    actor: CurrentActor,
    after_seq: Annotated[int, Query(ge=0, le=BIGINT_MAX)] = 0,
    before_seq: Annotated[int | None, Query(ge=1, le=BIGINT_MAX)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    order: Annotated[reads.Order, Query()] = "asc",
    recording_id: Annotated[uuid.UUID | None, Query()] = None,
    event_actor: Annotated[Text | None, Query(alias="actor", min_length=1, max_length=64)] = None,
    action: Annotated[Text | None, Query(min_length=1, max_length=64)] = None,
    tenant_id: Annotated[uuid.UUID | None, Query()] = None,
    ts_from: Annotated[Timestamp | None, Query(alias="from")] = None,
    ts_to: Annotated[Timestamp | None, Query(alias="to")] = None,
) -> list[AuditEventPublic]:
    filters = reads.AuditFilter(
        recording_id=recording_id, actor=event_actor, action=action, tenant_id=tenant_id,
        ts_from=ts_from, ts_to=ts_to,
    )  # fmt: skip
    return reads.list_events(
        session, actor=actor, after_seq=after_seq, before_seq=before_seq, limit=limit,
        order=order, filters=filters, now=ctx.now(),
    )  # fmt: skip


@router.get("/proof")
def inclusion_proof(
    ctx: CtxDep,
    session: ReadSessionDep,
    actor: CurrentActor,
    seq: Annotated[int, Query(ge=1, le=BIGINT_MAX)],
    tree_size: Annotated[int, Query(ge=1, le=BIGINT_MAX)],
) -> dict[str, Any]:
    return reads.inclusion(session, actor=actor, seq=seq, tree_size=tree_size, now=ctx.now())


@router.get("/consistency")
def consistency_proof(
    ctx: CtxDep,
    session: ReadSessionDep,
    actor: CurrentActor,
    first: Annotated[int, Query(alias="from", ge=0, le=BIGINT_MAX)],
    second: Annotated[int, Query(alias="to", ge=0, le=BIGINT_MAX)],
) -> dict[str, Any]:
    return reads.consistency(session, actor=actor, first=first, second=second, now=ctx.now())


@router.get("/checkpoints", response_model=list[AuditTreeHeadPublic])
def list_tree_heads(
    ctx: CtxDep,
    session: ReadSessionDep,
    actor: CurrentActor,
    after_id: Annotated[int, Query(ge=0, le=BIGINT_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditTreeHeadPublic]:
    """The signed tree heads, oldest first: the exact statement and its signature."""
    return reads.list_heads(session, actor=actor, after_id=after_id, limit=limit, now=ctx.now())


@router.get("/checkpoints/legacy", response_model=list[AuditCheckpointPublic])
def list_legacy_checkpoints(
    ctx: CtxDep,
    session: ReadSessionDep,
    actor: CurrentActor,
    after_id: Annotated[int, Query(ge=0, le=BIGINT_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditCheckpointPublic]:
    """Checkpoints of the hash chain from before the Merkle log (principals over all tenants)."""
    return reads.list_checkpoints(
        session, actor=actor, after_id=after_id, limit=limit, now=ctx.now()
    )


@router.get("/verify")
def verify(ctx: CtxDep, actor: CurrentActor) -> dict[str, Any]:
    key = checkpoints.trusted_public_key(ctx)  # may ask the provider: before the transaction
    with ctx.db.reading() as session:
        return reads.verify(session, actor=actor, public_key=key, now=ctx.now())
