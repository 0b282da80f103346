"""The APScheduler (3.x) worker: every job at ``CALLVAULT_JOB_INTERVAL_SECONDS``, ``kek-cycle``
hourly.

Each job has an explicit id, ``replace_existing=True``, ``coalesce=True``, ``max_instances=1`` and
a generous ``misfire_grace_time`` (at least 60 s: a 2-core box is often busy). A run that raises is
logged and the worker carries on; the next period tries again. Jobs are idempotent and claim
their rows, so several workers (and ``serve`` in single-node mode) may run side by side.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from jobs.tasks import JOBS, PERIODS, JobFn, execute
from vault.context import Context
from vault.leases import process_holder

__all__ = ["KEK_CYCLE_SECONDS", "MIN_MISFIRE_GRACE_SECONDS", "build_scheduler", "run_job"]

log = logging.getLogger(__name__)

KEK_CYCLE_SECONDS = 3600.0
MIN_MISFIRE_GRACE_SECONDS = 60
MAX_WORKER_THREADS = 4


def run_job(ctx: Context, name: str, fn: JobFn, opts: Mapping[str, Any]) -> None:
    """One scheduled run through the one job runner (recorded, one log line); never lets an
    exception escape into the scheduler: the next period tries again."""
    try:
        execute(ctx, name, fn, ctx.now(), opts)
    except Exception:  # logged by execute, with its traceback
        return


def build_scheduler(
    ctx: Context,
    *,
    blocking: bool,
    jobs: Mapping[str, JobFn] | None = None,
) -> BaseScheduler:
    """A scheduler with every job added (not started).

    ``jobs`` replaces the registry (tests).
    """
    interval = float(ctx.settings.job_interval_seconds)
    cls = BlockingScheduler if blocking else BackgroundScheduler
    scheduler = cls(
        timezone=UTC,
        executors={"default": ThreadPoolExecutor(MAX_WORKER_THREADS)},
    )
    holder = process_holder()
    started = datetime.now(UTC)
    for name, fn in (jobs if jobs is not None else JOBS).items():
        period = KEK_CYCLE_SECONDS if name == "kek-cycle" else interval
        if name in PERIODS:
            period = PERIODS[name](ctx.settings)
        opts: dict[str, Any] = {}
        first_run = None
        if name == "kek-cycle":
            opts["holder"] = holder
            # Soon after start, not an hour later: a worker restarted often must still rotate.
            first_run = started + timedelta(seconds=min(interval, KEK_CYCLE_SECONDS))
        scheduler.add_job(
            run_job,
            IntervalTrigger(seconds=period, timezone=UTC),
            args=(ctx, name, fn, opts),
            id=name,
            name=name,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=max(MIN_MISFIRE_GRACE_SECONDS, int(period)),
            **({"next_run_time": first_run} if first_run is not None else {}),
        )
    return scheduler
