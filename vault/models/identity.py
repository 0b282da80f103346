"""Identity tables: tenants, principals (with their scope) and API keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from vault.models._types import _ts
from vault.validation import Text


class Role(StrEnum):
    admin = "admin"
    ingest = "ingest"
    engineer = "engineer"
    approver = "approver"
    security = "security"
    privacy = "privacy"
    auditor = "auditor"
    monitor = "monitor"  # scrapes /metrics, nothing else
    subprocessor = "subprocessor"  # redeems its own hand-offs, nothing else


# --- tenants ---------------------------------------------------------------------------------


class TenantBase(SQLModel):
    name: str = Field(min_length=1, max_length=64, regex=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    region: str | None = Field(default=None, max_length=64)


class TenantCreate(TenantBase):
    region: Text | None = Field(default=None, max_length=64)


class TenantPublic(TenantBase):
    id: uuid.UUID
    created_at: datetime
    # active | offboarding | deferred | offboarded (vault.models.tenants.TenantStatus)
    status: str = "active"


class Tenant(TenantBase, table=True):
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(64), unique=True, nullable=False))
    created_at: datetime = _ts()
    status: str = Field(
        default="active",
        sa_column=sa.Column(sa.String(16), nullable=False, server_default="active"),
    )


# --- principals and keys -------------------------------------------------------------------------


class PrincipalBase(SQLModel):
    name: str = Field(min_length=1, max_length=128)
    role: Role
    # The owner's e-mail or service id: kept here only, and cleared on request
    # (``principal clear-owner``); everything else holds ``owner_ref``.
    owner: str | None = Field(default=None, max_length=256)
    all_tenants: bool = False
    # Where the principal reads from (vault.residency); None: the home region.
    region: str | None = Field(default=None, max_length=64)


class PrincipalPublic(PrincipalBase):
    id: uuid.UUID
    owner_ref: str
    tenants: list[str]
    created_at: datetime
    revoked_at: datetime | None


class Principal(PrincipalBase, table=True):
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(128), unique=True, nullable=False))
    role: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    # Keyed pseudonym of the owner (vault.identity.owners): what four-eyes and the audit chain use.
    owner_ref: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, index=True))
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
