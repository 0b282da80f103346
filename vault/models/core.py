"""Metadata tables (SQLModel) and their API shapes.

Families follow ``XBase`` / ``XCreate`` / ``XPublic`` / ``X(table=True)``: routes return
``XPublic`` and never table rows. Times are stored in UTC and always come back timezone-aware,
on SQLite as on PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import field_validator
from sqlmodel import Field, SQLModel

from vault.models._types import UTCDateTime, _ts, utcnow  # noqa: F401


class Role(StrEnum):
    admin = "admin"
    ingest = "ingest"
    engineer = "engineer"
    approver = "approver"
    security = "security"
    privacy = "privacy"
    auditor = "auditor"


class RecordingStatus(StrEnum):
    pending = "pending"
    failed = "failed"
    stored = "stored"
    integrity_failed = "integrity_failed"
    disposing = "disposing"
    disposed = "disposed"


# --- tenants ---------------------------------------------------------------------------------


class TenantBase(SQLModel):
    name: str = Field(min_length=1, max_length=64, regex=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    region: str | None = Field(default=None, max_length=64)


class TenantCreate(TenantBase):
    pass


class TenantPublic(TenantBase):
    id: uuid.UUID
    created_at: datetime


class Tenant(TenantBase, table=True):
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(64), unique=True, nullable=False))
    created_at: datetime = _ts()


# --- principals and keys -------------------------------------------------------------------------


class PrincipalBase(SQLModel):
    name: str = Field(min_length=1, max_length=128)
    role: Role
    owner: str = Field(min_length=3, max_length=256)
    all_tenants: bool = False


class PrincipalCreate(PrincipalBase):
    tenants: list[str] = []


class PrincipalPublic(PrincipalBase):
    id: uuid.UUID
    tenants: list[str]
    created_at: datetime
    revoked_at: datetime | None


class Principal(PrincipalBase, table=True):
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(128), unique=True, nullable=False))
    role: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    created_at: datetime = _ts()
    revoked_at: datetime | None = _ts(nullable=True)


class PrincipalTenant(SQLModel, table=True):
    """Explicit scope: one row per tenant a principal may act on."""

    __tablename__ = "principal_tenant"
    principal_id: uuid.UUID = Field(foreign_key="principal.id", primary_key=True)
    tenant_id: uuid.UUID = Field(foreign_key="tenant.id", primary_key=True)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    principal_id: uuid.UUID = Field(foreign_key="principal.id", index=True)
    # A short public prefix finds the row; the SHA-256 of the whole key is compared in
    # constant time. The key itself is never stored.
    prefix: str = Field(sa_column=sa.Column(sa.String(16), unique=True, nullable=False))
    key_hash: str = Field(max_length=64)
    created_at: datetime = _ts()
    expires_at: datetime | None = _ts(nullable=True)
    revoked_at: datetime | None = _ts(nullable=True)


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

    def active(self, now: datetime) -> bool:
        return self.ended_at is None and self.expires_at > now


class IngestParams(SQLModel):
    """Query parameters of ``POST /v1/recordings`` after parsing."""

    tenant: str
    purposes: list[str]
    call_id: str | None = None
    recorded_at: datetime | None = None

    @field_validator("purposes")
    @classmethod
    def _some_purpose(cls, v: list[str]) -> list[str]:
        cleaned = sorted({p.strip() for p in v if p.strip()})
        if not cleaned:
            raise ValueError("at least one purpose is required")
        return cleaned


# --- keys -----------------------------------------------------------------------------------------


class KekVersion(SQLModel, table=True):
    """KEK versions as the DB knows them: wrapping uses the newest, retirement is recorded."""

    __tablename__ = "kek_version"
    version: int = Field(primary_key=True)
    created_at: datetime = _ts()
    retired_at: datetime | None = _ts(nullable=True)


# --- audit ----------------------------------------------------------------------------------------


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
