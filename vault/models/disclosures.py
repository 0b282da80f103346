"""The legal-disclosure register (issue #15): requests from authorities, their approvals, the
customer's notification and the signed manifest of what was handed out.

A disclosure covers recordings of one tenant (the customer who is notified, or not). Call ids
are resolved to recording ids when the request is registered and never stored here. Every
change to what was asked (scope, recipient, authority, legal basis or reference) bumps
``revision``: approvals name the revision they approved, so a change resets them while the old
approvals stay on record.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import ConfigDict
from sqlalchemy.ext.hybrid import hybrid_method
from sqlmodel import Field, SQLModel, col

from vault.models._types import _ts
from vault.models.access import review_overdue_since
from vault.validation import MultilineText, Text, Timestamp

MAX_DISCLOSURE_RECORDINGS = 1000
MAX_N = MAX_DISCLOSURE_RECORDINGS


class DisclosureStatus(StrEnum):
    received = "received"
    objected = "objected"
    approved = "approved"
    disclosed = "disclosed"
    closed = "closed"


# --- API shapes -------------------------------------------------------------------------------


class DisclosureBase(SQLModel):
    authority: str = Field(max_length=256)
    legal_basis: str = Field(max_length=2000)
    legal_reference: str = Field(max_length=256)
    received_at: datetime
    emergency: bool = False


class DisclosureCreate(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    authority: Text = Field(min_length=1, max_length=256)
    legal_basis: MultilineText = Field(min_length=1, max_length=2000)
    legal_reference: Text = Field(min_length=1, max_length=256)
    received_at: Timestamp
    emergency: bool = False
    recipient: Text = Field(min_length=1, max_length=128)  # age X25519 recipient (age1...)
    # The scope: recording ids, or a tenant and call ids (resolved, never stored).
    recording_ids: list[uuid.UUID] | None = Field(default=None, max_length=MAX_N)
    tenant: Text | None = Field(default=None, min_length=1, max_length=64)
    call_ids: list[Text] | None = Field(default=None, max_length=MAX_N)


class DisclosureUpdate(SQLModel):
    """A change to the request: any field given replaces the stored one and resets approvals."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    authority: Text | None = Field(default=None, min_length=1, max_length=256)
    legal_basis: MultilineText | None = Field(default=None, min_length=1, max_length=2000)
    legal_reference: Text | None = Field(default=None, min_length=1, max_length=256)
    received_at: Timestamp | None = None
    emergency: bool | None = None
    recipient: Text | None = Field(default=None, min_length=1, max_length=128)
    recording_ids: list[uuid.UUID] | None = Field(default=None, max_length=MAX_N)
    tenant: Text | None = Field(default=None, min_length=1, max_length=64)
    call_ids: list[Text] | None = Field(default=None, max_length=MAX_N)
    reason: MultilineText = Field(max_length=2000)


