"""Operations tables read by ``/metrics``: one status row per job, and incremental roll-ups.

Both are small and bounded (a row per job name, a row per roll-up), so a scrape reads them with
a primary-key scan whatever the size of the vault.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from vault.models._types import _ts


class JobStatus(SQLModel, table=True):
    """The runs of one job, as the one job runner (``jobs.tasks.execute``) records them."""

    __tablename__ = "job_status"
    name: str = Field(primary_key=True, max_length=64)
    runs: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, default=0))
    failures: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, default=0))
    # Reset by a success: a job failing every run shows a rising number, not a rate.
    consecutive_failures: int = 0
    last_outcome: str = Field(default="", max_length=16)
    last_started_at: datetime | None = _ts(nullable=True)
    last_finished_at: datetime | None = _ts(nullable=True)
    last_success_at: datetime | None = _ts(nullable=True)
    last_duration_seconds: float = 0.0


class MetricRollup(SQLModel, table=True):
    """A running total over the audit log, advanced from ``watermark`` (the next leaf index)."""

    __tablename__ = "metric_rollup"
    name: str = Field(primary_key=True, max_length=64)
    watermark: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, default=0))
    value: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, default=0))
    events: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, default=0))
    updated_at: datetime = _ts()
