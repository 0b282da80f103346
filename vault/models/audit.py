"""Audit tables: the events, the Merkle tree over them (stored hashes, size and per-tenant leaf
counts), the signed tree heads, and the legacy chain checkpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from vault.models._types import _ts

# New events take their seq from this sequence on PostgreSQL (no lock: gaps from rollbacks are
# fine); SQLite takes max(seq) + 1 under its one writer lock.
AUDIT_SEQ = sa.Sequence("audit_event_seq", metadata=SQLModel.metadata)


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
    prev_hash: str | None  # legacy chained events only
    hash: str
    # The event's position in the Merkle log; null until the sequencer has taken it in.
    leaf_index: int | None
    # The exact canonical text: the leaf's bytes (leaf hash = SHA-256(0x00 || UTF-8 text)).
    canonical: str


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"
    __table_args__ = (
        sa.Index(
            "ix_audit_event_unsequenced", "seq",
            postgresql_where=sa.text("leaf_index IS NULL"),
            sqlite_where=sa.text("leaf_index IS NULL"),
        ),
    )  # fmt: skip
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
    prev_hash: str | None = Field(default=None, max_length=64)
    hash: str = Field(max_length=64)
    # The exact canonical bytes that were hashed; verification never re-serialises.
    canonical: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    # Set once by the sequencer (the append-only trigger allows exactly NULL -> value).
    leaf_index: int | None = Field(
        default=None, sa_column=sa.Column(sa.BigInteger, nullable=True, unique=True)
    )


class AuditTree(SQLModel, table=True):
    """The one row of tree state; the sequencer locks it to be the single writer."""

    __tablename__ = "audit_tree"
    id: int = Field(default=1, primary_key=True)
    size: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False))
    # The legacy hash chain's head when the log became a Merkle log (NULL: there was none).
    legacy_head_seq: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger))
    legacy_head_hash: str | None = Field(default=None, max_length=64)


class AuditTreeTenant(SQLModel, table=True):
    """Leaves per tenant in the tree as it stands (kept by the sequencer, batch by batch)."""

    __tablename__ = "audit_tree_tenant"
    tenant_key: str = Field(primary_key=True, max_length=36)
    leaves: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False))


class AuditTreeNode(SQLModel, table=True):
    """Every complete subtree's hash, numbered as ``merkle.stored_hash_index`` says."""

    __tablename__ = "audit_tree_node"
    idx: int = Field(sa_column=sa.Column(sa.BigInteger, primary_key=True, autoincrement=False))
    hash: bytes = Field(sa_column=sa.Column(sa.LargeBinary(32), nullable=False))


class AuditTreeHeadPublic(SQLModel):
    id: int
    tree_size: int
    root_hash: str
    created_at: datetime
    # The exact signed text and the hex Ed25519 signature over its UTF-8 bytes.
    statement: str
    signature: str | None
    public_key: str
    object_key: str | None


class AuditTreeHead(SQLModel, table=True):
    __tablename__ = "audit_tree_head"
    id: int | None = Field(default=None, primary_key=True)
    tree_size: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False, unique=True))
    root_hash: str = Field(max_length=64)
    created_at: datetime = _ts()
    public_key: str = Field(max_length=64)
    # NULL while the statement waits for its signature (signed outside the transaction).
    signature: str | None = Field(default=None, max_length=128)
    statement: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    object_key: str | None = Field(default=None, max_length=512)
    version_id: str | None = Field(default=None, max_length=256)


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
    """A legacy chain checkpoint (before the Merkle log); still verified, no longer written."""

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
