"""Access: requests, reviews, grants (break-glass included) and signed audit checkpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from vault.models._types import _ts


class AccessRequestStatus(StrEnum):
    pending = "pending"
    approved = "approved"
    denied = "denied"
    expired = "expired"
    revoked = "revoked"


class ReviewDecision(StrEnum):
    approve = "approve"
    deny = "deny"


class GrantKind(StrEnum):
    request = "request"
    break_glass = "break_glass"


# --- access requests --------------------------------------------------------------------------


class AccessRequestBase(SQLModel):
    purpose: str = Field(max_length=32)
    reason: str = Field(max_length=2000)
    ticket: str = Field(max_length=256)
    duration_minutes: float


class AccessRequestCreate(AccessRequestBase):
    recording_ids: list[uuid.UUID]


class AccessRequestPublic(AccessRequestBase):
    id: uuid.UUID
    requester_id: uuid.UUID
    status: AccessRequestStatus
    recording_ids: list[uuid.UUID]
    approvals_required: int
    approvals: int
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    grant_id: uuid.UUID | None


class AccessRequest(AccessRequestBase, table=True):
    __tablename__ = "access_request"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    requester_id: uuid.UUID = Field(foreign_key="principal.id", index=True)
    # Owners, not principals, are what four-eyes compares.
    requester_owner: str = Field(max_length=256)
    status: str = Field(sa_column=sa.Column(sa.String(16), nullable=False, index=True))
    approvals_required: int = 1
    created_at: datetime = _ts()
    expires_at: datetime = _ts(index=True)
    decided_at: datetime | None = _ts(nullable=True)
    grant_id: uuid.UUID | None = Field(default=None)


class AccessRequestRecording(SQLModel, table=True):
    __tablename__ = "access_request_recording"
    request_id: uuid.UUID = Field(foreign_key="access_request.id", primary_key=True)
    recording_id: uuid.UUID = Field(foreign_key="recording.id", primary_key=True)


class ReviewCreate(SQLModel):
    comment: str = Field(default="", max_length=2000)


class Review(SQLModel, table=True):
    __table_args__ = (sa.UniqueConstraint("request_id", "reviewer_owner"),)
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    request_id: uuid.UUID = Field(foreign_key="access_request.id", index=True)
    reviewer_id: uuid.UUID = Field(foreign_key="principal.id")
    reviewer_owner: str = Field(max_length=256)
    decision: str = Field(max_length=16)
    comment: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False, default=""))
    created_at: datetime = _ts()


# --- grants -----------------------------------------------------------------------------------


class BreakGlassCreate(SQLModel):
    recording_ids: list[uuid.UUID]
    purpose: str = Field(max_length=32)
    incident_ref: str = Field(max_length=256)
    reason: str = Field(max_length=2000)
    duration_minutes: float


class GrantPublic(SQLModel):
    id: uuid.UUID
    kind: GrantKind
    principal_id: uuid.UUID
    purpose: str
    recording_ids: list[uuid.UUID]
    request_id: uuid.UUID | None
    not_before: datetime
    expires_at: datetime
    revoked_at: datetime | None
    active: bool
    needs_review: bool
    review_overdue: bool
    reviewed_at: datetime | None
    incident_ref: str | None


class Grant(SQLModel, table=True):
    __tablename__ = "access_grant"  # "grant" is an SQL keyword
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    kind: str = Field(max_length=16)
    principal_id: uuid.UUID = Field(foreign_key="principal.id", index=True)
    owner: str = Field(max_length=256)
    purpose: str = Field(max_length=32)
    request_id: uuid.UUID | None = Field(default=None, foreign_key="access_request.id")
    not_before: datetime = _ts()
    expires_at: datetime = _ts(index=True)
    created_at: datetime = _ts()
    revoked_at: datetime | None = _ts(nullable=True)
    revoked_by: uuid.UUID | None = Field(default=None)
    expired_at: datetime | None = _ts(nullable=True)  # set by the expire-grants job (audited)
    # Break-glass: immediate, flagged for after-review by another owner.
    incident_ref: str | None = Field(default=None, max_length=256)
    reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    needs_review: bool = False
    reviewed_at: datetime | None = _ts(nullable=True)
    reviewed_by: uuid.UUID | None = Field(default=None)
    review_comment: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    overdue_flagged_at: datetime | None = _ts(nullable=True)


class GrantRecording(SQLModel, table=True):
    __tablename__ = "grant_recording"
    grant_id: uuid.UUID = Field(foreign_key="access_grant.id", primary_key=True)
    recording_id: uuid.UUID = Field(foreign_key="recording.id", primary_key=True, index=True)


# --- signed audit checkpoints ---------------------------------------------------------------------


class AuditCheckpointPublic(SQLModel):
    id: int
    chain_id: str
    head_seq: int
    head_hash: str
    created_at: datetime
    public_key: str
    signature: str
    object_key: str | None


class AuditCheckpoint(SQLModel, table=True):
    __tablename__ = "audit_checkpoint"
    id: int | None = Field(default=None, primary_key=True)
    chain_id: str = Field(max_length=64)
    head_seq: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False, index=True))
    head_hash: str = Field(max_length=64)
    created_at: datetime = _ts()
    # Hex Ed25519 public key and signature over the canonical checkpoint statement.
    public_key: str = Field(max_length=64)
    signature: str = Field(max_length=128)
    statement: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    object_key: str | None = Field(default=None, max_length=512)
    version_id: str | None = Field(default=None, max_length=256)
