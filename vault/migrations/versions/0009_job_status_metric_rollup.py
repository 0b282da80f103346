"""Job status and metric roll-ups

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26

- ``job_status``: one row per job name: runs, failures, consecutive failures, the last outcome,
  start, finish, success and duration, written by the one job runner for ``/metrics``.
- ``metric_rollup``: running totals over the audit log from a watermark (playback bytes), so a
  scrape reads one row and the read path stays as it is.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import vault.models

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_status",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("runs", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.BigInteger(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("last_outcome", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("last_started_at", vault.models._types.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "last_finished_at", vault.models._types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("last_success_at", vault.models._types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_duration_seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "metric_rollup",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("watermark", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", vault.models._types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("metric_rollup")
    op.drop_table("job_status")
