"""Subject access: what the vault holds about some calls of one tenant, for its privacy office.

callvault is a processor: the customer's end user asks the customer, whose privacy principal
asks us with the call ids. The answer covers, per call id:

- the live recordings, as their metadata shows them (times, purposes with expiry, holds,
  derivatives, restriction);
- who accessed them: every grant that covered them (pseudonymous principal ids, never an
  e-mail; purpose, ticket or incident) and every audited read under it (time, byte range);
- the erasure requests that cover them or still name the call id, with their outcome;
- the legal disclosures that covered them (unless their notification is barred) and the
  hand-offs that gave them to a sub-processor.

What it cannot say, by design: disposal (retention or erasure) clears a recording's call id, and
an erasure request forgets its call id once resolved, so nothing links those back to a call. The
answer says so instead of answering "nothing".

Audited without the call ids: the event carries an opaque random request id and counts. Never
any media: metadata and the audit trail only.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from vault import audit, authz
from vault.audit.chain import optional_ts
from vault.audit.reads import AuditFilter
from vault.authz import Actor, Permission
from vault.disclosures import notification as disclosures
from vault.errors import InvalidInputError
from vault.identity.tenants import tenant_for_write
from vault.models import (
    AccessRequest,
    ErasureItem,
    ErasureRequest,
    Grant,
    GrantRecording,
    Recording,
    RecordingStatus,
)
from vault.models.privacy import MAX_CALL_IDS
from vault.recordings import metadata as recordings
from vault.retention import erasure
from vault.subprocessors import redeem as handoffs
from vault.tags import AuditAction

__all__ = ["DOC_TYPE", "UNLINKABLE", "subject_access"]

DOC_TYPE, DOC_VERSION = "callvault.subject-access", 1
UNLINKABLE = (
    "Recordings disposed of (by retention or erasure) have their call id cleared, and an "
    "erasure request forgets its call id once resolved: by design nothing links them back to "
    "a call. A call id listed under call_ids_without_live_recordings may therefore have had "
    "recordings that were disposed of; their tombstones hold no call id."
)
_READ_PAGE = 1000


def _check_call_ids(values: object) -> list[str]:
    if not isinstance(values, list | tuple) or not 1 <= len(values) <= MAX_CALL_IDS:
        raise InvalidInputError(f"call_ids must list 1 to {MAX_CALL_IDS} call ids")
    if any(not isinstance(v, str) or not 1 <= len(v) <= 256 for v in values):
        raise InvalidInputError("each call id is a string of 1-256 characters")
    if len(set(values)) != len(values):
        raise InvalidInputError("call_ids must not repeat")
    return list(values)


def _reads(session: Session, actor: Actor, recording_id: uuid.UUID) -> list[dict[str, Any]]:
    """The audited reads of one recording, through the audit log's list API (scoped)."""
    found: list[dict[str, Any]] = []
    after = 0
    wanted = AuditFilter(recording_id=recording_id, action=AuditAction.recording_read)
    while rows := audit.list_events(
        session, after_seq=after, limit=_READ_PAGE, filters=wanted,
        restrict=lambda q: authz.visible(q, actor),
    ):  # fmt: skip
        for ev in rows:
            pub = audit.to_public(ev)
            found.append(
                {"at": optional_ts(pub.ts), "principal_id": pub.actor,
                 "grant_id": str(pub.grant_id), "purpose": pub.purpose,
                 "range": pub.details.get("range")}
            )  # fmt: skip
        after = rows[-1].seq
    return found


def _accesses(
    session: Session, actor: Actor, ids: Sequence[uuid.UUID]
) -> dict[Any, list[dict[str, Any]]]:
    rows = session.exec(
        select(GrantRecording.recording_id, Grant)
        .join(Grant, col(Grant.id) == col(GrantRecording.grant_id))
        .where(col(GrantRecording.recording_id).in_(ids))
        .order_by(col(Grant.created_at), col(Grant.id))
    ).all()
    request_ids = {g.request_id for _, g in rows if g.request_id is not None}
    tickets = dict(
        session.exec(
            select(AccessRequest.id, AccessRequest.ticket).where(
                col(AccessRequest.id).in_(request_ids)
            )
        ).all()
    )
    out: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for rid, g in rows:
        out[rid].append(
            {"grant_id": str(g.id), "kind": g.kind, "principal_id": str(g.principal_id),
             "purpose": g.purpose, "ticket": tickets.get(g.request_id),
             "incident_ref": g.incident_ref, "granted_at": optional_ts(g.created_at),
             "expires_at": optional_ts(g.expires_at), "revoked_at": optional_ts(g.revoked_at),
             "restricted": g.restricted}
        )  # fmt: skip
    for rid in ids:  # reads are per recording, whatever grant they went through
        reads = _reads(session, actor, rid)
        for access in out.get(rid, []):
            access["reads"] = [r for r in reads if r["grant_id"] == access["grant_id"]]
    return out


