"""The migrations build exactly the schema the models describe, on both databases: a model
changed without its migration (or the reverse) fails here, not in production."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import vault.models  # noqa: F401  (registers every table)
from vault.context import Context


def _relevant(diff: object) -> bool:
    # Server-side defaults and comments are not modelled; types, columns, nullability,
    # tables, indexes and constraints are.
    kind = diff[0][0] if isinstance(diff, list) else diff[0]  # type: ignore[index]
    return kind not in {"modify_default", "modify_comment"}


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_the_migrated_schema_is_the_models_schema(
    make_ctx: Callable[..., Context], db: str
) -> None:
    ctx = make_ctx(db=db)
    with ctx.db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    relevant = [d for d in diffs if _relevant(d)]
    assert relevant == [], "\n".join(map(str, relevant))
