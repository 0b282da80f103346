"""``init``: schema, keyring, bucket, KEK bookkeeping and the bootstrap admin. Idempotent."""

from __future__ import annotations

from datetime import datetime

from vault import kek_versions
from vault.context import Context
from vault.db import migrate
from vault.identity import principals


def initialise(ctx: Context, *, now: datetime) -> str | None:
    """Bring everything up to date; return a bootstrap admin key only on the very first run."""
    migrate(ctx.db.engine)
    ctx.store.ensure_bucket()
    kek_versions.record_provider_versions(ctx, now=now)
    with ctx.db.transaction() as session:
        return principals.bootstrap_admin(session, now=now, rng=ctx.rng)
