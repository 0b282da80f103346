"""KEK versions marked retiring before destruction; checkpoints signed outside the transaction

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

- ``kek_version.retiring_at``: retirement marks a version under the exclusive KEK lock, then the
  provider destroys it outside any transaction; a wrap under a retiring version never commits.
- ``audit_checkpoint.signature`` may be NULL while a statement waits for its signature, which is
  made outside the transaction that wrote it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import vault.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("kek_version", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("retiring_at", vault.models._types.UTCDateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("audit_checkpoint", schema=None) as batch_op:
        batch_op.alter_column("signature", existing_type=sa.String(length=128), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("audit_checkpoint", schema=None) as batch_op:
        batch_op.alter_column("signature", existing_type=sa.String(length=128), nullable=False)
    with op.batch_alter_table("kek_version", schema=None) as batch_op:
        batch_op.drop_column("retiring_at")
