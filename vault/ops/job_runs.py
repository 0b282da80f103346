"""The record of job runs: one ``job_status`` row per job, updated after every run.

Written by the one job runner (``jobs.tasks.execute``) in its own short transaction after the
job: counters move with ``runs = runs + 1`` in SQL, so workers running the same job at once
never lose an increment. A row is created on a job's first run (``ON CONFLICT DO NOTHING``).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session

from vault.leases import dialect
from vault.models import JobStatus

__all__ = ["ERROR", "OK", "record_run"]

OK, ERROR = "ok", "error"
_T = JobStatus.__table__  # type: ignore[attr-defined]


def record_run(
    session: Session,
    *,
    name: str,
    ok: bool,
    started_at: datetime,
    finished_at: datetime,
    duration_seconds: float,
) -> None:
    session.exec(
        dialect(session).insert(_T).values(name=name, runs=0, failures=0, consecutive_failures=0,
                                           last_outcome="", last_duration_seconds=0.0)
        .on_conflict_do_nothing()
    )  # fmt: skip
    values: dict[str, object] = {
        "runs": _T.c.runs + 1,
        "last_outcome": OK if ok else ERROR,
        "last_started_at": started_at,
        "last_finished_at": finished_at,
        "last_duration_seconds": duration_seconds,
    }
    if ok:
        values.update(consecutive_failures=0, last_success_at=finished_at)
    else:
        values.update(
            failures=_T.c.failures + 1, consecutive_failures=_T.c.consecutive_failures + 1
        )
    session.exec(sa.update(_T).where(_T.c.name == name).values(**values))  # type: ignore[call-overload]
