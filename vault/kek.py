"""The KEK lifecycle: wrap new DEKs, rotate, rewrap every held DEK, retire (destroy) old versions.

The ``kek_version`` table is the truth about versions: wrapping uses the newest version recorded
there, rotation is due when that version is ``policy.kek_rotation_days`` old, and ``retired_at``
records destruction. A provider version the DB does not know yet (a crash between the provider's
rotation and the DB row) is *adopted*, never rotated over again.

One lock is shared by wrapping and retiring: on PostgreSQL a transaction-level advisory lock,
taken *shared* by wrappers (ingests run in parallel) and *exclusive* by retirement; on SQLite
every transaction starts with ``BEGIN IMMEDIATE`` and is already the only writer. A DEK wrapped
under version v is therefore committed in its row before any retirement can look for users of v.

``kek_cycle`` runs under a DB lease (a ``job_lease`` row taken with a compare-and-set), so two
workers never rotate twice. Media is never re-encrypted: only wrapped DEKs change.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from crypto import envelope
from crypto.errors import DecryptionError, KeyDestroyedError, KeyProviderError
from crypto.keys.base import WrappedKey
from vault import audit
from vault.context import Context
from vault.crashpoints import AFTER_KEK_ROTATE, AFTER_REWRAP, crashpoint
from vault.db import is_postgres
from vault.errors import ConflictError
from vault.leases import (
    LEASE_TTL,
    acquire_lease,
    claim,
    dialect,
    inserted,
    process_holder,
    release_lease,
    renew_lease,
)
from vault.models import KekVersion, Recording
from vault.tags import AuditAction, Outcome

__all__ = [
    "KEK_LEASE",
    "KekCycleResult",
    "kek_cycle",
    "newest_version",
    "retire_unused",
    "rotate",
    "wrap_new_dek",
]

log = logging.getLogger(__name__)

# "cvkek" in ASCII: the advisory lock shared by wrapping (shared mode) and retiring (exclusive).
KEK_LOCK_KEY = 0x63766B656B
KEK_LEASE = "kek-cycle"
REWRAP_BATCH = 100
CYCLE_ACTOR = "system:kek-cycle"
SYNC_ACTOR = "system:kek-sync"
MANUAL_ACTOR = "system:cli"


# --- row claiming and the shared lock ---------------------------------------------------------


def _lock(session: Session, *, exclusive: bool) -> None:
    if is_postgres(session):
        fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        session.exec(sa.text(f"SELECT {fn}(:k)"), params={"k": KEK_LOCK_KEY})
    else:
        session.connection()  # begins the transaction: BEGIN IMMEDIATE takes the write lock


# --- versions as the DB knows them ------------------------------------------------------------


def newest_version(session: Session) -> int | None:
    """The newest KEK version recorded in the DB and not retired."""
    return session.exec(
        select(sa.func.max(KekVersion.version)).where(col(KekVersion.retired_at).is_(None))
    ).one()


def _insert_version(session: Session, version: int, created_at: datetime) -> bool:
    """Record a version unless it is already known; True if this call recorded it."""
    row = {"version": version, "created_at": created_at, "retired_at": None}
    insert = dialect(session).insert(KekVersion).values(**row).on_conflict_do_nothing()
    return inserted(session, insert.returning(KekVersion.version))  # type: ignore[arg-type]


def _provider_created_at(ctx: Context, version: int, now: datetime) -> datetime:
    created: Callable[[int], datetime] | None = getattr(ctx.keys, "created_at", None)
    try:
        stamp = created(version) if created else now
    except Exception:  # a provider without timestamps: the DB's first sighting counts
        stamp = now
    return min(stamp, now)


def _adopt(ctx: Context, session: Session, *, now: datetime, upto: int | None = None) -> list[int]:
    """Record provider versions the DB does not know yet; return the versions rotated to.

    With an empty table this is first-time bookkeeping and nothing is audited. Otherwise a new
    version means a rotation happened whose DB row was never written (a crash, or a rotation
    by another process), and recording it is that rotation's audited event: exactly one
    ``kek.rotate`` per version, by whoever records it.
    """
    known = set(session.exec(select(KekVersion.version)).all())
    live = ctx.keys.live_versions()
    if upto is not None:
        live = [v for v in live if v <= upto]
    adopted = []
    for version in sorted(set(live) - known):
        if not _insert_version(session, version, _provider_created_at(ctx, version, now)):
            continue
        if known:
            audit.record(
                session,
                action=AuditAction.kek_rotate,
                actor=SYNC_ACTOR,
                now=now,
                details={"version": version, "previous": max(known), "adopted": True},
            )
            adopted.append(version)
        known.add(version)
    return adopted


# --- wrapping ---------------------------------------------------------------------------------


def wrap_new_dek(
    ctx: Context, session: Session, *, dek: bytes, tenant: str, recording_id: uuid.UUID
) -> WrappedKey:
    """Wrap a new DEK under the newest version recorded in the DB, in the caller's transaction.

    Takes the KEK lock (shared) until the caller commits, so no retirement can run between this
    wrap and the commit of the row that holds it. If the provider is ahead of the DB (a rotation
    whose row is not written yet), its version is recorded first. Raises ``KeyProviderError``.
    """
    _lock(session, exclusive=False)
    known = newest_version(session)
    wrapped = envelope.wrap_dek(ctx.keys, dek, tenant=tenant, recording_id=recording_id)
    if known is None or wrapped.kek_version > known:
        if not is_postgres(session):
            _adopt(ctx, session, now=ctx.now(), upto=wrapped.kek_version)
        else:
            # Its own transaction, without the KEK lock (ours, shared, already excludes any
            # retirement): the caller's transaction must not hold the audit lock before the
            # locks it takes next (legal holds), or two writers could deadlock.
            with ctx.db.transaction() as own:
                _adopt(ctx, own, now=ctx.now(), upto=wrapped.kek_version)
    elif wrapped.kek_version < known:
        raise KeyProviderError(
            f"the key provider wraps under KEK version {wrapped.kek_version}, older than version "
            f"{known} recorded in the database; is it the right keyring?"
        )
    return wrapped


# --- the cycle --------------------------------------------------------------------------------


@dataclass
class KekCycleResult:
    acquired: bool = True
    rotated_to: int | None = None
    adopted: list[int] = field(default_factory=list)
    newest: int | None = None
    rewrapped: int = 0
    rewrap_failed: int = 0
    retired: list[int] = field(default_factory=list)

    def summary(self) -> str:
        if not self.acquired:
            return "skipped: another worker holds the kek-cycle lease"
        rotation = (
            f"rotated to v{self.rotated_to}"
            if self.rotated_to
            else f"adopted v{', v'.join(map(str, self.adopted))}"
            if self.adopted
            else "no rotation due"
        )
        retired = ", ".join(f"v{v}" for v in self.retired) or "none"
        failed = f" ({self.rewrap_failed} could not be rewrapped)" if self.rewrap_failed else ""
        return (
            f"{rotation}; newest v{self.newest}; {self.rewrapped} DEK(s) rewrapped{failed}; "
            f"retired: {retired}"
        )


def kek_cycle(ctx: Context, *, now: datetime, force: bool = False, holder: str) -> KekCycleResult:
    """Rotate when due (or ``force``), rewrap every held DEK, retire unused versions.

    Idempotent and restartable: each step starts from what the DB says, so a run killed at any
    point is finished by the next one without repeating a rotation.
    """
    if not acquire_lease(ctx.db, KEK_LEASE, holder=holder, now=now):
        return KekCycleResult(acquired=False)
    try:
        result = KekCycleResult()
        result.rotated_to, result.adopted = _rotate_if_due(ctx, now=now, force=force)
        if result.rotated_to or result.adopted:
            crashpoint(AFTER_KEK_ROTATE)

        def keep_lease() -> None:
            if not renew_lease(
                ctx.db, KEK_LEASE, holder=holder, now=max(now, ctx.now()), ttl=LEASE_TTL
            ):
                raise ConflictError("the kek-cycle lease was lost; stopping")

        result.newest, result.rewrapped, result.rewrap_failed = _rewrap_all(
            ctx, now=now, renew=keep_lease
        )
        crashpoint(AFTER_REWRAP)
        result.retired = retire_unused(ctx, now=now)
        return result
    finally:
        release_lease(ctx.db, KEK_LEASE, holder=holder, now=now)


def rotate(ctx: Context, *, now: datetime) -> int:
    """Add a new KEK version now (``callvault keys rotate``); returns the newest version."""
    holder = process_holder()
    if not acquire_lease(ctx.db, KEK_LEASE, holder=holder, now=now):
        raise ConflictError("a kek-cycle is running; try again when it has finished")
    try:
        rotated, adopted = _rotate_if_due(ctx, now=now, force=True, actor=MANUAL_ACTOR)
    finally:
        release_lease(ctx.db, KEK_LEASE, holder=holder, now=now)
    return rotated or max(adopted)


def _rotate_if_due(
    ctx: Context, *, now: datetime, force: bool, actor: str = CYCLE_ACTOR
) -> tuple[int | None, list[int]]:
    """(version rotated to, versions adopted); adopting counts as the due rotation."""
    with ctx.db.transaction() as session:
        adopted = _adopt(ctx, session, now=now)
        newest = newest_version(session)
        row = session.get(KekVersion, newest) if newest is not None else None
    if adopted:
        return None, adopted
    if row is None:
        raise KeyProviderError("the key provider has no live KEK version")
    if not force and row.created_at + ctx.policy.kek_rotation > now:
        return None, []
    version = ctx.keys.rotate()
    with ctx.db.transaction() as session:
        # A concurrent ingest may have recorded (and audited) it first: one event either way.
        if _insert_version(session, version, now):
            audit.record(
                session,
                action=AuditAction.kek_rotate,
                actor=actor,
                now=now,
                details={"version": version, "previous": row.version, "forced": force},
            )
    log.info("KEK rotated to version %d", version)
    return version, []


def _rewrap_all(
    ctx: Context, *, now: datetime, renew: Callable[[], None]
) -> tuple[int | None, int, int]:
    """Move every wrapped DEK, whatever its row's status, to the newest version.

    Batches are claimed with ``FOR UPDATE SKIP LOCKED`` and walked by id, so a row that cannot
    be rewrapped (a corrupted wrap) is counted once and never loops. Returns (newest, done,
    failed).
    """
    done = failed = 0
    after: uuid.UUID | None = None
    newest: int | None = None
    while True:
        with ctx.db.transaction() as session:
            newest = newest_version(session)
            query = (
                select(Recording)
                .where(
                    col(Recording.wrapped_dek).is_not(None),
                    sa.or_(
                        col(Recording.kek_version).is_(None),
                        col(Recording.kek_version) < newest,
                    ),
                )
                .order_by(col(Recording.id))
                .limit(REWRAP_BATCH)
            )
            if after is not None:
                query = query.where(col(Recording.id) > after)
            rows = session.exec(claim(session, query)).all()
            if not rows:
                return newest, done, failed
            after = rows[-1].id
            moved, sources, bad = 0, set(), 0
            for rec in rows:
                try:
                    old = envelope.decode_wrapped(rec.wrapped_dek or "")
                    new = envelope.rewrap_dek(
                        ctx.keys, old, tenant=str(rec.tenant_id), recording_id=rec.id
                    )
                except (ValueError, DecryptionError, KeyDestroyedError):
                    log.error("kek-cycle: cannot rewrap the DEK of recording %s", rec.id)
                    bad += 1
                    continue
                # updated_at stays: the recording itself did not change (the sweeper reads it).
                rec.wrapped_dek = envelope.encode_wrapped(new)
                rec.kek_version = new.kek_version
                session.add(rec)
                sources.add(old.kek_version)
                moved += 1
            audit.record(
                session,
                action=AuditAction.kek_rewrap,
                actor=CYCLE_ACTOR,
                now=now,
                outcome=Outcome.failed if bad and not moved else Outcome.ok,
                details={
                    "count": moved,
                    "failed": bad,
                    "from_versions": sorted(sources),
                    "to_version": newest,
                },
            )
            done, failed = done + moved, failed + bad
        renew()


def retire_unused(ctx: Context, *, now: datetime) -> list[int]:
    """Destroy every KEK version below the oldest one a live DEK still uses (never the newest).

    Runs under the exclusive KEK lock and re-checks the rows in that transaction, so no wrap can
    slip in between the check and the destruction. Idempotent: a provider that already destroyed
    a version (a crash before the DB commit) just gets its ``retired_at`` recorded.
    """
    with ctx.db.transaction() as session:
        _lock(session, exclusive=True)
        _adopt(ctx, session, now=now)
        newest = newest_version(session)
        if newest is None:
            return []
        held = col(Recording.wrapped_dek).is_not(None)
        unknown = session.exec(
            select(sa.func.count()).where(held, col(Recording.kek_version).is_(None))
        ).one()
        if unknown:
            log.error("kek retire: %d wrapped DEK(s) have no recorded KEK version", unknown)
            return []
        oldest_used = session.exec(select(sa.func.min(Recording.kek_version)).where(held)).one()
        through = min(oldest_used or newest, newest) - 1
        if through < 1:
            return []
        live = [v for v in ctx.keys.live_versions() if v <= through]
        pending = session.exec(
            select(KekVersion.version).where(
                col(KekVersion.version) <= through, col(KekVersion.retired_at).is_(None)
            )
        ).all()
        versions = sorted(set(live) | set(pending))
        if not versions:
            return []
        if live:
            ctx.keys.retire(through)
        session.exec(
            sa.update(KekVersion)
            .where(col(KekVersion.version) <= through, col(KekVersion.retired_at).is_(None))
            .values(retired_at=now)
        )
        for version in versions:
            audit.record(
                session,
                action=AuditAction.kek_retire,
                actor=CYCLE_ACTOR,
                now=now,
                details={"version": version, "destroyed": version in live},
            )
    log.info("KEK versions retired: %s", versions)
    return versions
