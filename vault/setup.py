"""``init``: schema, keyring, bucket, KEK bookkeeping and the bootstrap admin. Idempotent."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, select

from crypto.keys.base import KeyProvider
from vault.context import Context
from vault.db import migrate
from vault.identity import principals
from vault.models import KekVersion


def sync_kek_versions(session: Session, *, keys: KeyProvider, now: datetime) -> None:
    """Record the provider's live KEK versions that the DB does not know yet."""
    known = {k.version for k in session.exec(select(KekVersion)).all()}
    for version in keys.live_versions():
        if version not in known:
            created = getattr(keys, "created_at", None)
            try:
                created_at = created(version) if created else now
            except Exception:  # a provider without timestamps: the DB's first sighting counts
                created_at = now
            session.add(KekVersion(version=version, created_at=created_at))


def initialise(ctx: Context, *, now: datetime) -> str | None:
    """Bring everything up to date; return a bootstrap admin key only on the very first run."""
    migrate(ctx.db.engine)
    ctx.store.ensure_bucket()
    with ctx.db.transaction() as session:
        sync_kek_versions(session, keys=ctx.keys, now=now)
        return principals.bootstrap_admin(session, now=now, rng=ctx.rng)
