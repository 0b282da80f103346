"""Tenant changes (four-eyes), per-tenant policy and offboarding

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26

- ``tenant.status``: ``active`` until an approved offboarding (then ``offboarding``,
  ``deferred``, ``offboarded``).
- ``tenant_change``: proposals (offboard, policy, authorisations) and their approvals.
- ``tenant_policy``: a tenant's approved restrictions and authorisations.
- ``tenant_offboarding``, ``offboarding_erasure``, ``offboarding_receipt``: the offboarding run,
  the erasure requests it opened, and its signed receipts.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vault.models._types import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenant", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(16), nullable=False, server_default="active")
        )
    op.create_table(
        "tenant_change",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("proposed_by", sa.String(64), nullable=False),
        sa.Column("proposed_owner", sa.String(64), nullable=False),
        sa.Column("proposed_at", UTCDateTime(), nullable=False),
        sa.Column("approved_by", sa.String(64), nullable=True),
        sa.Column("approved_owner", sa.String(64), nullable=True),
        sa.Column("approved_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_tenant_change_tenant_id", "tenant_change", ["tenant_id"])
    op.create_table(
        "tenant_policy",
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("restrictions", sa.Text(), nullable=True),
        sa.Column("restrictions_change", sa.Uuid(), nullable=True),
        sa.Column("restrictions_approved_at", UTCDateTime(), nullable=True),
        sa.Column("authorisations", sa.Text(), nullable=True),
        sa.Column("authorisations_change", sa.Uuid(), nullable=True),
        sa.Column("authorisations_approved_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id"),
    )
    op.create_table(
        "tenant_offboarding",
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("change_id", sa.Uuid(), sa.ForeignKey("tenant_change.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("approved_at", UTCDateTime(), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("key_deleted_at", UTCDateTime(), nullable=True),
        sa.Column("completed_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id"),
    )
    op.create_index("ix_tenant_offboarding_due_at", "tenant_offboarding", ["due_at"])
    op.create_table(
        "offboarding_erasure",
        sa.Column("request_id", sa.Uuid(), sa.ForeignKey("erasure_request.id"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenant.id"), nullable=False),
        sa.PrimaryKeyConstraint("request_id"),
    )
    op.create_index("ix_offboarding_erasure_tenant_id", "offboarding_erasure", ["tenant_id"])
    op.create_table(
        "offboarding_receipt",
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "seq"),
    )


def downgrade() -> None:
    op.drop_table("offboarding_receipt")
    op.drop_index("ix_offboarding_erasure_tenant_id", table_name="offboarding_erasure")
    op.drop_table("offboarding_erasure")
    op.drop_index("ix_tenant_offboarding_due_at", table_name="tenant_offboarding")
    op.drop_table("tenant_offboarding")
    op.drop_table("tenant_policy")
    op.drop_index("ix_tenant_change_tenant_id", table_name="tenant_change")
    op.drop_table("tenant_change")
    with op.batch_alter_table("tenant", schema=None) as batch_op:
        batch_op.drop_column("status")
