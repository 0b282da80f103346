"""Redaction runs and the signed manifests of derivatives

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26

- ``redaction``: one row per requested or on-expiry redaction (queued, running with a lease,
  verified, failed with the check that failed).
- ``manifest``: a derivative's signed manifest (canonical JSON and signature).
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import vault.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "redaction",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("recording_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("profile", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("purposes", sa.Text(), nullable=False),
        sa.Column("trigger", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("failed_check", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("derivative_id", sa.Uuid(), nullable=True),
        sa.Column("requested_by", sa.Uuid(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", vault.models._types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", vault.models._types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", vault.models._types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", vault.models._types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["derivative_id"],
            ["recording.id"],
        ),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recording.id"],
        ),
        sa.ForeignKeyConstraint(
            ["requested_by"],
            ["principal.id"],
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("redaction", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_redaction_recording_id"), ["recording_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_redaction_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_redaction_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "manifest",
        sa.Column("recording_id", sa.Uuid(), nullable=False),
        sa.Column("redaction_id", sa.Uuid(), nullable=False),
        sa.Column("canonical", sa.Text(), nullable=False),
        sa.Column("signature", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("created_at", vault.models._types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recording.id"],
        ),
        sa.ForeignKeyConstraint(
            ["redaction_id"],
            ["redaction.id"],
        ),
        sa.PrimaryKeyConstraint("recording_id"),
    )
    with op.batch_alter_table("manifest", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_manifest_redaction_id"), ["redaction_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("manifest", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_manifest_redaction_id"))

    op.drop_table("manifest")
    with op.batch_alter_table("redaction", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_redaction_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_redaction_status"))
        batch_op.drop_index(batch_op.f("ix_redaction_recording_id"))

    op.drop_table("redaction")
