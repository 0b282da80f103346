"""The jobs: one thin function per job name, each a call into the domain services.

Every job takes ``(ctx, now, **opts)`` and returns a one-line summary. Jobs hold no domain rule:
idempotence and row claiming (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on
SQLite) live in the services they call, so any number of workers may run them at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from vault import audit, kek
from vault.access import requests as access
from vault.audit import heads, tree
from vault.config import Settings
from vault.console import sessions as console_sessions
from vault.context import Context
from vault.leases import process_holder
from vault.recordings import scrub as integrity
from vault.recordings import sweep
from vault.redaction import expiry as redaction_expiry
from vault.redaction import service as redaction
from vault.retention import disposal as retention
from vault.retention import erasure, expiry

__all__ = ["JOBS", "PERIODS", "RUN_ALL_ORDER", "JobFn", "JobOutcome", "run", "run_all"]

log = logging.getLogger(__name__)

JobFn = Callable[..., str]


def expire_purposes(ctx: Context, now: datetime, **_: Any) -> str:
    return f"{expiry.expire_purposes(ctx, now=now)} purpose(s) expired"


def dispose(ctx: Context, now: datetime, **_: Any) -> str:
    # On-expiry redactions first: disposal of their originals waits for them.
    made, failed = redaction_expiry.redact_due(ctx, now=now)
    result = retention.dispose(ctx, now=now)
    return (
        f"{result.disposed} recording(s) disposed, {result.deferred} deferred by legal holds; "
        f"{made} de-identified derivative(s) made on expiry, {failed} failed"
    )


def redact(ctx: Context, now: datetime, **_: Any) -> str:
    made, failed = redaction.run_queue(ctx, now=now, limit=ctx.settings.redaction_batch)
    return f"{made} redaction(s) verified, {failed} failed"


def process_erasures(ctx: Context, now: datetime, **_: Any) -> str:
    return f"{erasure.process(ctx, now=now)} erasure request(s) completed"


def expire_grants(ctx: Context, now: datetime, **_: Any) -> str:
    with ctx.db.transaction() as session:
        changed = access.expire(session, now=now)
        # Console sessions nobody came back to are ended (audited), and deleted a day later.
        limits = console_sessions.Limits.of(ctx.settings)
        purged = console_sessions.purge(session, limits=limits, now=now)
    return (
        f"{changed} access request(s) and grant(s) expired or flagged; "
        f"{purged} console session(s) purged"
    )


def sweep_orphans(ctx: Context, now: datetime, **_: Any) -> str:
    older_than = timedelta(seconds=ctx.settings.pending_ingest_timeout_seconds)
    swept = sweep.sweep_orphans(ctx, older_than=older_than, now=now)
    return f"{swept} orphan(s) swept"


def kek_cycle(
    ctx: Context, now: datetime, *, force: bool = False, holder: str | None = None, **_: Any
) -> str:
    result = kek.kek_cycle(ctx, now=now, force=force, holder=holder or process_holder())
    return result.summary()


def audit_sequence(ctx: Context, now: datetime, **_: Any) -> str:
    # SKIP LOCKED: when another worker is sequencing, this run leaves it to that one.
    taken = tree.sequence(ctx.db)
    with ctx.db.reading() as session:
        late = tree.alarm_if_late(
            audit.stats(session, now=now), bound_seconds=ctx.settings.audit_sequence_bound_seconds
        )
    return f"{taken} audit event(s) sequenced" + ("; ALARM: events past the bound" if late else "")


def audit_checkpoint(ctx: Context, now: datetime, **_: Any) -> str:
    # The aggregates of denials counted in this process (the API's, in single-node mode).
    flushed = audit.flush_denials(ctx.db, ctx.denials, now=now)
    head = heads.write_head(ctx, now=now)  # sequences what is committed, then signs
    signed = f"tree head at size {head.tree_size}" if head else "no new leaves"
    return f"{signed}; {flushed} denial aggregate(s) written"


def scrub(ctx: Context, now: datetime, *, sample: int = 10, **_: Any) -> str:
    return integrity.scrub(ctx, now=now, sample=sample).summary()


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
}

# Jobs that run at their own period (seconds, from the settings) instead of job_interval_seconds.
PERIODS: dict[str, Callable[[Settings], float]] = {
    "audit-sequence": lambda s: s.audit_sequence_interval_seconds,
}

# Grants lapse first (nobody reads what is about to go); purposes expire before disposal;
# erasure runs before disposal (it ends purposes) and again after the KEK cycle, whose
# retirement is what completes an erasure; the sequencer takes every event in and the signed
# tree head then covers everything this run did.
RUN_ALL_ORDER: tuple[str, ...] = (
    "expire-grants",
    "expire-purposes",
    "erasure",
    "dispose",
    "redact",
    "sweep-orphans",
    "kek-cycle",
    "erasure",
    "audit-sequence",
    "audit-checkpoint",
    "scrub",
)


@dataclass(frozen=True)
class JobOutcome:
    name: str
    ok: bool
    summary: str


def run(name: str, ctx: Context, now: datetime, **opts: Any) -> str:
    """Run one job now; ``KeyError`` for an unknown name. Exceptions propagate."""
    return JOBS[name](ctx, now, **opts)


def run_all(ctx: Context, now: datetime, **opts: Any) -> list[JobOutcome]:
    """Every job once, in ``RUN_ALL_ORDER``; a failing job is logged and the others still run."""
    outcomes = []
    for name in RUN_ALL_ORDER:
        try:
            outcomes.append(JobOutcome(name, True, run(name, ctx, now, **opts)))
        except Exception as exc:
            log.exception("job %s failed", name)
            outcomes.append(JobOutcome(name, False, f"{type(exc).__name__}: {exc}"))
    return outcomes
