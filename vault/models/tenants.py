"""Tenant-level tables: four-eyes changes, the approved tenant policy, and offboarding.

A :class:`TenantChange` is what an admin proposes and a privacy principal of another owner
approves (offboarding, policy restrictions, authorisations); only an approved change has any
effect. The tenant's status (``vault.models.Tenant.status``) mirrors its offboarding.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from vault.models._types import _ts


class TenantStatus(StrEnum):
    active = "active"
    offboarding = "offboarding"  # approved: ingest refused, erasure under way
    deferred = "deferred"  # everything unheld is erased (first receipt); legal holds keep the rest
    offboarded = "offboarded"  # nothing left, the tenant's key deleted, final receipt signed


class ChangeKind(StrEnum):
    offboard = "offboard"
    policy = "policy"
    authorisations = "authorisations"


class ChangeStatus(StrEnum):
    pending = "pending"
    approved = "approved"
    superseded = "superseded"  # a newer proposal of the same kind replaced it


class TenantChange(SQLModel, table=True):
    __tablename__ = "tenant_change"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    tenant_id: uuid.UUID = Field(foreign_key="tenant.id", index=True)
    kind: str = Field(max_length=16)
    status: str = Field(max_length=16)
    payload: str = Field(sa_column=sa.Column(sa.Text, nullable=False))  # canonical JSON
    reason: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    proposed_by: str = Field(max_length=64)  # audit names and owner pseudonyms only
    proposed_owner: str = Field(max_length=64)
    proposed_at: datetime = _ts()
    approved_by: str | None = Field(default=None, max_length=64)
    approved_owner: str | None = Field(default=None, max_length=64)
    approved_at: datetime | None = _ts(nullable=True)


class TenantChangePublic(SQLModel):
    id: uuid.UUID
    tenant: str
    kind: ChangeKind
    status: ChangeStatus
    payload: dict[str, Any]
    reason: str
    proposed_by: str
    proposed_at: datetime
    approved_by: str | None
    approved_at: datetime | None
    dry_run: dict[str, Any] | None = None


class ChangeApprove(SQLModel):
    change_id: uuid.UUID
    comment: str = Field(default="", max_length=2000)


class TenantPolicy(SQLModel, table=True):
    """The approved restrictions and authorisations of one tenant (JSON, validated on the way
    in); a missing row means none."""

    __tablename__ = "tenant_policy"
    tenant_id: uuid.UUID = Field(foreign_key="tenant.id", primary_key=True)
    restrictions: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    restrictions_change: uuid.UUID | None = None
    restrictions_approved_at: datetime | None = _ts(nullable=True)
    authorisations: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    authorisations_change: uuid.UUID | None = None
    authorisations_approved_at: datetime | None = _ts(nullable=True)


class TenantPolicyPublic(SQLModel):
    tenant: str
    restrictions: dict[str, Any]
    restrictions_approved_at: datetime | None
    authorisations: dict[str, Any]
    authorisations_approved_at: datetime | None
    effective: dict[str, Any]


class TenantOffboarding(SQLModel, table=True):
    __tablename__ = "tenant_offboarding"
    tenant_id: uuid.UUID = Field(foreign_key="tenant.id", primary_key=True)
    change_id: uuid.UUID = Field(foreign_key="tenant_change.id")
    status: str = Field(max_length=16)  # a TenantStatus other than active
    approved_at: datetime = _ts()
    due_at: datetime = _ts(index=True)
    key_deleted_at: datetime | None = _ts(nullable=True)
    completed_at: datetime | None = _ts(nullable=True)


class OffboardingErasure(SQLModel, table=True):
    """An erasure request the offboarding opened (one per batch of unheld recordings)."""

    __tablename__ = "offboarding_erasure"
    request_id: uuid.UUID = Field(foreign_key="erasure_request.id", primary_key=True)
    tenant_id: uuid.UUID = Field(foreign_key="tenant.id", index=True)


class OffboardingReceipt(SQLModel, table=True):
    __tablename__ = "offboarding_receipt"
    tenant_id: uuid.UUID = Field(foreign_key="tenant.id", primary_key=True)
    seq: int = Field(primary_key=True)
    created_at: datetime = _ts()
    document: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    signature: str | None = Field(default=None, max_length=128)


class OffboardingPublic(SQLModel):
    tenant: str
    status: TenantStatus
    approved_at: datetime
    due_at: datetime
    key_deleted_at: datetime | None
    completed_at: datetime | None
    erasure_requests: list[uuid.UUID]
    deferred: list[dict[str, Any]]  # {"recording_id", "holds"}
    receipts: list[dict[str, Any]]  # {"document", "signature"}, signed ones only
