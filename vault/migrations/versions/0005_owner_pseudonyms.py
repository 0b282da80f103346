"""Owner identity becomes a keyed pseudonym everywhere but the principal row

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

- ``principal.owner_ref``: HMAC-SHA256 of the owner under the provider's pseudonym key (see
  :mod:`vault.identity.owners`); ``principal.owner`` (the e-mail) may now be cleared (NULL).
- ``access_request.requester_owner``, ``review.reviewer_owner`` and ``access_grant.owner`` held
  the owner's e-mail for four-eyes; they now hold the pseudonym of the principal they name.

The pseudonyms come from the key provider, which a migration cannot reach under its transaction:
:func:`vault.db.migrate` computes them beforehand and passes them in as ``owner_refs``. Audit
events already written keep what they hold (the chain is append-only; README says so).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Each access table's owner column and the principal column it was copied from.
_COPIES = (
    ("access_request", "requester_owner", "requester_id"),
    ("review", "reviewer_owner", "reviewer_id"),
    ("access_grant", "owner", "principal_id"),
)


def _copy_from_principal(value_column: str) -> None:
    principal = sa.table("principal", sa.column("id"), sa.column(value_column))
    for name, column, principal_id in _COPIES:
        table = sa.table(name, sa.column(column), sa.column(principal_id))
        value = (
            sa.select(principal.c[value_column])
            .where(principal.c.id == table.c[principal_id])
            .scalar_subquery()
        )
        op.execute(table.update().values({column: value}))


def upgrade() -> None:
    refs: dict[str, str] = context.config.attributes.get("owner_refs") or {}
    with op.batch_alter_table("principal", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_ref", sa.String(length=64), nullable=True))
    conn = op.get_bind()
    principal = sa.table("principal", sa.column("id"), sa.column("owner"), sa.column("owner_ref"))
    owners = conn.execute(sa.select(principal.c.owner).distinct()).scalars().all()
    missing = [o for o in owners if o not in refs]
    if missing:
        raise RuntimeError(
            f"{len(missing)} principal owner(s) need a pseudonym from the key provider: "
            "upgrade with `callvault init`, which computes them"
        )
    for owner in owners:
        conn.execute(
            principal.update().where(principal.c.owner == owner).values(owner_ref=refs[owner])
        )
    _copy_from_principal("owner_ref")
    with op.batch_alter_table("principal", schema=None) as batch_op:
        batch_op.alter_column("owner_ref", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("owner", existing_type=sa.String(length=256), nullable=True)
        batch_op.create_index(batch_op.f("ix_principal_owner_ref"), ["owner_ref"], unique=False)


def downgrade() -> None:
    conn = op.get_bind()
    cleared = conn.execute(sa.text("SELECT count(*) FROM principal WHERE owner IS NULL")).scalar()
    if cleared:
        raise RuntimeError(f"{cleared} principal owner(s) were cleared; cannot downgrade past 0005")
    _copy_from_principal("owner")
    with op.batch_alter_table("principal", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_principal_owner_ref"))
        batch_op.alter_column("owner", existing_type=sa.String(length=256), nullable=False)
        batch_op.drop_column("owner_ref")
