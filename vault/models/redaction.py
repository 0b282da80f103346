"""Redaction tables: queued redaction runs and the signed manifests of derivatives."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import ConfigDict, field_validator
from sqlmodel import Field, SQLModel, col

from vault.models._types import _ts
from vault.validation import Text


class RedactionStatus(StrEnum):
    queued = "queued"
    running = "running"
    verified = "verified"  # the derivative is stored, with its signed manifest
    failed = "failed"  # nothing was kept; failed_check says why


class RedactionTrigger(StrEnum):
    request = "request"  # POST /v1/recordings/{id}/redactions
    expiry = "expiry"  # on_expiry = "redact", by the dispose job


class RedactionCreate(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    profile: Text = Field(min_length=1, max_length=32)
    purposes: list[Text] = Field(min_length=1, max_length=16)

    @field_validator("purposes")
    @classmethod
    def _short(cls, names: list[str]) -> list[str]:
        if any(not 1 <= len(n) <= 32 for n in names):
            raise ValueError("each purpose is 1-32 characters")
        return names


class RedactionPublic(SQLModel):
    id: uuid.UUID
    recording_id: uuid.UUID
    profile: str
    purposes: list[str]
    trigger: RedactionTrigger
    status: RedactionStatus
    progress: int  # percent, while running
    failed_check: str | None
    derivative_id: uuid.UUID | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class Redaction(SQLModel, table=True):
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    recording_id: uuid.UUID = Field(foreign_key="recording.id", index=True)
    tenant_id: uuid.UUID = Field(foreign_key="tenant.id", index=True)
    profile: str = Field(max_length=32)
    purposes: str = Field(sa_column=sa.Column(sa.Text, nullable=False))  # JSON list of names
    trigger: str = Field(max_length=16)
    status: str = Field(sa_column=sa.Column(sa.String(16), nullable=False, index=True))
    progress: int = 0
    failed_check: str | None = Field(default=None, max_length=64)
    derivative_id: uuid.UUID | None = Field(default=None, foreign_key="recording.id")
    requested_by: uuid.UUID | None = Field(default=None, foreign_key="principal.id")
    attempts: int = 0
    # A running redaction whose lease ran out was abandoned by a crashed worker: queued again.
    lease_until: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()
    started_at: datetime | None = _ts(nullable=True)
    finished_at: datetime | None = _ts(nullable=True)

    def purpose_names(self) -> list[str]:
        names: Any = json.loads(self.purposes)
        return [str(n) for n in names]


class Manifest(SQLModel, table=True):
    """A derivative's signed manifest: a signed document, type ``callvault.redaction-manifest``."""

    recording_id: uuid.UUID = Field(foreign_key="recording.id", primary_key=True)
    redaction_id: uuid.UUID = Field(foreign_key="redaction.id", index=True)
    canonical: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    signature: str = Field(max_length=128)
    created_at: datetime = _ts()


class ManifestPublic(SQLModel):
    recording_id: uuid.UUID
    manifest: dict[str, Any]
    canonical: str
    signature: str


def awaiting_expiry_redaction(recording_id: Any) -> sa.ColumnElement[bool]:
    """SQL: an on-expiry redaction of this recording is queued or running (disposal waits)."""
    return sa.exists().where(
        Redaction.recording_id == recording_id,
        Redaction.trigger == RedactionTrigger.expiry.value,
        col(Redaction.status).in_([RedactionStatus.queued.value, RedactionStatus.running.value]),
    )
