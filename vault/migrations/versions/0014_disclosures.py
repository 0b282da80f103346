"""The legal-disclosure register (issue #15)

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-26

- ``disclosure``: a request from an authority, its status, emergency after-review, customer
  notification (or its legal bar) and the signed manifest of what was disclosed;
- ``disclosure_recording``: its scope (recording ids; call ids are never stored);
- ``disclosure_approval``: approvals, per revision (a change to the request bumps it).
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

from vault.models._types import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "disclosure",
        sa.Column("authority", _S(length=256), nullable=False),
        sa.Column("legal_basis", sa.Text(), nullable=False),
        sa.Column("legal_reference", _S(length=256), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("emergency", sa.Boolean(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("recipient", _S(length=128), nullable=False),
        sa.Column("recipient_fingerprint", _S(length=64), nullable=False),
        sa.Column("requested_by", sa.Uuid(), sa.ForeignKey("principal.id"), nullable=False),
        sa.Column("requester_owner", _S(length=256), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("objected_at", UTCDateTime(), nullable=True),
        sa.Column("objection_reason", sa.Text(), nullable=True),
        sa.Column("approved_at", UTCDateTime(), nullable=True),
        sa.Column("run_id", sa.Uuid(), nullable=True),
        sa.Column("disclosed_at", UTCDateTime(), nullable=True),
        sa.Column("export_expires_at", UTCDateTime(), nullable=True),
        sa.Column("manifest_statement", sa.Text(), nullable=True),
        sa.Column("manifest_signature", _S(length=128), nullable=True),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
        sa.Column("close_reason", sa.Text(), nullable=True),
        sa.Column("needs_review", sa.Boolean(), nullable=False),
        sa.Column("reviewed_at", UTCDateTime(), nullable=True),
        sa.Column("reviewed_by", sa.Uuid(), nullable=True),
        sa.Column("review_comment", sa.Text(), nullable=True),
        sa.Column("notified_at", UTCDateTime(), nullable=True),
        sa.Column("notification_channel", _S(length=256), nullable=True),
        sa.Column("notification_barred", sa.Boolean(), nullable=False),
        sa.Column("barred_reference", _S(length=256), nullable=True),
        sa.Column("barred_review_at", UTCDateTime(), nullable=True),
        sa.Column("barred_flagged_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_disclosure_tenant_id", "disclosure", ["tenant_id"])
    op.create_index("ix_disclosure_status", "disclosure", ["status"])
    op.create_index("ix_disclosure_barred_review_at", "disclosure", ["barred_review_at"])
    op.create_table(
        "disclosure_recording",
        sa.Column("disclosure_id", sa.Uuid(), sa.ForeignKey("disclosure.id"), nullable=False),
        sa.Column("recording_id", sa.Uuid(), sa.ForeignKey("recording.id"), nullable=False),
        sa.PrimaryKeyConstraint("disclosure_id", "recording_id"),
    )
    op.create_index(
        "ix_disclosure_recording_recording_id", "disclosure_recording", ["recording_id"]
    )
    op.create_table(
        "disclosure_approval",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("disclosure_id", sa.Uuid(), sa.ForeignKey("disclosure.id"), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("approver_id", sa.Uuid(), sa.ForeignKey("principal.id"), nullable=False),
        sa.Column("approver_owner", _S(length=256), nullable=False),
        sa.Column("role", _S(length=16), nullable=False),
        sa.Column("recipient_fingerprint", _S(length=64), nullable=False),
        sa.Column("verification", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("disclosure_id", "revision", "approver_owner"),
        sa.UniqueConstraint("disclosure_id", "revision", "role"),
    )
    op.create_index(
        "ix_disclosure_approval_disclosure_id", "disclosure_approval", ["disclosure_id"]
    )


def downgrade() -> None:
    op.drop_table("disclosure_approval")
    op.drop_table("disclosure_recording")
    op.drop_table("disclosure")
