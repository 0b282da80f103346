"""The customer's notification of a disclosure, or the legal bar on it; the job that flags bars
whose review date has come; and what subject access and the evidence report show.

A notification is ``notified_at`` with its channel. A bar is a legal reference and a review
date: when that date passes, ``review-barred-notifications`` flags the disclosure once per
review date (audited ``disclosure.notification.review_due``; ``notification_review_due`` in the
register, ``callvault_disclosure_notification_reviews_due`` in /metrics). The privacy office then
notifies, or bars again with a new review date. While barred, a disclosure is absent from
subject-access answers and the evidence report gives only counts for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from vault import audit, authz
from vault.audit.chain import format_ts, optional_ts
from vault.authz import Actor, Permission
from vault.context import Context
from vault.disclosures import register
from vault.errors import InvalidInputError
from vault.leases import claim
from vault.models import Disclosure, DisclosureRecording
from vault.models.disclosures import DisclosureNotification
from vault.tags import AuditAction

__all__ = ["evidence_section", "notify", "review_barred", "subject_access_section"]

BATCH = 100


def notify(
    session: Session, *, actor: Actor, disclosure_id: uuid.UUID, body: DisclosureNotification,
    now: datetime,
) -> Disclosure:  # fmt: skip
    """Record the notification, or its bar (which replaces an earlier bar's review date)."""
    row = register.get(
        session, actor=actor, disclosure_id=disclosure_id, now=now,
        permission=Permission.disclosure_manage, lock=True,
    )  # fmt: skip
    if body.barred:
        if body.legal_reference is None or body.review_at is None:
            raise InvalidInputError("a barred notification needs legal_reference and review_at")
        if body.notified_at is not None or body.channel is not None:
            raise InvalidInputError("a notification is either given or barred, not both")
        if row.notified_at is not None:
            raise InvalidInputError("the customer was already notified")
        row.notification_barred, row.barred_reference = True, body.legal_reference
        row.barred_review_at, row.barred_flagged_at = body.review_at, None
        action = AuditAction.disclosure_notification_barred
        details = {"legal_reference": body.legal_reference,
                   "review_at": format_ts(body.review_at)}  # fmt: skip
    else:
        if body.notified_at is None or body.channel is None:
            raise InvalidInputError("a notification needs notified_at and channel")
        if body.legal_reference is not None or body.review_at is not None:
            raise InvalidInputError("legal_reference and review_at belong to a barred one")
        if body.notified_at > now:
            raise InvalidInputError("notified_at is in the future")
        row.notified_at, row.notification_channel = body.notified_at, body.channel
        row.notification_barred, row.barred_flagged_at = False, None
        action = AuditAction.disclosure_notify
        details = {"notified_at": format_ts(body.notified_at), "channel": body.channel,
                   "was_barred": row.barred_reference is not None}  # fmt: skip
    row.updated_at = now
    session.add(row)
    session.flush()
    audit.record(
        session, action=action, actor=actor.audit_name, now=now, tenant_id=row.tenant_id,
        target=str(row.id), details=details,
    )  # fmt: skip
    return row


def _due(session: Session, now: datetime) -> list[Disclosure]:
    query = (
        select(Disclosure)
        # Barring again clears the flag: flagged once per review date.
        .where(Disclosure.notification_review_due(now), col(Disclosure.barred_flagged_at).is_(None))
        .order_by(col(Disclosure.barred_review_at))
        .limit(BATCH)
    )
    return list(session.exec(claim(session, query)))


def review_barred(ctx: Context, *, now: datetime) -> int:
    """Flag (once per review date, audited) every barred notification whose review date has
    passed; idempotent, claims its rows with SKIP LOCKED."""
    flagged = 0
    while True:
        with ctx.db.transaction() as session:
            rows = _due(session, now)
            for row in rows:
                row.barred_flagged_at = now
                session.add(row)
                audit.record(
                    session, action=AuditAction.disclosure_notification_review_due,
                    actor="system:review-barred-notifications", now=now,
                    tenant_id=row.tenant_id, target=str(row.id),
                    details={"legal_reference": row.barred_reference,
                             "review_at": format_ts(row.barred_review_at)},  # type: ignore[arg-type]
                )  # fmt: skip
            flagged += len(rows)
        if len(rows) < BATCH:
            return flagged


# --- what other answers show -------------------------------------------------------------------


def subject_access_section(
    session: Session, recording_ids: Sequence[uuid.UUID]
) -> list[dict[str, Any]]:
    """Disclosures covering any of ``recording_ids``, barred ones left out."""
    if not recording_ids:
        return []
    covering = select(DisclosureRecording.disclosure_id).where(
        col(DisclosureRecording.recording_id).in_(list(recording_ids))
    )
    rows = session.exec(
        select(Disclosure)
        .where(col(Disclosure.id).in_(covering), col(Disclosure.notification_barred).is_(False))
        .order_by(col(Disclosure.created_at))
    ).all()
    wanted = set(recording_ids)
    return [
        {"disclosure_id": str(r.id), "authority": r.authority,
         "legal_reference": r.legal_reference, "status": r.status,
         "received_at": format_ts(r.received_at), "emergency": r.emergency,
         "disclosed_at": optional_ts(r.disclosed_at),
         "notified_at": optional_ts(r.notified_at),
         "recording_ids": [str(i) for i in register.recording_ids(session, r.id) if i in wanted]}
        for r in rows
    ]  # fmt: skip


def evidence_section(
    session: Session, scope: Actor, start: datetime, end: datetime, now: datetime
) -> dict[str, Any]:
    """The evidence report's section: disclosures received in the period (through the report's
    scope); barred ones counted, not listed."""
    query = select(Disclosure).where(
        col(Disclosure.received_at) >= start, col(Disclosure.received_at) < end
    )
    rows = session.exec(authz.visible(query, scope).order_by(col(Disclosure.received_at))).all()
    listed = [r for r in rows if not r.notification_barred]
    return {
        "count": len(rows),
        "barred": len(rows) - len(listed),
        "objected": sum(r.objected_at is not None for r in rows),
        "emergency": sum(r.emergency for r in rows),
        "review_overdue": sum(bool(r.review_overdue_at(now)) for r in rows),
        "notification_reviews_due": sum(bool(r.notification_review_due(now)) for r in rows),
        "disclosures": [
            {"disclosure_id": str(r.id), "status": r.status, "authority": r.authority,
             "legal_reference": r.legal_reference, "received_at": format_ts(r.received_at),
             "emergency": r.emergency,
             "disclosed_at": optional_ts(r.disclosed_at),
             "reviewed_at": optional_ts(r.reviewed_at),
             "review_overdue": bool(r.review_overdue_at(now)),
             "notified_at": optional_ts(r.notified_at)}
            for r in listed
        ],
    }  # fmt: skip
