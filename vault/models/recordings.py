"""Recording tables: the recording (its status is owned by :mod:`vault.lifecycle`) and its
purposes, with the one rule "purpose active" usable in Python and in SQL."""

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


class RecordingStatus(StrEnum):
    pending = "pending"
    failed = "failed"
    stored = "stored"
    integrity_failed = "integrity_failed"
    disposing = "disposing"
    disposed = "disposed"


# --- recordings ----------------------------------------------------------------------------------


class PurposePublic(SQLModel):
    purpose: str
    expires_at: datetime
    ended_at: datetime | None
    active: bool


class RecordingPublic(SQLModel):
    id: uuid.UUID
    tenant: str
    call_id: str | None
    status: RecordingStatus
    content_type: str
    size: int | None
    sha256: str | None
    ciphertext_sha256: str | None
    recorded_at: datetime
    ingested_at: datetime
    purposes: list[PurposePublic]
    holds: list[uuid.UUID] = []
    parent_id: uuid.UUID | None = None
    derivatives: list[uuid.UUID] = []
    disposed_at: datetime | None = None
    disposal_reason: str | None = None
    restricted: bool = False  # an active restriction of processing blocks new access


class RecordingPage(SQLModel):
    items: list[RecordingPublic]
    next_cursor: str | None


class Recording(SQLModel, table=True):
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    tenant_id: uuid.UUID = Field(foreign_key="tenant.id", index=True)
    # Cleared on disposal: it identifies a call, and the tombstone must not.
    call_id: str | None = Field(default=None, max_length=256, index=True)
    status: str = Field(sa_column=sa.Column(sa.String(20), nullable=False, index=True))
    content_type: str = Field(max_length=255)
    size: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger))
    ciphertext_size: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger))
    sha256: str | None = Field(default=None, max_length=64)
    ciphertext_sha256: str | None = Field(default=None, max_length=64)
    object_key: str = Field(max_length=512)
    version_id: str | None = Field(default=None, max_length=256)
    wrapped_dek: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    kek_version: int | None = Field(default=None, index=True)
    # Where the media and the KEK live (vault.context.Context.region_of): None is the home
    # region. Fixed at ingest, so that no later setting can orphan the object.
    region: str | None = Field(default=None, max_length=64)
    recorded_at: datetime = _ts(index=True)
    ingested_at: datetime = _ts()
    updated_at: datetime = _ts()
    created_by: uuid.UUID | None = Field(default=None, foreign_key="principal.id")
    parent_id: uuid.UUID | None = Field(default=None, foreign_key="recording.id")
    disposed_at: datetime | None = _ts(nullable=True)
    dek_destroyed_at: datetime | None = _ts(nullable=True)
    disposal_reason: str | None = Field(default=None, max_length=256)


class RecordingPurpose(SQLModel, table=True):
    __tablename__ = "recording_purpose"
    recording_id: uuid.UUID = Field(foreign_key="recording.id", primary_key=True)
    purpose: str = Field(primary_key=True, max_length=32)
    expires_at: datetime = _ts(index=True)
    ended_at: datetime | None = _ts(nullable=True)
    ended_reason: str | None = Field(default=None, max_length=256)

    model_config = ConfigDict(ignored_types=(hybrid_method,))  # type: ignore[assignment]

    @hybrid_method
    def active_at(self, now: datetime) -> bool:
        """The purpose is active: neither ended early nor past its retention."""
        return self.ended_at is None and self.expires_at > now

    @active_at.inplace.expression
    @classmethod
    def _active_at(cls, now: datetime) -> Any:
        return sa.and_(col(cls.ended_at).is_(None), col(cls.expires_at) > now)
