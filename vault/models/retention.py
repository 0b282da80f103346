"""Retention tables: legal holds and their memberships, erasure requests and their items."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from vault.models._types import _ts
from vault.validation import MultilineText, Text, Timestamp


class ErasureStatus(StrEnum):
    pending = "pending"  # accepted; the next erasure run picks it up
    shredding = "shredding"  # DEKs and media destroyed or being destroyed
    awaiting_kek = "awaiting_kek"  # waiting for the wrapping KEK versions to be retired
    deferred = "deferred"  # a legal hold blocks part of it
    complete = "complete"


# --- legal holds ------------------------------------------------------------------------------


class LegalHoldCreate(SQLModel):
    case_ref: Text = Field(max_length=256)
    reason: MultilineText = Field(max_length=2000)
    recording_ids: list[uuid.UUID] = []
    tenant: Text | None = Field(default=None, max_length=64)
    call_id: Text | None = Field(default=None, max_length=256)
    recorded_from: Timestamp | None = None
    recorded_to: Timestamp | None = None


class LegalHoldRelease(SQLModel):
    reason: MultilineText = Field(max_length=2000)


class LegalHoldPublic(SQLModel):
    id: uuid.UUID
    case_ref: str
    reason: str
    tenant_id: uuid.UUID | None
    recorded_from: datetime | None
    recorded_to: datetime | None
    created_at: datetime
    released_at: datetime | None
    recording_ids: list[uuid.UUID]


class LegalHold(SQLModel, table=True):
    __tablename__ = "legal_hold"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    case_ref: str = Field(max_length=256)
    reason: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    created_by: str = Field(max_length=64)
    created_at: datetime = _ts()
    released_at: datetime | None = _ts(nullable=True, index=True)
    released_by: str | None = Field(default=None, max_length=64)
    release_reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    # Selector for recordings ingested later; explicit ids live only as memberships.
    tenant_id: uuid.UUID | None = Field(default=None, foreign_key="tenant.id")
    call_id: str | None = Field(default=None, max_length=256)
    recorded_from: datetime | None = _ts(nullable=True)
    recorded_to: datetime | None = _ts(nullable=True)
    selects_future: bool = False


class HoldMembership(SQLModel, table=True):
    __tablename__ = "hold_membership"
    hold_id: uuid.UUID = Field(foreign_key="legal_hold.id", primary_key=True)
    recording_id: uuid.UUID = Field(foreign_key="recording.id", primary_key=True, index=True)
    created_at: datetime = _ts()


# --- erasure ----------------------------------------------------------------------------------


class ErasureRequestCreate(SQLModel):
    tenant: Text | None = Field(default=None, max_length=64)
    call_id: Text | None = Field(default=None, max_length=256)
    recording_ids: list[uuid.UUID] = []
    reason: MultilineText = Field(default="data subject deletion request", max_length=2000)


class ErasureRequestPublic(SQLModel):
    id: uuid.UUID
    status: ErasureStatus
    created_at: datetime
    due_at: datetime
    completed_at: datetime | None
    recordings: int
    deferred_by: list[uuid.UUID]
    receipt: dict | None = None
    receipt_signature: str | None = None


class ErasureRequest(SQLModel, table=True):
    __tablename__ = "erasure_request"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    status: str = Field(sa_column=sa.Column(sa.String(16), nullable=False, index=True))
    tenant_id: uuid.UUID | None = Field(default=None, foreign_key="tenant.id")
    # The selector's call id is needed to find recordings, and is cleared once resolved.
    call_id: str | None = Field(default=None, max_length=256)
    reason: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    created_by: str = Field(max_length=64)
    created_at: datetime = _ts()
    due_at: datetime = _ts(index=True)
    completed_at: datetime | None = _ts(nullable=True)
    receipt: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    receipt_signature: str | None = Field(default=None, max_length=128)


class ErasureItem(SQLModel, table=True):
    """One recording (or derivative) an erasure request covers, with its destruction times."""

    __tablename__ = "erasure_item"
    request_id: uuid.UUID = Field(foreign_key="erasure_request.id", primary_key=True)
    recording_id: uuid.UUID = Field(foreign_key="recording.id", primary_key=True, index=True)
    deferred_by: uuid.UUID | None = Field(default=None)
    ciphertext_sha256: str | None = Field(default=None, max_length=64)
    kek_version: int | None = None
    dek_destroyed_at: datetime | None = _ts(nullable=True)
    media_destroyed_at: datetime | None = _ts(nullable=True)
    kek_retired_at: datetime | None = _ts(nullable=True)


def under_erasure(recording_id: Any) -> sa.ColumnElement[bool]:
    """SQL: an erasure request that is not complete covers this recording."""
    return sa.exists().where(
        ErasureItem.recording_id == recording_id,
        ErasureItem.request_id == ErasureRequest.id,
        ErasureRequest.status != ErasureStatus.complete.value,
    )


# --- signed retention records ------------------------------------------------------------------


class RetentionRecord(SQLModel, table=True):
    """A signed erasure receipt or disposal record, waiting for (or done with) its export.

    ``restore reconcile`` re-applies these from the store after a restore from an older backup:
    the copy in the store is what counts there, this row only tracks signing and export.
    """

    __tablename__ = "retention_record"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)  # receipts: request id
    kind: str = Field(max_length=24)
    created_at: datetime = _ts(index=True)
    document: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    signature: str | None = Field(default=None, max_length=128)
    object_key: str | None = Field(default=None, max_length=512)
    version_id: str | None = Field(default=None, max_length=256)
