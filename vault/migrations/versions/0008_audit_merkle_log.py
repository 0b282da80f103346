"""The audit log becomes an RFC 6962 Merkle log

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26

- ``audit_event``: ``prev_hash`` may be NULL (events after the chain name no previous hash);
  ``leaf_index`` (unique, NULL until sequenced, with a partial index over the unsequenced);
  on PostgreSQL new seqs come from the sequence ``audit_event_seq`` (no append lock). The
  append-only trigger now allows exactly one change: ``leaf_index`` from NULL to a value.
- ``audit_tree`` (one row: size and the legacy chain head), ``audit_tree_tenant`` (leaves per
  tenant), ``audit_tree_node`` (stored subtree hashes), ``audit_tree_head`` (signed tree heads).

Existing events keep their bytes: the sequencer takes them in first, in seq order.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import vault.models

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_PG_APPEND_ONLY = """
CREATE OR REPLACE FUNCTION callvault_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND OLD.leaf_index IS NULL AND NEW.leaf_index IS NOT NULL
     AND (to_jsonb(NEW) - 'leaf_index') = (to_jsonb(OLD) - 'leaf_index') THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'audit_event is append-only';
END $$
"""
_PG_APPEND_ONLY_OLD = (
    "CREATE OR REPLACE FUNCTION callvault_audit_append_only() RETURNS trigger LANGUAGE plpgsql "
    "AS $$ BEGIN RAISE EXCEPTION 'audit_event is append-only'; END $$"
)
_SQLITE_COLUMNS = ("seq", "chain_id", "ts", "actor", "action", "outcome", "tenant_id", "target",
                   "purpose", "grant_id", "prev_hash", "hash", "canonical")  # fmt: skip
_SQLITE_SAME = " AND ".join(f"NEW.{c} IS OLD.{c}" for c in _SQLITE_COLUMNS)


def _sqlite_triggers(*, sequenced_update: bool) -> None:
    when = (
        f" WHEN NOT (OLD.leaf_index IS NULL AND NEW.leaf_index IS NOT NULL AND {_SQLITE_SAME})"
        if sequenced_update
        else ""
    )
    op.execute(
        f"CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event{when} "
        "BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END"
    )
    op.execute(
        "CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event "
        "BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END"
    )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if not postgres:  # the table is rebuilt below, and its triggers with it
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_delete")
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.alter_column(
            "prev_hash", existing_type=sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True
        )
        batch_op.add_column(sa.Column("leaf_index", sa.BigInteger(), nullable=True))
        batch_op.create_unique_constraint("uq_audit_event_leaf_index", ["leaf_index"])
    op.create_index(
        "ix_audit_event_unsequenced", "audit_event", ["seq"],
        postgresql_where=sa.text("leaf_index IS NULL"), sqlite_where=sa.text("leaf_index IS NULL"),
    )  # fmt: skip
    if postgres:
        op.execute("CREATE SEQUENCE audit_event_seq")
        op.execute(
            "SELECT setval('audit_event_seq', COALESCE(MAX(seq), 0) + 1, false) FROM audit_event"
        )
        op.execute(_PG_APPEND_ONLY)
    else:
        _sqlite_triggers(sequenced_update=True)

    op.create_table(
        "audit_tree",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("legacy_head_seq", sa.BigInteger(), nullable=True),
        sa.Column("legacy_head_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "audit_tree_tenant",
        sa.Column("tenant_key", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("leaves", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_key"),
    )
    op.create_table(
        "audit_tree_node",
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("idx"),
    )
    op.create_table(
        "audit_tree_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", vault.models._types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("public_key", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("signature", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("statement", sa.Text(), nullable=False),
        sa.Column("object_key", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
        sa.Column("version_id", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tree_size"),
    )
    # The chain's head as it stands now (every signed tree head records it): the newest chained
    # event; events without prev_hash are only there after a downgrade and upgrade again.
    op.execute(
        "INSERT INTO audit_tree (id, size, legacy_head_seq, legacy_head_hash) "
        "SELECT 1, 0, e.seq, e.hash FROM (SELECT 1 AS one) AS x LEFT JOIN audit_event e "
        "ON e.seq = (SELECT MAX(seq) FROM audit_event WHERE prev_hash IS NOT NULL)"
    )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.drop_table("audit_tree_head")
    op.drop_table("audit_tree_node")
    op.drop_table("audit_tree_tenant")
    op.drop_table("audit_tree")
    op.drop_index("ix_audit_event_unsequenced", table_name="audit_event")
    if postgres:
        op.execute(_PG_APPEND_ONLY_OLD)
        op.execute("DROP SEQUENCE audit_event_seq")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_delete")
    # prev_hash stays nullable: events written in the Merkle era have none, and a downgrade
    # keeps every event (the older chain check then names the first of them, truthfully).
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_constraint("uq_audit_event_leaf_index", type_="unique")
        batch_op.drop_column("leaf_index")
    if not postgres:
        _sqlite_triggers(sequenced_update=False)
