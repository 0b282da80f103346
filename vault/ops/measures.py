"""The domain measurements behind ``/metrics``: one function per group, each a few aggregate
queries over indexed columns, read at scrape time so that every replica reports the same.

Each function returns ``(family name, labels, value)`` samples; :mod:`vault.ops.metrics` owns
the families' types and help, and runs each group on its own so that one failing query loses
only its group. The rules ("grant active", "review overdue", "due for disposal", "held") are the
owners' SQL expressions, never restated here.

Tenants are labelled by *name*: operator-chosen, validated (``[A-Za-z0-9._-]``, at most 64) and
meaningful on a dashboard, where an id is not; neither a call id nor an e-mail is ever a label.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from vault.audit import stats as audit_log_stats
from vault.kek_versions import newest_version
from vault.models import (
    AccessRequest,
    AccessRequestStatus,
    AuditEvent,
    Disclosure,
    ErasureRequest,
    ErasureStatus,
    Grant,
    GrantKind,
    JobStatus,
    KekVersion,
    MetricRollup,
    Recording,
    RecordingPurpose,
    RecordingStatus,
    Tenant,
)
from vault.ops.rollup import PLAYBACK
from vault.policy import Policy
from vault.retention.disposal import due_condition
from vault.retention.holds import held_condition
from vault.tags import AuditAction

__all__ = ["GROUPS", "Sample"]

Sample = tuple[str, dict[str, str], float]
S = RecordingStatus
NOT_INGESTED = (S.pending.value, S.failed.value)
# Still to be disposed of: rows whose purposes all ended, not yet past ``disposing``.
UNDISPOSED = (S.stored.value, S.integrity_failed.value, S.disposing.value)
# An erasure deferred by a named legal hold has met its deadline the way DESIGN allows.
OPEN_ERASURE = (ErasureStatus.pending, ErasureStatus.shredding, ErasureStatus.awaiting_kek)


def _ts(value: datetime) -> float:
    return value.timestamp()


def recordings(session: Session, *, now: datetime, policy: Policy) -> Iterator[Sample]:
    """Recordings and plaintext bytes by tenant and status; ingested originals as counters
    (monotonic: only ``pending``/``failed`` rows are ever deleted, and a disposed recording
    keeps its size in its tombstone)."""
    rows = session.exec(
        select(Tenant.name, Recording.status, col(Recording.parent_id).is_(None),
               sa.func.count(), sa.func.coalesce(sa.func.sum(Recording.size), 0))
        .join(Tenant, col(Tenant.id) == Recording.tenant_id)
        .group_by(Tenant.name, Recording.status, col(Recording.parent_id).is_(None))
    ).all()  # fmt: skip
    by_status: dict[tuple[str, str], list[float]] = {}
    ingested: dict[str, list[float]] = {}
    for tenant, status, original, count, size in rows:
        acc = by_status.setdefault((tenant, status), [0, 0])
        acc[0], acc[1] = acc[0] + count, acc[1] + size
        if original and status not in NOT_INGESTED:
            tot = ingested.setdefault(tenant, [0, 0])
            tot[0], tot[1] = tot[0] + count, tot[1] + size
    for (tenant, status), (count, size) in sorted(by_status.items()):
        yield "callvault_recordings", {"tenant": tenant, "status": status}, count
        yield "callvault_recording_bytes", {"tenant": tenant, "status": status}, size
    for tenant, (count, size) in sorted(ingested.items()):
        yield "callvault_ingested_recordings_total", {"tenant": tenant}, count
        yield "callvault_ingest_bytes_total", {"tenant": tenant}, size


def playback(session: Session, *, now: datetime, policy: Policy) -> Iterator[Sample]:
    rollup = session.get(MetricRollup, PLAYBACK)
    yield "callvault_playback_bytes_total", {}, rollup.value if rollup else 0
    yield "callvault_playback_reads_total", {}, rollup.events if rollup else 0


def access(session: Session, *, now: datetime, policy: Policy) -> Iterator[Sample]:
    kinds = dict(
        session.exec(
            select(Grant.kind, sa.func.count()).where(Grant.active_at(now)).group_by(Grant.kind)
        ).all()
    )
    for kind in GrantKind:
        yield "callvault_grants_active", {"kind": kind.value}, kinds.get(kind.value, 0)
    pending = session.exec(
        select(sa.func.count()).where(
            AccessRequest.status == AccessRequestStatus.pending.value,
            ~AccessRequest.lapsed_at(now),
        )
    ).one()
    yield "callvault_access_requests_pending", {}, pending
    unreviewed, overdue = session.exec(
        select(sa.func.count(), sa.func.count().filter(Grant.review_overdue_at(now)))
        .where(Grant.review_open())
    ).one()  # fmt: skip
    yield "callvault_break_glass_unreviewed", {}, unreviewed
    yield "callvault_break_glass_review_overdue", {}, overdue


def disclosures(session: Session, *, now: datetime, policy: Policy) -> Iterator[Sample]:
    """Emergency disclosures owing an after-review (and those past 24 h, the break-glass rule),
    and barred customer notifications whose review date has come."""
    owed, overdue, barred_due = session.exec(
        select(
            sa.func.count().filter(Disclosure.review_open()),
            sa.func.count().filter(Disclosure.review_overdue_at(now)),
            sa.func.count().filter(Disclosure.notification_review_due(now)),
        ).select_from(Disclosure)
    ).one()  # fmt: skip
    yield "callvault_disclosure_review_open", {}, owed
    yield "callvault_disclosure_review_overdue", {}, overdue
    yield "callvault_disclosure_notification_reviews_due", {}, barred_due


def erasure(session: Session, *, now: datetime, policy: Policy) -> Iterator[Sample]:
    counts = dict(
        session.exec(
            select(ErasureRequest.status, sa.func.count())
            .where(ErasureRequest.status != ErasureStatus.complete.value)
            .group_by(ErasureRequest.status)
        ).all()
    )
    for status in (*OPEN_ERASURE, ErasureStatus.deferred):
        yield "callvault_erasure_requests_open", {"status": status.value}, counts.get(status, 0)
    open_ = col(ErasureRequest.status).in_([s.value for s in OPEN_ERASURE])
    overdue, oldest = session.exec(
        select(sa.func.count().filter(col(ErasureRequest.due_at) <= now),
               sa.func.min(ErasureRequest.due_at)).where(open_)
    ).one()  # fmt: skip
    yield "callvault_erasure_requests_overdue", {}, overdue
    if oldest is not None:  # no sample at all when nothing is open: no deadline to approach
        yield "callvault_erasure_oldest_due_timestamp_seconds", {}, _ts(_aware(oldest))
    yield "callvault_policy_erasure_deadline_seconds", {}, policy.erasure_deadline.total_seconds()


def disposal(session: Session, *, now: datetime, policy: Policy) -> Iterator[Sample]:
    """Recordings due (no purpose active), not held, not yet disposed; and how long the oldest
    has been due: a purpose stopped being active at its end or its expiry, whichever came first."""
    # An alias: the owner's "due" condition correlates a subquery over RecordingPurpose itself.
    p = aliased(RecordingPurpose)
    stopped = sa.case(
        (sa.and_(col(p.ended_at).is_not(None), col(p.ended_at) < p.expires_at), p.ended_at),
        else_=p.expires_at,
    )
    due = (
        select(p.recording_id, sa.func.max(stopped).label("since"))
        .join(Recording, col(Recording.id) == p.recording_id)
        .where(col(Recording.status).in_(UNDISPOSED), due_condition(now),
               ~held_condition(Recording.id))
        .group_by(p.recording_id)
        .subquery()
    )  # fmt: skip
    count, since = session.exec(select(sa.func.count(), sa.func.min(due.c.since))).one()
    yield "callvault_disposal_due_recordings", {}, count
    lag = (now - _aware(since)).total_seconds() if since is not None else 0.0
    yield "callvault_disposal_lag_seconds", {}, max(0.0, lag)


def jobs(session: Session, *, now: datetime, policy: Policy) -> Iterator[Sample]:
    for row in session.exec(select(JobStatus).order_by(col(JobStatus.name))).all():
        job = {"job_name": row.name}
        yield "callvault_job_runs_total", job, row.runs
        yield "callvault_job_failures_total", job, row.failures
        yield "callvault_job_consecutive_failures", job, row.consecutive_failures
        yield "callvault_job_last_duration_seconds", job, row.last_duration_seconds
        if row.last_finished_at is not None:
            yield "callvault_job_last_run_timestamp_seconds", job, _ts(row.last_finished_at)
        if row.last_success_at is not None:
            yield "callvault_job_last_success_timestamp_seconds", job, _ts(row.last_success_at)


def integrity(session: Session, *, now: datetime, policy: Policy) -> Iterator[Sample]:
    failed = session.exec(
        select(sa.func.count()).where(Recording.status == S.integrity_failed.value)
    ).one()
    yield "callvault_integrity_failed_recordings", {}, failed
    alarms = session.exec(
        select(sa.func.count()).where(AuditEvent.action == AuditAction.integrity_alarm.value)
    ).one()
    yield "callvault_integrity_alarms_total", {}, alarms


def kek(session: Session, *, now: datetime, policy: Policy) -> Iterator[Sample]:
    newest = newest_version(session)
    live = session.exec(select(sa.func.count()).where(col(KekVersion.retired_at).is_(None))).one()
    yield "callvault_kek_live_versions", {}, live
    if newest is not None:
        row = session.get(KekVersion, newest)
        if row is not None:
            age = max(0.0, (now - row.created_at).total_seconds())
            yield "callvault_kek_newest_version_age_seconds", {}, age
    yield "callvault_policy_kek_rotation_seconds", {}, policy.kek_rotation.total_seconds()


def audit(session: Session, *, now: datetime, policy: Policy) -> Iterator[Sample]:
    found = audit_log_stats(session, now=now)  # the Merkle log's own figures
    yield "callvault_audit_events", {}, found.events
    yield "callvault_audit_tree_size", {}, found.tree_size
    yield "callvault_audit_unsequenced_events", {}, found.unsequenced
    oldest = found.oldest_unsequenced_age_seconds
    yield "callvault_audit_unsequenced_oldest_seconds", {}, 0.0 if oldest is None else oldest
    if found.last_head_age_seconds is not None:
        yield "callvault_audit_checkpoint_age_seconds", {}, found.last_head_age_seconds


def _aware(value: datetime | str) -> datetime:
    """Aggregates (``min``/``max``) over a UTC column may come back naive, or as text, on
    SQLite (they lose the column's type); the stored value is UTC either way."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


GROUPS = {
    "recordings": recordings, "playback": playback, "access": access, "erasure": erasure,
    "disposal": disposal, "jobs": jobs, "integrity": integrity, "kek": kek, "audit": audit,
    "disclosures": disclosures,
}  # fmt: skip
