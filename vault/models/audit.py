"""Audit tables: the hash-chained events and the signed checkpoints over their head."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from vault.models._types import _ts


class AuditEventPublic(SQLModel):
    seq: int
    chain_id: str
    ts: datetime
    actor: str | None
    action: str
    outcome: str
    tenant_id: uuid.UUID | None
    target: str | None
    purpose: str | None
    grant_id: uuid.UUID | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"
    seq: int = Field(sa_column=sa.Column(sa.BigInteger, primary_key=True, autoincrement=False))
    chain_id: str = Field(max_length=64)
    ts: datetime = _ts()
    actor: str | None = Field(default=None, max_length=64)
    action: str = Field(max_length=64, index=True)
    outcome: str = Field(max_length=16)
    tenant_id: uuid.UUID | None = Field(default=None, index=True)
    target: str | None = Field(default=None, max_length=64, index=True)
    purpose: str | None = Field(default=None, max_length=32)
    grant_id: uuid.UUID | None = Field(default=None)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)
    # The exact canonical bytes that were hashed; verification never re-serialises.
    canonical: str = Field(sa_column=sa.Column(sa.Text, nullable=False))


class AuditCheckpointPublic(SQLModel):
    id: int
    chain_id: str
    head_seq: int
    head_hash: str
    created_at: datetime
    public_key: str
    signature: str | None
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
    # NULL while the statement waits for its signature (signed outside the transaction).
    signature: str | None = Field(default=None, max_length=128)
    statement: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    object_key: str | None = Field(default=None, max_length=512)
    version_id: str | None = Field(default=None, max_length=256)
