"""KEK versions as the database knows them, and the commit of a newly wrapped DEK.

The ``kek_version`` table is the truth: ``retiring_at`` marks a version about to be destroyed,
``retired_at`` records its destruction. One lock is shared by wrapping and retiring (see
:mod:`vault.kek`): a transaction-level advisory lock on PostgreSQL, taken *shared* by the
commit of a new wrap and *exclusive* by retirement; on SQLite every write transaction already
starts with ``BEGIN IMMEDIATE``. A provider version the DB does not know yet is *adopted*.

Regions: each region's key provider numbers its own versions, so every function takes the region
key: ``None`` (the home region) is ``kek_version`` as before regions existed, any other region's
rows are in ``region_kek_version`` (:func:`table`, :func:`in_region`). One lock serves every
region: retirement is rare and short.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import sqlalchemy as sa
from sqlmodel import Session, col, select

from crypto.keys.base import WrappedKey
from vault import audit
from vault.context import Context
from vault.db import is_postgres
from vault.errors import ConflictError, KeyProviderUnavailableError, MisconfiguredError
from vault.leases import dialect, inserted
from vault.models import KekVersion, RegionKekVersion
from vault.tags import AuditAction

__all__ = [
    "adopt", "get", "in_region", "insert_version", "is_live", "lock", "newest_version",
    "provider_versions", "record_provider_versions", "region_detail", "store_new_dek", "table",
]  # fmt: skip

log = logging.getLogger(__name__)

T = TypeVar("T")

# "cvkek" in ASCII: the advisory lock shared by wrapping (shared mode) and retiring (exclusive).
KEK_LOCK_KEY = 0x63766B656B
WRAP_ATTEMPTS = 3
SYNC_ACTOR = "system:kek-sync"


def lock(session: Session, *, exclusive: bool) -> None:
    if is_postgres(session):
        fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        session.exec(sa.text(f"SELECT {fn}(:k)"), params={"k": KEK_LOCK_KEY})
    else:
        session.connection()  # begins the transaction: BEGIN IMMEDIATE takes the write lock


# --- versions as the DB knows them ------------------------------------------------------------


Version = KekVersion | RegionKekVersion


def table(region: str | None) -> type[KekVersion] | type[RegionKekVersion]:
    """The table of the region's versions."""
    return KekVersion if region is None else RegionKekVersion


def in_region(region: str | None) -> sa.ColumnElement[bool]:
    """The filter to add to every query of :func:`table` (the region's own rows)."""
    return sa.true() if region is None else col(RegionKekVersion.region) == region


def newest_version(session: Session, region: str | None = None) -> int | None:
    """The newest KEK version of the region recorded in the DB and not retired."""
    model = table(region)
    return session.exec(
        select(sa.func.max(model.version)).where(col(model.retired_at).is_(None), in_region(region))
    ).one()


def get(session: Session, version: int, region: str | None = None) -> Version | None:
    ident: object = version if region is None else (region, version)
    return session.get(table(region), ident, populate_existing=True)


def is_live(session: Session, version: int, region: str | None = None) -> bool:
    row = get(session, version, region)
    return row is not None and row.retiring_at is None and row.retired_at is None


def insert_version(
    session: Session, version: int, created_at: datetime, region: str | None = None
) -> bool:
    """Record a version unless it is already known; True if this call recorded it."""
    model = table(region)
    row: dict[str, object] = {"version": version, "created_at": created_at, "retired_at": None}
    if region is not None:
        row["region"] = region
    insert = dialect(session).insert(model).values(**row).on_conflict_do_nothing()
    return inserted(session, insert.returning(model.version))  # type: ignore[arg-type]


def provider_versions(
    ctx: Context, now: datetime, region: str | None = None
) -> dict[int, datetime]:
    """The provider's live versions and their creation times (provider calls: no transaction)."""
    keys = ctx.keys_for(region)
    out = {}
    for version in keys.live_versions():
        try:
            stamp = keys.created_at(version)
        except KeyProviderUnavailableError:  # no timestamp: the DB's first sighting counts
            stamp = now
        out[version] = min(stamp, now)
    return out


def region_detail(ctx: Context, region: str | None) -> dict[str, str]:
    """Audit details naming a region other than the home one (home events stay as they were)."""
    return {} if region is None else {"region": ctx.region_name(region)}


def adopt(
    session: Session,
    live: dict[int, datetime],
    *,
    now: datetime,
    audited: bool = True,
    region: str | None = None,
    details: dict[str, str] | None = None,
) -> list[int]:
    """Record provider versions the DB does not know yet; return the versions rotated to.

    With an empty table this is first-time bookkeeping and nothing is audited. Otherwise a new
    version means a rotation happened whose DB row was never written (a crash, or a rotation
    by another process), and recording it is that rotation's audited event: exactly one
    ``kek.rotate`` per version, by whoever records it.
    """
    known = set(session.exec(select(table(region).version).where(in_region(region))).all())
    adopted = []
    for version in sorted(set(live) - known):
        if not insert_version(session, version, live[version], region):
            continue
        if known and audited:
            audit.record(
                session, action=AuditAction.kek_rotate, actor=SYNC_ACTOR, now=now,
                details={"version": version, "previous": max(known), "adopted": True,
                         **(details or {})},
            )  # fmt: skip
            adopted.append(version)
        known.add(version)
    return adopted


def record_provider_versions(
    ctx: Context, *, now: datetime, audited: bool = True, region: str | None = None
) -> list[int]:
    """Adopt every provider version the DB does not know yet (``init`` and the cycle)."""
    live = provider_versions(ctx, now, region)
    with ctx.db.transaction() as session:
        return adopt(
            session, live, now=now, audited=audited, region=region,
            details=region_detail(ctx, region),
        )  # fmt: skip


# --- wrapping ---------------------------------------------------------------------------------


def store_new_dek(
    ctx: Context,
    *,
    dek: bytes,
    tenant_id: uuid.UUID,
    recording_id: uuid.UUID,
    write: Callable[[Session, WrappedKey], T],
    wrapped: WrappedKey | None = None,
    region: str | None = None,
) -> T:
    """Wrap ``dek`` outside any transaction, then commit ``write(session, wrapped)`` under the
    shared KEK lock once the wrap's version is known to be live (see the module docstring).

    ``wrapped`` lets a caller hand over a wrap made earlier; ``region`` is the recording's
    (its key provider wraps, and its versions are the ones checked). Raises the key provider's
    domain errors, and ``MisconfiguredError`` when the provider wraps under a version the DB never
    heard of and that is older than the DB's newest (the wrong keyring).
    """
    for _ in range(WRAP_ATTEMPTS):
        if wrapped is None:
            wrapped = ctx.keys_for(region).wrap_dek(
                dek, tenant_id=tenant_id, recording_id=recording_id
            )
        with ctx.db.reading() as session:
            known = newest_version(session, region)
            seen = get(session, wrapped.kek_version, region) is not None
        if not seen:
            if known is not None and wrapped.kek_version < known:
                raise MisconfiguredError(
                    f"the key provider wraps under KEK version {wrapped.kek_version}, older "
                    f"than version {known} recorded in the database; is it the right keyring?"
                )
            # A rotation the DB has not seen.
            record_provider_versions(ctx, now=ctx.now(), region=region)
        with ctx.db.transaction() as session:
            lock(session, exclusive=False)
            if is_live(session, wrapped.kek_version, region):
                return write(session, wrapped)
        log.info("KEK v%d is being retired; wrapping the new DEK again", wrapped.kek_version)
        wrapped = None
    raise ConflictError("the KEK kept changing while a new key was stored; retry")
