"""The evidence report: what the privacy office must prove for a period and a scope.

Figures come from the tables and the audit log through the one scope filter,
:func:`vault.authz.visible`, applied with the *report's* scope (the caller's scope narrowed to the
tenant asked for), so a report never counts a row its caller could not list. Statuses and
deadlines are read from their owners' columns (an erasure's ``due_at``, a break-glass grant's
``review_overdue_at``), never recomputed from policy here.

Nothing personal leaves: principals appear by id and owner pseudonym (never a name, which may be
an e-mail, nor the owner's e-mail); recordings, call ids and media never appear at all.

The JSON is a signed document (:mod:`vault.audit.signing`) of type ``EVIDENCE_REPORT``, version 1,
signed with the audit key outside any transaction; a report file is ``{"statement", "signature"}``.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault import authz
from vault.audit import logcheck, signing
from vault.audit.chain import format_ts, optional_ts
from vault.authz import Actor, Permission
from vault.disclosures import notification as disclosures
from vault.errors import ReportPeriodError
from vault.identity.tenants import tenant_for_write
from vault.models import (
    REVIEW_OVERDUE,
    AccessRequest,
    AuditEvent,
    AuditTreeHead,
    ErasureItem,
    ErasureRequest,
    ErasureStatus,
    Grant,
    GrantKind,
    LegalHold,
    Recording,
    Redaction,
)
from vault.reports import recertification
from vault.tags import AuditAction

DOC_TYPE, VERSION = signing.EVIDENCE_REPORT, 1
MAX_PERIOD = timedelta(days=3660)
SECTIONS = (
    ("reads", "Reads by purpose"),
    ("access_requests", "Access requests"),
    ("break_glass", "Break-glass uses"),
    ("erasure", "Erasure requests"),
    ("disposals", "Disposals by reason"),
    ("holds", "Legal holds"),
    ("redactions", "Redactions and derivatives"),
    ("integrity_alarms", "Integrity alarms"),
    ("audit_log", "Audit log verification"),
    ("recertification", "Access recertification"),
    ("disclosures", "Legal disclosures"),
)


def _secs(delta: timedelta) -> int:
    return int(delta.total_seconds())


def check_period(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise ReportPeriodError("from and to need a timezone (e.g. 2026-01-01T00:00:00Z)")
    if not start < end:
        raise ReportPeriodError("from must be before to")
    if end - start > MAX_PERIOD:
        raise ReportPeriodError("the period is longer than 3660 days")


def report_scope(session: Session, *, actor: Actor, tenant: str | None, now: datetime) -> Actor:
    """The caller narrowed to the report's scope, after authorising it: a named tenant must be in
    the caller's scope (403, unknown and foreign alike); no tenant means every tenant (403
    ``all-tenants-required`` for a scoped caller)."""
    if tenant is None:
        authz.authorize(session, actor, Permission.report_read, authz.EVERY_TENANT, now=now)
        return actor
    # A tenant named by the caller: unknown and foreign look alike to a scoped caller (403).
    row = tenant_for_write(session, actor, tenant, Permission.report_read, now=now)
    return dataclasses.replace(actor, all_tenants=False, tenant_ids=frozenset({row.id}))


# --- the sections --------------------------------------------------------------------------------


def _in(column: Any, start: datetime, end: datetime) -> Any:
    return sa.and_(col(column) >= start, col(column) < end)


def _events(scope: Actor, action: AuditAction, start: datetime, end: datetime) -> Any:
    query = select(AuditEvent).where(
        AuditEvent.action == action.value, _in(AuditEvent.ts, start, end)
    )
    return authz.visible(query, scope)


_PAGE = 500


def _each(session: Session, query: Any) -> Iterable[AuditEvent]:
    """The events of ``query`` in ``seq`` order, a page at a time (memory stays flat). Keyset
    pages, not a server-side cursor: a read-only unit runs in autocommit on PostgreSQL, where
    no cursor outlives its statement."""
    after = -1
    while True:
        page = session.exec(
            query.where(col(AuditEvent.seq) > after).order_by(col(AuditEvent.seq)).limit(_PAGE)
        ).all()
        yield from page
        if len(page) < _PAGE:
            return
        after = page[-1].seq


def _reads(session: Session, scope: Actor, start: datetime, end: datetime) -> list[dict[str, Any]]:
    query = _events(scope, AuditAction.recording_read, start, end)
    count: Counter[str] = Counter()
    actors: dict[str, set[str]] = defaultdict(set)
    size: Counter[str] = Counter()
    for ev in _each(session, query):
        purpose = ev.purpose or "-"
        count[purpose] += 1
        actors[purpose].add(ev.actor or "-")
        span = json.loads(ev.canonical)["details"].get("range")
        if isinstance(span, list) and len(span) == 2 and all(isinstance(x, int) for x in span):
            size[purpose] += max(0, span[1] - span[0])  # plaintext bytes, end exclusive
    return [
        {"purpose": p, "reads": count[p], "principals": len(actors[p]), "bytes": size[p]}
        for p in sorted(count)
    ]


def _durations(values: Iterable[timedelta]) -> dict[str, int | None]:
    secs = [_secs(v) for v in values]
    if not secs:
        return {"median_seconds": None, "max_seconds": None}
    return {"median_seconds": int(statistics.median(secs)), "max_seconds": max(secs)}


def _access(session: Session, scope: Actor, start: datetime, end: datetime) -> dict[str, Any]:
    query = select(AccessRequest).where(_in(AccessRequest.created_at, start, end))
    rows = session.exec(authz.visible(query, scope)).all()
    by_status = Counter(r.status for r in rows)
    decided = [r for r in rows if r.decided_at is not None and r.status in ("approved", "denied")]
    return {
        "requested": len(rows),
        "by_status": dict(sorted(by_status.items())),
        "time_to_decision": _durations(r.decided_at - r.created_at for r in decided),  # type: ignore[operator]
    }


def _break_glass(
    session: Session, scope: Actor, start: datetime, end: datetime, now: datetime
) -> dict[str, Any]:
    query = select(Grant).where(
        Grant.kind == GrantKind.break_glass.value, _in(Grant.created_at, start, end)
    )
    uses = []
    for g in session.exec(authz.visible(query, scope).order_by(col(Grant.created_at))):
        review = None if g.reviewed_at is None else g.reviewed_at - g.created_at
        uses.append({
            "grant_id": str(g.id), "purpose": g.purpose, "used_at": optional_ts(g.created_at),
            "reviewed_at": optional_ts(g.reviewed_at),
            "review_seconds": None if review is None else _secs(review),
            "review_overdue": bool(g.review_overdue_at(now)),
            "reviewed_late": review is not None and review > REVIEW_OVERDUE,
        })  # fmt: skip
    overdue = sum(u["review_overdue"] for u in uses)
    return {"uses": uses, "count": len(uses), "review_overdue": overdue}


def _deadline(req: ErasureRequest, now: datetime) -> str:
    """``met`` or ``missed`` (completed by its due time or after, as the receipt's ``on_time``
    says), ``deferred`` (a named legal hold blocks part of it), ``overdue`` (open past due) or
    ``open``."""
    if req.status == ErasureStatus.complete.value and req.completed_at is not None:
        return "met" if req.completed_at <= req.due_at else "missed"
    if req.status == ErasureStatus.deferred.value:
        return "deferred"
    return "overdue" if now > req.due_at else "open"


def _erasure(
    session: Session, scope: Actor, start: datetime, end: datetime, now: datetime
) -> dict[str, Any]:
    query = select(ErasureRequest).where(_in(ErasureRequest.created_at, start, end))
    rows = session.exec(authz.visible(query, scope).order_by(col(ErasureRequest.created_at))).all()
    retired = dict(
        session.exec(
            select(ErasureItem.request_id, sa.func.max(ErasureItem.kek_retired_at))
            .where(col(ErasureItem.request_id).in_([r.id for r in rows]))
            .group_by(col(ErasureItem.request_id))
        ).all()
    ) if rows else {}  # fmt: skip
    items = []
    for r in rows:
        kek = retired.get(r.id)
        items.append({
            "request_id": str(r.id), "status": r.status, "received_at": optional_ts(r.created_at),
            "due_at": optional_ts(r.due_at), "completed_at": optional_ts(r.completed_at),
            "deadline": _deadline(r, now),
            "kek_retired_at": optional_ts(kek),
        })  # fmt: skip
    return {
        "requests": items,
        "by_deadline": dict(sorted(Counter(i["deadline"] for i in items).items())),
    }


def _reason_kind(reason: str | None) -> str:
    # Erasure disposals name their request ("erasure <id>"): counted together, as "erasure".
    text = reason or "unspecified"
    return "erasure" if text.startswith("erasure ") else text


def _disposals(session: Session, scope: Actor, start: datetime, end: datetime) -> dict[str, int]:
    query = (
        select(Recording.disposal_reason, sa.func.count())
        .where(_in(Recording.disposed_at, start, end))
        .group_by(col(Recording.disposal_reason))
    )
    kinds: Counter[str] = Counter()
    for reason, n in session.exec(authz.visible(query, scope)).all():
        kinds[_reason_kind(reason)] += int(n)
    return dict(sorted(kinds.items()))


def _count(session: Session, query: Any, scope: Actor) -> int:
    """Rows of ``query`` (an entity's column first) that the report's scope may see."""
    inner = authz.visible(query, scope).subquery()
    return int(session.exec(select(sa.func.count()).select_from(inner)).one())


def _holds(session: Session, scope: Actor, start: datetime, end: datetime) -> dict[str, int]:
    def count(*where: Any) -> int:
        return _count(session, select(LegalHold.id).where(*where), scope)

    released = col(LegalHold.released_at)
    return {
        "placed": count(_in(LegalHold.created_at, start, end)),
        "released": count(_in(LegalHold.released_at, start, end)),
        "open_at_end": count(
            col(LegalHold.created_at) < end, sa.or_(released.is_(None), released >= end)
        ),
    }


def _redactions(session: Session, scope: Actor, start: datetime, end: datetime) -> dict[str, Any]:
    query = (
        select(Redaction.status, sa.func.count())
        .where(_in(Redaction.created_at, start, end))
        .group_by(col(Redaction.status))
    )
    statuses = dict(session.exec(authz.visible(query, scope)).all())
    derivatives = select(Recording.id).where(
        col(Recording.parent_id).is_not(None), _in(Recording.ingested_at, start, end)
    )
    derived = _count(session, derivatives, scope)
    return {"by_status": {k: int(v) for k, v in sorted(statuses.items())},
            "derivatives_stored": int(derived)}  # fmt: skip


def _alarms(session: Session, scope: Actor, start: datetime, end: datetime) -> dict[str, Any]:
    query = _events(scope, AuditAction.integrity_alarm, start, end)
    sources: Counter[str] = Counter()
    for ev in _each(session, query):
        sources[str(json.loads(ev.canonical)["details"].get("source", "unknown"))] += 1
    return {"count": sum(sources.values()), "by_source": dict(sorted(sources.items()))}


def _audit_log(session: Session, scope: Actor, end: datetime, public_key: bytes) -> dict[str, Any]:
    """The log's verification under the trusted key, and the signed tree head that covers the
    period's last event in scope (null when no head covers it yet: run ``audit checkpoint``)."""
    result = logcheck.verify_all(session, public_key=public_key)
    last = session.exec(
        authz.visible(select(AuditEvent).where(col(AuditEvent.ts) < end), scope)
        .order_by(col(AuditEvent.seq).desc())
        .limit(1)
    ).first()
    head = None
    if last is not None and last.leaf_index is not None:
        head = session.exec(
            select(AuditTreeHead)
            .where(
                col(AuditTreeHead.tree_size) > last.leaf_index,
                col(AuditTreeHead.signature).is_not(None),
            )
            .order_by(col(AuditTreeHead.tree_size))
            .limit(1)
        ).first()
    return {
        "verified": result.ok,
        "events_checked": result.events.checked,
        "tree_size": result.events.tree_size,
        "heads_checked": result.heads_checked,
        "first_bad_seq": result.first_bad_seq,
        "reason": result.reason,
        "last_event": None if last is None else {"seq": last.seq, "leaf_index": last.leaf_index},
        "covering_tree_head": None if head is None else {
            "id": head.id, "tree_size": head.tree_size, "root_hash": head.root_hash,
            "statement": head.statement, "signature": head.signature,
        },
    }  # fmt: skip


# --- the document ------------------------------------------------------------------------------


def compute(
    session: Session,
    *,
    actor: Actor,
    tenant: str | None,
    start: datetime,
    end: datetime,
    now: datetime,
    public_key: bytes,
    max_key_age: timedelta,
) -> dict[str, Any]:
    """The report's body (unsigned). ``public_key`` is the trusted audit key, fetched before the
    caller's transaction opened (:func:`vault.audit.signed_rows.trusted_public_key`)."""
    check_period(start, end)
    scope = report_scope(session, actor=actor, tenant=tenant, now=now)
    return {
        "generated_at": format_ts(now),
        "period": {"from": format_ts(start), "to": format_ts(end)},
        "scope": {"tenant": None if scope.all_tenants else str(next(iter(scope.tenant_ids))),
                  "all_tenants": scope.all_tenants},
        "reads": _reads(session, scope, start, end),
        "access_requests": _access(session, scope, start, end),
        "break_glass": _break_glass(session, scope, start, end, now),
        "erasure": _erasure(session, scope, start, end, now),
        "disposals": _disposals(session, scope, start, end),
        "holds": _holds(session, scope, start, end),
        "redactions": _redactions(session, scope, start, end),
        "integrity_alarms": _alarms(session, scope, start, end),
        "audit_log": _audit_log(session, scope, end, public_key),
        "recertification": recertification.section(session, scope, now, max_key_age),
        "disclosures": disclosures.evidence_section(session, scope, start, end, now),
    }  # fmt: skip


def sign(signer: Any, body: dict[str, Any]) -> dict[str, str]:
    """The report file: the exact signed statement and its signature (call with no transaction
    open: it asks the key provider)."""
    doc = signing.sign_document(signer, doc_type=DOC_TYPE, version=VERSION, body=body)
    return {"statement": doc.canonical, "signature": doc.signature}


def verify(public_key: bytes, text: str) -> dict[str, Any]:
    """The verified report from a report file's text; ``SignedDocumentError`` when the file is
    not one, does not verify under ``public_key``, or is another type or version."""
    try:
        wrapper = json.loads(text)
    except ValueError:
        raise signing.SignedDocumentError("not a JSON report file", doc_type=DOC_TYPE) from None
    if (
        not isinstance(wrapper, dict)
        or set(wrapper) != {"statement", "signature"}
        or not all(isinstance(v, str) for v in wrapper.values())
    ):
        raise signing.SignedDocumentError(
            "a report file is {statement, signature}", doc_type=DOC_TYPE
        )
    return signing.verify_document(
        public_key, wrapper["statement"], wrapper["signature"], doc_type=DOC_TYPE,
        versions=(VERSION,),
    )  # fmt: skip


def statement_sha256(signed: dict[str, str]) -> str:
    return signing.SignedDocument(signed["statement"], signed["signature"]).sha256
