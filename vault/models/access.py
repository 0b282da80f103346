"""Access tables: requests, reviews and grants (break-glass included), with the rules "grant
active" and "break-glass review overdue" usable in Python and in SQL."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import ConfigDict
from sqlalchemy.ext.hybrid import hybrid_method
from sqlmodel import Field, SQLModel, col

from vault.models._types import _ts
from vault.validation import MultilineText, Number, Text

# A break-glass review still open after this is flagged (audited once) and listed as overdue.
REVIEW_OVERDUE = timedelta(hours=24)


def review_overdue_since(opened_at: Any, now: datetime) -> Any:
    """The one "after-review overdue" rule (break-glass grants, emergency disclosures): owed
    since ``opened_at`` for longer than ``REVIEW_OVERDUE``. A datetime gives a bool, a column
    an SQL expression."""
    return opened_at < now - REVIEW_OVERDUE


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
    purpose: Text = Field(max_length=32)
    reason: MultilineText = Field(max_length=2000)
    ticket: Text = Field(max_length=256)
    duration_minutes: Number
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
    # Owners, not principals, are what four-eyes compares: the owner's pseudonym (owner_ref),
    # never an e-mail (this row outlives the person).
    requester_owner: str = Field(max_length=256)
    status: str = Field(sa_column=sa.Column(sa.String(16), nullable=False, index=True))
    approvals_required: int = 1
    created_at: datetime = _ts()
    expires_at: datetime = _ts(index=True)
    decided_at: datetime | None = _ts(nullable=True)
    grant_id: uuid.UUID | None = Field(default=None)

    model_config = ConfigDict(ignored_types=(hybrid_method,))  # type: ignore[assignment]

    @hybrid_method
    def lapsed_at(self, now: datetime) -> bool:
        """Still pending past its TTL: expired, whether or not the sweep has marked it yet."""
        return self.status == AccessRequestStatus.pending and self.expires_at <= now

    @lapsed_at.inplace.expression
    @classmethod
    def _lapsed_at(cls, now: datetime) -> Any:
        return sa.and_(
            col(cls.status) == AccessRequestStatus.pending.value, col(cls.expires_at) <= now
        )


class AccessRequestRecording(SQLModel, table=True):
    __tablename__ = "access_request_recording"
    request_id: uuid.UUID = Field(foreign_key="access_request.id", primary_key=True)
    recording_id: uuid.UUID = Field(foreign_key="recording.id", primary_key=True)


class ReviewCreate(SQLModel):
    comment: MultilineText = Field(default="", max_length=2000)


class Review(SQLModel, table=True):
    __table_args__ = (sa.UniqueConstraint("request_id", "reviewer_owner"),)
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    request_id: uuid.UUID = Field(foreign_key="access_request.id", index=True)
    reviewer_id: uuid.UUID = Field(foreign_key="principal.id")
    reviewer_owner: str = Field(max_length=256)  # owner_ref
    decision: str = Field(max_length=16)
    comment: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False, default=""))
    created_at: datetime = _ts()


# --- grants -----------------------------------------------------------------------------------


class BreakGlassCreate(SQLModel):
    recording_ids: list[uuid.UUID]
    purpose: Text = Field(max_length=32)
    incident_ref: Text = Field(max_length=256)
    reason: MultilineText = Field(max_length=2000)
    duration_minutes: Number


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
    restricted: bool = False  # break-glass opened on a restricted recording (privacy office)


class Grant(SQLModel, table=True):
    __tablename__ = "access_grant"  # "grant" is an SQL keyword
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    kind: str = Field(max_length=16)
    principal_id: uuid.UUID = Field(foreign_key="principal.id", index=True)
    owner: str = Field(max_length=256)  # owner_ref (break-glass counts per owner)
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
    # Break-glass over a restriction of processing: flagged for the after-review.
    restricted: bool = Field(
        default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false())
    )

    model_config = ConfigDict(ignored_types=(hybrid_method,))  # type: ignore[assignment]

    @hybrid_method
    def active_at(self, now: datetime) -> bool:
        """The grant opens content now: started, not ended, not revoked."""
        return self.revoked_at is None and self.not_before <= now < self.expires_at

    @active_at.inplace.expression
    @classmethod
    def _active_at(cls, now: datetime) -> Any:
        return sa.and_(
            col(cls.revoked_at).is_(None), col(cls.not_before) <= now, col(cls.expires_at) > now
        )

    @hybrid_method
    def review_open(self) -> bool:
        """A break-glass after-review is still owed (expired or revoked grants included)."""
        return self.needs_review and self.reviewed_at is None

    @review_open.inplace.expression
    @classmethod
    def _review_open(cls) -> Any:
        return sa.and_(col(cls.needs_review).is_(True), col(cls.reviewed_at).is_(None))

    @hybrid_method
    def review_overdue_at(self, now: datetime) -> bool:
        """The after-review has been owed for longer than ``REVIEW_OVERDUE``."""
        return self.review_open() and review_overdue_since(self.created_at, now)

    @review_overdue_at.inplace.expression
    @classmethod
    def _review_overdue_at(cls, now: datetime) -> Any:
        return sa.and_(cls._review_open(), review_overdue_since(col(cls.created_at), now))


class GrantRecording(SQLModel, table=True):
    __tablename__ = "grant_recording"
    grant_id: uuid.UUID = Field(foreign_key="access_grant.id", primary_key=True)
    recording_id: uuid.UUID = Field(foreign_key="recording.id", primary_key=True, index=True)
