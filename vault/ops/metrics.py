"""``/metrics``' domain families: a prometheus-client Collector that reads the database at
scrape time (:mod:`vault.ops.measures`), so every replica reports the same values.

Each group of queries runs in its own read-only session under a statement timeout: one that
fails (or is too slow) loses only its own families for that scrape. It is logged (the group and
the error's type, never its text: SQL errors quote parameters) and counted in
``callvault_metrics_scrape_errors_total{group}``, a per-process counter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlmodel import Session

from vault.context import Context
from vault.db import is_postgres
from vault.ops.measures import GROUPS, Sample
from vault.policy import Policy

__all__ = ["FAMILIES", "DomainCollector", "install"]

log = logging.getLogger(__name__)

STATEMENT_TIMEOUT_MS = 5000
Group = Callable[..., Iterable[Sample]]

# name: (type, help, label names). Counters keep their ``_total`` here, as exposed. A job is
# labelled ``job_name``: Prometheus puts its own ``job`` label on every scraped series.
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "callvault_recordings": ("gauge", "Recordings by tenant and status.", ("tenant", "status")),
    "callvault_recording_bytes": (
        "gauge", "Plaintext bytes of recordings by tenant and status.", ("tenant", "status")),
    "callvault_ingested_recordings_total": (
        "counter", "Original recordings ever stored, by tenant.", ("tenant",)),
    "callvault_ingest_bytes_total": (
        "counter", "Plaintext bytes of original recordings ever stored, by tenant.", ("tenant",)),
    "callvault_playback_bytes_total": (
        "counter", "Plaintext bytes of audited reads (rolled up by the metrics-rollup job).", ()),
    "callvault_playback_reads_total": (
        "counter", "Audited reads (rolled up by the metrics-rollup job).", ()),
    "callvault_grants_active": ("gauge", "Grants open now, by kind.", ("kind",)),
    "callvault_access_requests_pending": ("gauge", "Access requests awaiting review.", ()),
    "callvault_break_glass_unreviewed": ("gauge", "Break-glass grants owing an after-review.", ()),
    "callvault_break_glass_review_overdue": (
        "gauge", "Break-glass after-reviews owed for longer than 24 h.", ()),
    "callvault_disclosure_review_open": (
        "gauge", "Emergency disclosures owing an after-review.", ()),
    "callvault_disclosure_review_overdue": (
        "gauge", "Emergency disclosure after-reviews owed for longer than 24 h.", ()),
    "callvault_disclosure_notification_reviews_due": (
        "gauge", "Barred customer notifications of disclosures past their review date.", ()),
    "callvault_erasure_requests_open": ("gauge", "Erasure requests not complete.", ("status",)),
    "callvault_erasure_requests_overdue": (
        "gauge", "Erasure requests past due_at (deferred ones excepted).", ()),
    "callvault_erasure_oldest_due_timestamp_seconds": (
        "gauge", "due_at of the oldest open erasure request (absent when none).", ()),
    "callvault_policy_erasure_deadline_seconds": ("gauge", "Policy erasure_deadline_days.", ()),
    "callvault_disposal_due_recordings": (
        "gauge", "Recordings with no active purpose and no hold, not yet disposed.", ()),
    "callvault_disposal_lag_seconds": (
        "gauge", "How long the oldest of those has been due (0 when none).", ()),
    "callvault_job_runs_total": ("counter", "Job runs.", ("job_name",)),
    "callvault_job_failures_total": ("counter", "Job runs that raised.", ("job_name",)),
    "callvault_job_consecutive_failures": (
        "gauge", "Failed runs since the job last succeeded.", ("job_name",)),
    "callvault_job_last_duration_seconds": ("gauge", "Duration of the last run.", ("job_name",)),
    "callvault_job_last_run_timestamp_seconds": ("gauge", "End of the last run.", ("job_name",)),
    "callvault_job_last_success_timestamp_seconds": (
        "gauge", "End of the last successful run.", ("job_name",)),
    "callvault_integrity_failed_recordings": (
        "gauge", "Recordings in integrity_failed.", ()),
    "callvault_integrity_alarms_total": ("counter", "integrity.alarm audit events.", ()),
    "callvault_kek_live_versions": ("gauge", "KEK versions not retired.", ()),
    "callvault_kek_newest_version_age_seconds": (
        "gauge", "Age of the newest live KEK version.", ()),
    "callvault_policy_kek_rotation_seconds": ("gauge", "Policy kek_rotation_days.", ()),
    "callvault_audit_events": ("gauge", "Audit events in the log.", ()),
    "callvault_audit_tree_size": ("gauge", "Audit events under the newest signed head.", ()),
    "callvault_audit_unsequenced_events": (
        "gauge", "Audit events not yet under a signed head.", ()),
    "callvault_audit_unsequenced_oldest_seconds": (
        "gauge", "Age of the oldest of those (0 when none).", ()),
    "callvault_audit_checkpoint_age_seconds": (
        "gauge", "Age of the newest signed checkpoint (absent before the first).", ()),
}  # fmt: skip


def _family(name: str) -> Metric:
    kind, help_, labels = FAMILIES[name]
    cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
    return cls(name, help_, labels=list(labels))


class DomainCollector(Collector):
    def __init__(
        self, ctx: Context, *, errors: Counter, groups: dict[str, Group] | None = None
    ) -> None:
        self.ctx, self.errors = ctx, errors
        self.groups = GROUPS if groups is None else groups

    def describe(self) -> Iterable[Metric]:
        return []  # the families depend on the data; no scrape at registration

    def collect(self) -> Iterator[Metric]:
        now = self.ctx.now()
        families: dict[str, Metric] = {}
        for group, read in self.groups.items():
            try:
                samples = self._read(read, now=now, policy=self.ctx.policy)
            except Exception as exc:
                log.warning("metrics group %s failed: %s", group, type(exc).__name__)
                self.errors.labels(group).inc()
                continue
            for name, labels, value in samples:
                family = families.get(name) or families.setdefault(name, _family(name))
                family.add_metric([labels[k] for k in FAMILIES[name][2]], float(value))
        yield from families.values()
        # Last, so that this scrape's own failures are in it.
        yield from self.errors.collect()

    def _read(self, read: Group, *, now: datetime, policy: Policy) -> list[Sample]:
        with self.ctx.db.reading() as session:
            _limit(session)
            return list(read(session, now=now, policy=policy))


def _limit(session: Session) -> None:
    if is_postgres(session):
        # SET LOCAL: for this read transaction only, never the pooled connection's default.
        session.exec(sa.text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))


def install(registry: CollectorRegistry, ctx: Context, **kw: Any) -> DomainCollector:
    # Not registered on its own: the collector yields it after the groups it counts.
    errors = Counter(
        "callvault_metrics_scrape_errors_total", "Metric groups that failed a scrape (this "
        "process).", ["group"], registry=None,
    )  # fmt: skip
    collector = DomainCollector(ctx, errors=errors, **kw)
    registry.register(collector)
    return collector
