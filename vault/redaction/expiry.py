"""Redact on expiry: a de-identified derivative before the original is disposed of.

When the last purpose of a recording expires *by retention* and a purpose that expired that way
says ``on_expiry = "redact"``, the dispose job first queues and runs a redaction with the
purpose's de-identifying profile, then disposes of the original (disposal waits while the
redaction is queued or running). Never for erasure, a purpose ended early, a held recording or a
derivative (a derivative is disposed of on expiry, never redacted again). The retention deadline
wins: a failed redaction leaves no derivative, is audited, and the original goes as scheduled.
"""

from __future__ import annotations

import json
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import col, select

from vault import audit
from vault.context import Context
from vault.models import (
    Recording,
    RecordingPurpose,
    RecordingStatus,
    Redaction,
    RedactionStatus,
    RedactionTrigger,
    under_erasure,
)
from vault.redaction import service
from vault.retention import holds
from vault.retention.disposal import due_condition
from vault.tags import AuditAction

__all__ = ["enqueue_due", "redact_due"]

ACTOR = "system:dispose"


def enqueue_due(ctx: Context, *, now: datetime, limit: int = 100) -> int:
    """Queue an on-expiry redaction for every due recording that needs one; how many."""
    has_one = sa.exists().where(
        Redaction.recording_id == Recording.id,
        Redaction.trigger == RedactionTrigger.expiry.value,
    )
    queued = 0
    with ctx.db.transaction() as session:
        rows = session.exec(
            select(Recording)
            .where(
                Recording.status == RecordingStatus.stored,
                col(Recording.parent_id).is_(None),
                due_condition(now),
                ~holds.held_condition(Recording.id),
                ~under_erasure(Recording.id),
                ~has_one,
            )
            .order_by(col(Recording.updated_at), col(Recording.id))
            .limit(limit)
        ).all()
        for rec in rows:
            expired = session.exec(
                select(RecordingPurpose).where(
                    RecordingPurpose.recording_id == rec.id,
                    col(RecordingPurpose.ended_at).is_(None),  # by retention, not ended early
                )
            ).all()
            redact = sorted(
                p.purpose for p in expired
                if (rules := ctx.policy.purposes.get(p.purpose)) is not None
                and rules.on_expiry == "redact"
            )  # fmt: skip
            if not redact:
                continue
            # One derivative per recording: the first such purpose's profile (all are
            # de-identifying, the loader made sure).
            profile = ctx.policy.purposes[redact[0]].redaction_profile
            assert profile is not None
            red = Redaction(
                recording_id=rec.id, tenant_id=rec.tenant_id, profile=profile,
                purposes=json.dumps(redact), trigger=RedactionTrigger.expiry.value,
                status=RedactionStatus.queued.value, created_at=now,
            )  # fmt: skip
            session.add(red)
            session.flush()
            audit.record(
                session, action=AuditAction.redaction_request, actor=ACTOR, now=now,
                tenant_id=rec.tenant_id, target=str(rec.id),
                details={"redaction_id": str(red.id), "profile": profile, "purposes": redact,
                         "trigger": RedactionTrigger.expiry.value},
            )  # fmt: skip
            queued += 1
    return queued


def redact_due(ctx: Context, *, now: datetime, limit: int = 100) -> tuple[int, int]:
    """Queue and run the on-expiry redactions now due; (verified, failed)."""
    enqueue_due(ctx, now=now, limit=limit)
    return service.run_queue(ctx, now=now, trigger=RedactionTrigger.expiry, limit=limit)
