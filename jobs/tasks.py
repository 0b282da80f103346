"""The jobs: one thin function per job name, each a call into the domain services.

Every job takes ``(ctx, now, **opts)`` and returns a :class:`JobResult`: a one-line summary and
its counts as numbers. Jobs hold no domain rule: idempotence and row claiming (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) live in the services they call, so any
number of workers may run them at once.

:func:`execute` is the one job runner (the scheduler, ``jobs run`` and ``run_all`` all go through
it): it times the run, records it in ``job_status`` (what ``/metrics`` reports, whichever
replica is scraped) and logs one structured line per run::

    {"msg": "job dispose: ok", "job": "dispose", "outcome": "ok", "duration_ms": 12.3,
     "counts": {"disposed": 2, "deferred": 0, ...}, ...}
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from vault import audit, exports, kek
from vault.access import requests as access
from vault.audit import heads, tree
from vault.config import Settings
from vault.console import sessions as console_sessions
from vault.context import Context
from vault.disclosures import notification as disclosure_notices
from vault.identity import principals
from vault.leases import process_holder
from vault.ops import job_runs
from vault.ops import rollup as metrics_rollup
from vault.recordings import scrub as integrity
from vault.recordings import sweep
from vault.redaction import expiry as redaction_expiry
from vault.redaction import service as redaction
from vault.retention import disposal as retention
from vault.retention import erasure, expiry
from vault.subprocessors import handoffs
from vault.tenants import offboarding

__all__ = [
    "JOBS", "PERIODS", "RUN_ALL_ORDER", "JobFn", "JobOutcome", "JobResult", "execute", "run",
    "run_all",
]  # fmt: skip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobResult:
    summary: str
    counts: Mapping[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.summary


JobFn = Callable[..., JobResult | str]


def _result(summary: str, **counts: int) -> JobResult:
    return JobResult(summary, {k: int(v) for k, v in counts.items()})


def expire_purposes(ctx: Context, now: datetime, **_: Any) -> JobResult:
    expired = expiry.expire_purposes(ctx, now=now)
    return _result(f"{expired} purpose(s) expired", expired=expired)


def dispose(ctx: Context, now: datetime, **_: Any) -> JobResult:
    # On-expiry redactions first: disposal of their originals waits for them.
    made, failed = redaction_expiry.redact_due(ctx, now=now)
    result = retention.dispose(ctx, now=now)
    return _result(
        f"{result.disposed} recording(s) disposed, {result.deferred} deferred by legal holds; "
        f"{made} de-identified derivative(s) made on expiry, {failed} failed",
        disposed=result.disposed, deferred=result.deferred, redacted=made, redact_failed=failed,
    )  # fmt: skip


def redact(ctx: Context, now: datetime, **_: Any) -> JobResult:
    made, failed = redaction.run_queue(ctx, now=now, limit=ctx.settings.redaction_batch)
    return _result(f"{made} redaction(s) verified, {failed} failed", verified=made, failed=failed)


def process_erasures(ctx: Context, now: datetime, **_: Any) -> JobResult:
    # Offboarding opens erasure requests for its tenants' unheld recordings, and settles
    # (receipts, the tenant's key) once they are complete: the same run carries both.
    opened = offboarding.open_erasures(ctx, now=now)
    completed = erasure.process(ctx, now=now)
    offboarded = offboarding.settle(ctx, now=now)
    return _result(
        f"{completed} erasure request(s) completed; offboarding opened {opened}, "
        f"{offboarded} tenant(s) offboarded",
        completed=completed, offboarding_opened=opened, offboarded=offboarded,
    )  # fmt: skip


def expire_grants(ctx: Context, now: datetime, **_: Any) -> JobResult:
    with ctx.db.transaction() as session:
        changed = access.expire(session, now=now)
        # Console sessions nobody came back to are ended (audited), and deleted a day later.
        limits = console_sessions.Limits.of(ctx.settings)
        purged = console_sessions.purge(session, limits=limits, now=now)
    return _result(
        f"{changed} access request(s) and grant(s) expired or flagged; "
        f"{purged} console session(s) purged",
        expired_or_flagged=changed, console_sessions_purged=purged,
    )  # fmt: skip


def sweep_orphans(ctx: Context, now: datetime, **_: Any) -> JobResult:
    older_than = timedelta(seconds=ctx.settings.pending_ingest_timeout_seconds)
    swept = sweep.sweep_orphans(ctx, older_than=older_than, now=now)
    return _result(f"{swept} orphan(s) swept", swept=swept)


def kek_cycle(
    ctx: Context, now: datetime, *, force: bool = False, holder: str | None = None, **_: Any
) -> JobResult:
    result = kek.kek_cycle(ctx, now=now, force=force, holder=holder or process_holder())
    return _result(
        result.summary(), rotated=int(result.rotated_to is not None), adopted=len(result.adopted),
        rewrapped=result.rewrapped, rewrap_failed=result.rewrap_failed,
        retired=len(result.retired), skipped=int(not result.acquired),
    )  # fmt: skip


def audit_sequence(ctx: Context, now: datetime, **_: Any) -> JobResult:
    # SKIP LOCKED: when another worker is sequencing, this run leaves it to that one.
    taken = tree.sequence(ctx.db)
    with ctx.db.reading() as session:
        late = tree.alarm_if_late(
            audit.stats(session, now=now), bound_seconds=ctx.settings.audit_sequence_bound_seconds
        )
    return _result(
        f"{taken} audit event(s) sequenced" + ("; ALARM: events past the bound" if late else ""),
        sequenced=taken, late=int(late),
    )  # fmt: skip


def audit_checkpoint(ctx: Context, now: datetime, **_: Any) -> JobResult:
    # The aggregates of denials counted in this process (the API's, in single-node mode).
    flushed = audit.flush_denials(ctx.db, ctx.denials, now=now)
    head = heads.write_head(ctx, now=now)  # sequences what is committed, then signs
    signed = f"tree head at size {head.tree_size}" if head else "no new leaves"
    return _result(
        f"{signed}; {flushed} denial aggregate(s) written",
        tree_heads=int(head is not None), denial_aggregates=flushed,
    )  # fmt: skip


def scrub(ctx: Context, now: datetime, *, sample: int = 10, **_: Any) -> JobResult:
    result = integrity.scrub(ctx, now=now, sample=sample)
    return _result(
        result.summary(),
        sampled=result.sampled,
        intact=result.ok,
        failed=len(result.failed),
        errors=result.errors,
    )


def roll_up_metrics(ctx: Context, now: datetime, **_: Any) -> JobResult:
    done = metrics_rollup.roll_up_playback(ctx, now=now)
    if done.skipped:
        return _result("skipped: another worker is rolling up", events=0, bytes=0, skipped=1)
    return _result(
        f"{done.events} read event(s), {done.bytes} playback byte(s) rolled up",
        events=done.events, bytes=done.bytes, skipped=0,
    )  # fmt: skip


def clear_revoked_owners(ctx: Context, now: datetime, **_: Any) -> JobResult:
    older_than = timedelta(days=ctx.settings.revoked_owner_retention_days)
    with ctx.db.transaction() as session:
        cleared = principals.clear_revoked_owners(session, older_than=older_than, now=now)
    return _result(f"{cleared} revoked principal(s)' owner e-mail cleared", cleared=cleared)


def purge_exports(ctx: Context, now: datetime, **_: Any) -> JobResult:
    deleted = exports.purge(ctx, now=now)
    return _result(f"{deleted} ended export(s) deleted", deleted=deleted)


def transcription_handoffs(ctx: Context, now: datetime, **_: Any) -> JobResult:
    done = handoffs.run(ctx, now=now)
    return _result(
        f"{done.issued} hand-off(s) issued, {done.failed} failed, {done.cancelled} cancelled; "
        f"{done.transfer_refused} opted-in tenant(s) held back (transfer not authorised); "
        f"{done.transcripts_ended} transcript purpose(s) ended with their parent's; "
        f"{done.tokens_forgotten} unclaimed token(s) forgotten after expiry",
        issued=done.issued, failed=done.failed, cancelled=done.cancelled,
        transfer_refused=done.transfer_refused, transcripts_ended=done.transcripts_ended,
        tokens_forgotten=done.tokens_forgotten,
    )  # fmt: skip


def review_barred_notifications(ctx: Context, now: datetime, **_: Any) -> JobResult:
    flagged = disclosure_notices.review_barred(ctx, now=now)
    return _result(f"{flagged} barred disclosure notification(s) due for review", flagged=flagged)


JOBS: dict[str, JobFn] = {
    "expire-purposes": expire_purposes,
    "dispose": dispose,
    "redact": redact,
    "erasure": process_erasures,
    "expire-grants": expire_grants,
    "sweep-orphans": sweep_orphans,
    "kek-cycle": kek_cycle,
    "audit-sequence": audit_sequence,
    "audit-checkpoint": audit_checkpoint,
    "scrub": scrub,
    "metrics-rollup": roll_up_metrics,
    "clear-revoked-owners": clear_revoked_owners,
    "review-barred-notifications": review_barred_notifications,
    "purge-exports": purge_exports,
    "transcription-handoffs": transcription_handoffs,
}

# Jobs that run at their own period (seconds, from the settings) instead of job_interval_seconds.
PERIODS: dict[str, Callable[[Settings], float]] = {
    "audit-sequence": lambda s: s.audit_sequence_interval_seconds,
}

# Grants lapse first (nobody reads what is about to go); purposes expire before disposal;
# erasure runs before disposal (it ends purposes) and again after the KEK cycle, whose
# retirement is what completes an erasure; hand-offs go only once purposes, erasures and
# disposals are settled (and their exports are purged after); the sequencer takes every event in
# and the signed tree head then covers everything this run did.
RUN_ALL_ORDER: tuple[str, ...] = (
    "expire-grants",
    "expire-purposes",
    "erasure",
    "dispose",
    "transcription-handoffs",
    "redact",
    "sweep-orphans",
    "kek-cycle",
    "erasure",
    "clear-revoked-owners",
    "review-barred-notifications",
    "purge-exports",
    "audit-sequence",
    "audit-checkpoint",
    "metrics-rollup",
    "scrub",
)


@dataclass(frozen=True)
class JobOutcome:
    name: str
    ok: bool
    summary: str


def execute(
    ctx: Context, name: str, fn: JobFn, now: datetime, opts: Mapping[str, Any] | None = None
) -> JobResult:
    """The one job runner: run, record in ``job_status``, log one line; exceptions propagate
    (after being recorded and logged)."""
    started = time.perf_counter()
    try:
        out = fn(ctx, now, **(opts or {}))
    except Exception as exc:
        _finish(ctx, name, now, started, None, error=type(exc).__name__)
        raise
    result = out if isinstance(out, JobResult) else JobResult(str(out))
    _finish(ctx, name, now, started, result)
    return result


def _finish(
    ctx: Context, name: str, now: datetime, started: float, result: JobResult | None,
    *, error: str | None = None,
) -> None:  # fmt: skip
    duration = time.perf_counter() - started
    ok = result is not None
    try:
        with ctx.db.transaction() as session:
            job_runs.record_run(
                session, name=name, ok=ok, started_at=now,
                finished_at=now + timedelta(seconds=duration), duration_seconds=duration,
            )  # fmt: skip
    except Exception as exc:  # the run's outcome stands; /metrics shows the gap
        log.warning("job %s: its run could not be recorded (%s)", name, type(exc).__name__)
    line = {
        "job": name, "outcome": job_runs.OK if ok else job_runs.ERROR,
        "duration_ms": round(duration * 1000, 2), "counts": dict(result.counts) if ok else {},
    }  # fmt: skip
    if ok:
        log.info("job %s: %s", name, result.summary, extra=line)
    else:
        # The one line of a failed run, with its traceback; callers do not log it again.
        log.error("job %s failed: %s", name, error, exc_info=True, extra=line)


def run(name: str, ctx: Context, now: datetime, **opts: Any) -> str:
    """Run one job now; ``KeyError`` for an unknown name. Exceptions propagate."""
    return execute(ctx, name, JOBS[name], now, opts).summary


def run_all(ctx: Context, now: datetime, **opts: Any) -> list[JobOutcome]:
    """Every job once, in ``RUN_ALL_ORDER``; a failing job is logged and the others still run."""
    outcomes = []
    for name in RUN_ALL_ORDER:
        try:
            outcomes.append(JobOutcome(name, True, run(name, ctx, now, **opts)))
        except Exception as exc:  # already logged by execute
            outcomes.append(JobOutcome(name, False, f"{type(exc).__name__}: {exc}"))
    return outcomes
