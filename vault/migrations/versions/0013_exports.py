"""Exports: recordings re-encrypted to a recipient's age key, one-time downloads (issue #15)

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import vault.models

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_TS = vault.models._types.UTCDateTime(timezone=True)
_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "export",
        sa.Column("kind", _S(length=16), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("recording_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("recipient_fingerprint", _S(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", _S(length=64), nullable=False),
        sa.Column("plaintext_sha256", _S(length=64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("served_to", sa.BigInteger(), nullable=False),
        sa.Column("bytes_served", sa.BigInteger(), nullable=False),
        sa.Column("completed_at", _TS, nullable=True),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.Column("revoke_reason", _S(length=64), nullable=True),
        sa.Column("deleted_at", _TS, nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("region", _S(length=64), nullable=True),
        sa.Column("object_key", _S(length=512), nullable=False),
        sa.Column("version_id", _S(length=256), nullable=True),
        sa.Column("token_hash", _S(length=64), nullable=False),
        sa.ForeignKeyConstraint(["recording_id"], ["recording.id"]),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("export", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_export_subject_id"), ["subject_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_export_recording_id"), ["recording_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_export_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("export", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_export_expires_at"))
        batch_op.drop_index(batch_op.f("ix_export_recording_id"))
        batch_op.drop_index(batch_op.f("ix_export_subject_id"))
    op.drop_table("export")
