"""Data residency: the region of each recording and principal, and other regions' KEK versions

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-26

- ``recording.region``: where its object and its KEK live; NULL is the home region (every row
  written before regions existed).
- ``principal.region``: where the principal reads from; NULL is the home region.
- ``region_kek_version``: the KEK versions of each other region's key provider (the home
  region's stay in ``kek_version``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vault.models._types import UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recording", schema=None) as batch_op:
        batch_op.add_column(sa.Column("region", sa.String(64), nullable=True))
    with op.batch_alter_table("principal", schema=None) as batch_op:
        batch_op.add_column(sa.Column("region", sa.String(64), nullable=True))
    op.create_table(
        "region_kek_version",
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("retiring_at", UTCDateTime(), nullable=True),
        sa.Column("retired_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("region", "version"),
    )


def downgrade() -> None:
    op.drop_table("region_kek_version")
    with op.batch_alter_table("principal", schema=None) as batch_op:
        batch_op.drop_column("region")
    with op.batch_alter_table("recording", schema=None) as batch_op:
        batch_op.drop_column("region")
