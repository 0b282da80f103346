"""Exports: a recording re-encrypted to a third party's ``age`` key, as a one-time download.

Two domains hand media out of the vault this way (issue #15): a legal disclosure to an authority
and a transcription hand-off to a sub-processor. The row is the download's whole state: who it
is for (the key's fingerprint), how long it lives, the token's hash (never the token), how far
the transfer got (``served_to``: contiguous bytes from 0 delivered so far, so a Range resume can
finish it) and when it completed, was revoked or had its object deleted.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from vault.models._types import _ts


class ExportKind(StrEnum):
    disclosure = "disclosure"
    handoff = "handoff"


class ExportBase(SQLModel):
    kind: str = Field(max_length=16)
    subject_id: uuid.UUID = Field(index=True)  # the disclosure or hand-off it belongs to
    recording_id: uuid.UUID = Field(foreign_key="recording.id", index=True)
    tenant_id: uuid.UUID = Field(foreign_key="tenant.id")
    recipient_fingerprint: str = Field(max_length=64)
    size: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))  # the age file
    sha256: str = Field(max_length=64)  # of the age file
    plaintext_sha256: str = Field(max_length=64)
    created_at: datetime = _ts()
    expires_at: datetime = _ts(index=True)
    served_to: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False))
    bytes_served: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False))
    completed_at: datetime | None = _ts(nullable=True)
    revoked_at: datetime | None = _ts(nullable=True)
    revoke_reason: str | None = Field(default=None, max_length=64)
    deleted_at: datetime | None = _ts(nullable=True)


class ExportPublic(ExportBase):
    id: uuid.UUID


class Export(ExportBase, table=True):
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    # The recording's region (None: home): the age file stays where its media lives.
    region: str | None = Field(default=None, max_length=64)
    object_key: str = Field(max_length=512)
    version_id: str | None = Field(default=None, max_length=256)
    token_hash: str = Field(max_length=64)
