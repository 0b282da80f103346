"""``init``: schema, keyring, bucket, KEK bookkeeping and the bootstrap admin. Idempotent."""

from __future__ import annotations

from datetime import datetime

from vault import kek_versions
from vault.context import Context
from vault.db import migrate
from vault.identity import principals
from vault.identity.owners import owner_of, owner_refs


def initialise(ctx: Context, *, now: datetime) -> str | None:
    """Bring everything up to date; return a bootstrap admin key only on the very first run."""
    migrate(ctx.db.engine, owner_refs=lambda owners: owner_refs(ctx.keys, owners))
    ctx.store.ensure_bucket()
    kek_versions.record_provider_versions(ctx, now=now)
    owner = owner_of(ctx.keys, principals.BOOTSTRAP_OWNER)  # before the transaction
    with ctx.db.transaction() as session:
        return principals.bootstrap_admin(session, owner=owner, now=now, rng=ctx.rng)