def _erasures(
    session: Session, tenant_id: uuid.UUID, call_ids: Sequence[str], ids: Sequence[uuid.UUID]
) -> list[dict[str, Any]]:
    covering = select(ErasureItem.request_id).where(col(ErasureItem.recording_id).in_(ids))
    rows = session.exec(
        select(ErasureRequest)
        .where(
            col(ErasureRequest.id).in_(covering)
            | ((ErasureRequest.tenant_id == tenant_id) & col(ErasureRequest.call_id).in_(call_ids))
        )
        .order_by(col(ErasureRequest.created_at), col(ErasureRequest.id))
    ).all()
    return [erasure.to_public(session, r).model_dump(mode="json") for r in rows]


def subject_access(
    session: Session,
    *,
    actor: Actor,
    tenant: str,
    call_ids: Sequence[str],
    request_id: uuid.UUID,
    now: datetime,
) -> dict[str, Any]:
    """The answer (a JSON document), audited in the caller's unit of work as
    ``privacy.subject_access`` with ``request_id`` and counts only."""
    authz.authorize(session, actor, Permission.subject_access, now=now)
    wanted = _check_call_ids(list(call_ids) if isinstance(call_ids, list | tuple) else call_ids)
    # A tenant named in a write: outside the scope (or unknown, for a scoped actor) is a 403.
    target = tenant_for_write(session, actor, tenant, Permission.subject_access, now=now)
    recs = session.exec(
        select(Recording)
        .where(Recording.tenant_id == target.id, col(Recording.call_id).in_(wanted))
        .order_by(col(Recording.recorded_at), col(Recording.id))
    ).all()
    children = session.exec(
        select(Recording)
        .where(col(Recording.parent_id).in_([r.id for r in recs]))
        .order_by(col(Recording.ingested_at), col(Recording.id))
    ).all()
    every = [r.id for r in recs] + [c.id for c in children]
    accesses = _accesses(session, actor, every)

    # The recordings' metadata exactly as GET /v1/recordings/{id} shows it (looked up for all
    # of them at once), plus who accessed each.
    shown = [*(r for r in recs if r.status != RecordingStatus.disposed), *children]
    publics = {p.id: p for p in recordings.to_public_many(session, shown, now=now)}

    def shape(r: Recording) -> dict[str, Any]:
        return {**publics[r.id].model_dump(mode="json"), "accesses": accesses.get(r.id, [])}

    derived: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for c in children:
        derived[c.parent_id].append(shape(c))
    live = [
        {**shape(r), "derivatives": derived.get(r.id, [])}
        for r in recs
        if r.status != RecordingStatus.disposed
    ]
    linked = {r.call_id for r in recs}
    answer = {
        "type": DOC_TYPE, "version": DOC_VERSION, "request_id": str(request_id),
        "tenant": target.name, "generated_at": audit.format_ts(now), "call_ids": wanted,
        "recordings": live,
        "call_ids_without_live_recordings": [c for c in wanted if c not in linked],
        "erasure_requests": _erasures(session, target.id, wanted, every),
        # Legal disclosures of these recordings, except those whose notification the law bars.
        "disclosures": disclosures.subject_access_section(session, every),
        # What sub-processors were given of them (issued hand-offs), e.g. for transcription.
        "handoffs": handoffs.subject_access_section(session, every, now),
        "unlinkable": UNLINKABLE,
    }  # fmt: skip
    audit.record(
        session, action=AuditAction.subject_access, actor=actor.audit_name, now=now,
        tenant_id=target.id, target=str(request_id),
        details={"request_id": str(request_id), "call_ids": len(wanted),
                 "recordings": len(live), "derivatives": len(children),
                 "erasure_requests": len(answer["erasure_requests"]),
                 "disclosures": len(answer["disclosures"]),
                 "handoffs": len(answer["handoffs"])},
    )  # fmt: skip
    return answer
