"""Sub-processors and hand-offs (issue #15)

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-26

- ``subprocessor``: the registry (name, purpose, region, contract reference, the age key; added
  and removed, never deleted).
- ``subprocessor_principal``: a ``subprocessor`` principal's registry entry.
- ``handoff``: a recording made available to a sub-processor (at most once per pair), its
  export, the token sealed to the sub-processor's key until claimed, the transfer it was, and
  the transcript that came back.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import vault.models

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_TS = vault.models._types.UTCDateTime(timezone=True)
_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "subprocessor",
        sa.Column("purpose", _S(length=32), nullable=False),
        sa.Column("region", _S(length=64), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("contract_ref", _S(length=256), nullable=False),
        sa.Column("age_recipient", _S(length=128), nullable=False),
        sa.Column("added_at", _TS, nullable=False),
        sa.Column("added_by", _S(length=64), nullable=False),
        sa.Column("removed_at", _TS, nullable=True),
        sa.Column("removed_by", _S(length=64), nullable=True),
        sa.Column("removal_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "subprocessor_principal",
        sa.Column("principal_id", sa.Uuid(), nullable=False),
        sa.Column("subprocessor_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(["principal_id"], ["principal.id"]),
        sa.ForeignKeyConstraint(["subprocessor_id"], ["subprocessor.id"]),
        sa.PrimaryKeyConstraint("principal_id"),
    )
    with op.batch_alter_table("subprocessor_principal", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_subprocessor_principal_subprocessor_id"), ["subprocessor_id"],
            unique=False,
        )  # fmt: skip
    op.create_table(
        "handoff",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("subprocessor_id", sa.Uuid(), nullable=False),
        sa.Column("recording_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("lease_until", _TS, nullable=True),
        sa.Column("export_id", sa.Uuid(), nullable=True),
        sa.Column("issued_at", _TS, nullable=True),
        sa.Column("expires_at", _TS, nullable=True),
        sa.Column("sealed_token", sa.Text(), nullable=True),
        sa.Column("claimed_at", _TS, nullable=True),
        sa.Column("source_region", _S(length=64), nullable=True),
        sa.Column("destination_region", _S(length=64), nullable=True),
        sa.Column("transfer_mechanism", _S(length=128), nullable=True),
        sa.Column("failure", _S(length=64), nullable=True),
        sa.Column("transcript_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(["subprocessor_id"], ["subprocessor.id"]),
        sa.ForeignKeyConstraint(["recording_id"], ["recording.id"]),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.ForeignKeyConstraint(["export_id"], ["export.id"]),
        sa.ForeignKeyConstraint(["transcript_id"], ["recording.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "recording_id", "subprocessor_id", name="ux_handoff_recording_subprocessor"
        ),
    )
    with op.batch_alter_table("handoff", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_handoff_subprocessor_id"), ["subprocessor_id"])
        batch_op.create_index(batch_op.f("ix_handoff_recording_id"), ["recording_id"])
        batch_op.create_index(batch_op.f("ix_handoff_tenant_id"), ["tenant_id"])
        batch_op.create_index(batch_op.f("ix_handoff_status"), ["status"])


def downgrade() -> None:
    with op.batch_alter_table("handoff", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_handoff_status"))
        batch_op.drop_index(batch_op.f("ix_handoff_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_handoff_recording_id"))
        batch_op.drop_index(batch_op.f("ix_handoff_subprocessor_id"))
    op.drop_table("handoff")
    with op.batch_alter_table("subprocessor_principal", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subprocessor_principal_subprocessor_id"))
    op.drop_table("subprocessor_principal")
    op.drop_table("subprocessor")
