"""Signed retention records

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26

- ``retention_record``: a signed erasure receipt or disposal record (its canonical text and
  signature) and where it was exported in the object store; ``restore reconcile`` re-applies
  the exported copies after a restore from an older backup. Receipts of erasures completed
  before this revision are queued for export too (the next erasure run exports them).
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import vault.models

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_record",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
        sa.Column("created_at", vault.models._types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("signature", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("object_key", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
        sa.Column("version_id", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("retention_record", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_retention_record_created_at"), ["created_at"], unique=False
        )
    # Receipts signed before this revision: exported like new ones, so a restore from a backup
    # taken before the upgrade still re-applies them.
    op.execute(
        "INSERT INTO retention_record (id, kind, created_at, document, signature) "
        "SELECT id, 'erasure-receipt', completed_at, receipt, receipt_signature "
        "FROM erasure_request WHERE status = 'complete' AND completed_at IS NOT NULL "
        "AND receipt IS NOT NULL AND receipt_signature IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("retention_record", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_retention_record_created_at"))
    op.drop_table("retention_record")