class DisclosureApprove(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    revision: int = Field(ge=1, le=2**31 - 1)
    recipient_fingerprint: Text = Field(min_length=1, max_length=64)
    verification: MultilineText = Field(max_length=2000)  # how the key was verified out of band


class DisclosureReason(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    reason: MultilineText = Field(max_length=2000)


class DisclosureNotification(SQLModel):
    """Either the customer was notified (``notified_at`` + ``channel``), or the law bars it
    (``barred`` + ``legal_reference`` + ``review_at``)."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    notified_at: Timestamp | None = None
    channel: Text | None = Field(default=None, min_length=1, max_length=256)
    barred: bool = False
    legal_reference: Text | None = Field(default=None, min_length=1, max_length=256)
    review_at: Timestamp | None = None


class DisclosureApprovalPublic(SQLModel):
    approver_id: uuid.UUID
    role: str
    revision: int
    recipient_fingerprint: str
    verification: str
    created_at: datetime


class DisclosurePublic(DisclosureBase):
    id: uuid.UUID
    tenant_id: uuid.UUID
    status: DisclosureStatus
    revision: int
    recipient: str
    recipient_fingerprint: str
    recording_ids: list[uuid.UUID]
    restricted_recording_ids: list[uuid.UUID] = []
    requested_by: uuid.UUID
    created_at: datetime
    approvals: list[DisclosureApprovalPublic] = []  # of the current revision
    approvals_required: list[str] = []  # roles still missing ("privacy", "security", "any")
    objected_at: datetime | None
    objection_reason: str | None
    approved_at: datetime | None
    disclosed_at: datetime | None
    export_expires_at: datetime | None
    closed_at: datetime | None
    close_reason: str | None
    review_due_at: datetime | None
    reviewed_at: datetime | None
    review_overdue: bool = False
    notified_at: datetime | None
    notification_channel: str | None
    notification_barred: bool
    barred_reference: str | None
    barred_review_at: datetime | None
    notification_review_due: bool = False
    manifest: dict[str, str] | None = None  # {statement, signature} once disclosed
    exports: list[dict[str, Any]] = []  # receipts: no token, no object key


class DisclosureDownload(SQLModel):
    export_id: uuid.UUID
    recording_id: uuid.UUID
    token: str  # shown once: hand it to the authority with the download path
    path: str
    size: int
    sha256: str
    expires_at: datetime


class DisclosurePackage(SQLModel):
    disclosure: DisclosurePublic
    manifest: dict[str, str]  # {statement, signature}
    public_key: str  # the audit signing key (hex) that verifies the manifest
    downloads: list[DisclosureDownload]


# --- tables -----------------------------------------------------------------------------------


class Disclosure(DisclosureBase, table=True):
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    tenant_id: uuid.UUID = Field(foreign_key="tenant.id", index=True)
    legal_basis: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    received_at: datetime = _ts()
    status: str = Field(sa_column=sa.Column(sa.String(16), nullable=False, index=True))
    revision: int = 1
    recipient: str = Field(max_length=128)
    recipient_fingerprint: str = Field(max_length=64)
    requested_by: uuid.UUID = Field(foreign_key="principal.id")
    requester_owner: str = Field(max_length=256)  # owner_ref: four-eyes compares owners
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    objected_at: datetime | None = _ts(nullable=True)
    objection_reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    approved_at: datetime | None = _ts(nullable=True)
    # A disclose run's claim: a re-run (after a crash) or a concurrent one takes it over.
    run_id: uuid.UUID | None = Field(default=None)
    disclosed_at: datetime | None = _ts(nullable=True)
    export_expires_at: datetime | None = _ts(nullable=True)
    manifest_statement: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    manifest_signature: str | None = Field(default=None, max_length=128)
    closed_at: datetime | None = _ts(nullable=True)
    close_reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    # Emergency: one approver, then an after-review by yet another owner within 24 h.
    needs_review: bool = False
    reviewed_at: datetime | None = _ts(nullable=True)
    reviewed_by: uuid.UUID | None = Field(default=None)
    review_comment: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    # The customer's notification, or the legal bar on it and when that bar is to be reviewed.
    notified_at: datetime | None = _ts(nullable=True)
    notification_channel: str | None = Field(default=None, max_length=256)
    notification_barred: bool = False
    barred_reference: str | None = Field(default=None, max_length=256)
    barred_review_at: datetime | None = _ts(nullable=True, index=True)
    barred_flagged_at: datetime | None = _ts(nullable=True)  # review due, flagged by the job

    model_config = ConfigDict(ignored_types=(hybrid_method,))  # type: ignore[assignment]

    @hybrid_method
    def review_open(self) -> bool:
        """An emergency disclosure's after-review is still owed."""
        return self.needs_review and self.approved_at is not None and self.reviewed_at is None

    @review_open.inplace.expression
    @classmethod
    def _review_open(cls) -> Any:
        return sa.and_(
            col(cls.needs_review).is_(True), col(cls.approved_at).is_not(None),
            col(cls.reviewed_at).is_(None),
        )  # fmt: skip

    @hybrid_method
    def review_overdue_at(self, now: datetime) -> bool:
        """Owed for longer than break-glass allows (the same rule, from its owner)."""
        return self.review_open() and review_overdue_since(self.approved_at, now)

    @review_overdue_at.inplace.expression
    @classmethod
    def _review_overdue_at(cls, now: datetime) -> Any:
        return sa.and_(cls._review_open(), review_overdue_since(col(cls.approved_at), now))

    @hybrid_method
    def notification_review_due(self, now: datetime) -> bool:
        """A barred notification whose review date has come."""
        return (
            self.notification_barred
            and self.barred_review_at is not None
            and self.barred_review_at <= now
        )

    @notification_review_due.inplace.expression
    @classmethod
    def _notification_review_due(cls, now: datetime) -> Any:
        return sa.and_(col(cls.notification_barred).is_(True), col(cls.barred_review_at) <= now)


class DisclosureRecording(SQLModel, table=True):
    __tablename__ = "disclosure_recording"
    disclosure_id: uuid.UUID = Field(foreign_key="disclosure.id", primary_key=True)
    recording_id: uuid.UUID = Field(foreign_key="recording.id", primary_key=True, index=True)


class DisclosureApproval(SQLModel, table=True):
    """One approval of one revision. Unique per (disclosure, revision, owner) and per
    (disclosure, revision, role): two distinct owners, one privacy and one security."""

    __tablename__ = "disclosure_approval"
    __table_args__ = (
        sa.UniqueConstraint("disclosure_id", "revision", "approver_owner"),
        sa.UniqueConstraint("disclosure_id", "revision", "role"),
    )
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    disclosure_id: uuid.UUID = Field(foreign_key="disclosure.id", index=True)
    revision: int
    approver_id: uuid.UUID = Field(foreign_key="principal.id")
    approver_owner: str = Field(max_length=256)
    role: str = Field(max_length=16)
    recipient_fingerprint: str = Field(max_length=64)
    verification: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    created_at: datetime = _ts()
