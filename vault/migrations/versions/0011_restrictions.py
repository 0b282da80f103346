"""Restriction of processing

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26

- ``recording_restriction``: a privacy officer's restriction of one recording (reason, who and
  when placed and lifted). At most one is active per recording (a partial unique index).
- ``access_grant.restricted``: a break-glass grant opened over a restriction is flagged, so its
  after-review shows it.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import vault.models

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recording_restriction",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("recording_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("placed_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("placed_at", vault.models._types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("lifted_at", vault.models._types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("lifted_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("lift_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["recording_id"], ["recording.id"]),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("recording_restriction", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_recording_restriction_recording_id"), ["recording_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_recording_restriction_tenant_id"), ["tenant_id"], unique=False
        )
        batch_op.create_index(
            "ux_recording_restriction_active", ["recording_id"], unique=True,
            sqlite_where=sa.text("lifted_at IS NULL"),
            postgresql_where=sa.text("lifted_at IS NULL"),
        )  # fmt: skip
    with op.batch_alter_table("access_grant", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("restricted", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("access_grant", schema=None) as batch_op:
        batch_op.drop_column("restricted")
    with op.batch_alter_table("recording_restriction", schema=None) as batch_op:
        batch_op.drop_index("ux_recording_restriction_active")
        batch_op.drop_index(batch_op.f("ix_recording_restriction_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_recording_restriction_recording_id"))
    op.drop_table("recording_restriction")
