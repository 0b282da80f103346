"""The KEK lifecycle: rotate, rewrap every held DEK, retire (destroy) old versions.

Rotation is due when the newest version is ``policy.kek_rotation_days`` old. No transaction is
ever held across a key-provider call, yet no DEK is ever committed under a version that
retirement can destroy:

- a new DEK is wrapped outside any transaction; the transaction that commits its row takes the
  KEK lock *shared* and checks that the version is still live; if retirement got there first,
  the DEK (still in memory) is wrapped again (:func:`vault.kek_versions.store_new_dek`);
- retirement takes the lock *exclusive*, finds the versions no committed row uses, marks them
  ``retiring`` and commits; only then does it destroy them at the provider, and a third short
  transaction records ``retired_at`` with the audit events. A crash in between leaves versions
  ``retiring``: the next run destroys and records them.

``kek_cycle`` runs under a DB lease (a ``job_lease`` row taken with a compare-and-set), so two
workers never rotate twice. Media is never re-encrypted: only wrapped DEKs change.

Regions: every region's key provider is cycled in turn (the home region first) with its own
versions (``kek_version.region``) and only the DEKs of its own recordings; a recording's DEK is
never wrapped by another region's provider.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import col, select

from crypto.keys.base import WrappedKey
from vault import audit, kek_versions
from vault.context import Context
from vault.crashpoints import AFTER_KEK_ROTATE, AFTER_REWRAP, crashpoint
from vault.errors import (
    ConflictError,
    KeyDestroyedError,
    KeyProviderUnavailableError,
    WrappedKeyInvalidError,
)
from vault.leases import (
    LEASE_TTL,
    acquire_lease,
    process_holder,
    release_lease,
    renew_lease,
)
from vault.models import Recording
from vault.residency import recording_in
from vault.tags import AuditAction, Outcome

__all__ = ["KEK_LEASE", "KekCycleResult", "kek_cycle", "retire_unused", "rotate"]

log = logging.getLogger(__name__)


KEK_LEASE = "kek-cycle"
REWRAP_BATCH = 100
CYCLE_ACTOR = "system:kek-cycle"
MANUAL_ACTOR = "system:cli"


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
    # The other regions' results (the fields above are the home region's).
    regions: dict[str, KekCycleResult] = field(default_factory=dict)

    def summary(self) -> str:
        if not self.acquired:
            return "skipped: another worker holds the kek-cycle lease"
        own = self._summary()
        others = "".join(f"; region {n}: {r._summary()}" for n, r in sorted(self.regions.items()))
        return own + others

    def _summary(self) -> str:
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

        def keep_lease() -> None:
            if not renew_lease(
                ctx.db, KEK_LEASE, holder=holder, now=max(now, ctx.now()), ttl=LEASE_TTL
            ):
                raise ConflictError("the kek-cycle lease was lost; stopping")

        home, *others = ctx.regions()
        result = _cycle(ctx, home, now=now, force=force, renew=keep_lease)
        for region in others:
            assert region is not None
            result.regions[region] = _cycle(ctx, region, now=now, force=force, renew=keep_lease)
        return result
    finally:
        release_lease(ctx.db, KEK_LEASE, holder=holder, now=now)


def _cycle(
    ctx: Context, region: str | None, *, now: datetime, force: bool, renew: Callable[[], None]
) -> KekCycleResult:
    """One region's rotation, rewrap and retirement."""
    result = KekCycleResult()
    result.rotated_to, result.adopted = _rotate_if_due(ctx, now=now, force=force, region=region)
    if result.rotated_to or result.adopted:
        crashpoint(AFTER_KEK_ROTATE)
    result.newest, result.rewrapped, result.rewrap_failed = _rewrap_all(
        ctx, now=now, renew=renew, region=region
    )
    crashpoint(AFTER_REWRAP)
    result.retired = retire_unused(ctx, now=now, region=region)
    return result


def rotate(ctx: Context, *, now: datetime, region: str | None = None) -> int:
    """Add a new KEK version now (``callvault keys rotate``); returns the newest version."""
    holder = process_holder()
    if not acquire_lease(ctx.db, KEK_LEASE, holder=holder, now=now):
        raise ConflictError("a kek-cycle is running; try again when it has finished")
    try:
        rotated, adopted = _rotate_if_due(
            ctx, now=now, force=True, actor=MANUAL_ACTOR, region=region
        )
    finally:
        release_lease(ctx.db, KEK_LEASE, holder=holder, now=now)
    return rotated or max(adopted)


def _rotate_if_due(
    ctx: Context,
    *,
    now: datetime,
    force: bool,
    actor: str = CYCLE_ACTOR,
    region: str | None = None,
) -> tuple[int | None, list[int]]:
    """(version rotated to, versions adopted); adopting counts as the due rotation."""
    adopted = kek_versions.record_provider_versions(ctx, now=now, region=region)
    if adopted:
        return None, adopted
    with ctx.db.reading() as session:
        newest = kek_versions.newest_version(session, region)
        row = kek_versions.get(session, newest, region) if newest is not None else None
    if row is None:
        raise KeyProviderUnavailableError("the key provider has no live KEK version")
    if not force and row.created_at + ctx.policy.kek_rotation > now:
        return None, []
    version = ctx.keys_for(region).rotate()
    with ctx.db.transaction() as session:
        # A concurrent ingest may have recorded (and audited) it first: one event either way.
        if kek_versions.insert_version(session, version, now, region):
            audit.record(
                session, action=AuditAction.kek_rotate, actor=actor, now=now,
                details={"version": version, "previous": row.version, "forced": force,
                         **kek_versions.region_detail(ctx, region)},
            )  # fmt: skip
    log.info("KEK rotated to version %d (region %s)", version, ctx.region_name(region))
    return version, []


def _rewrap_all(
    ctx: Context, *, now: datetime, renew: Callable[[], None], region: str | None = None
) -> tuple[int | None, int, int]:
    """Move every wrapped DEK, whatever its row's status, to the newest version.

    Batches are read by id (no row lock is held across the provider calls); each new wrap is
    written with a compare-and-set on the old one, so a DEK destroyed meanwhile (disposal) stays
    destroyed. A row that cannot be rewrapped (a corrupted wrap) is counted once, never looped
    on. Returns (newest, done, failed).
    """
    done = failed = 0
    after: uuid.UUID | None = None
    keys = ctx.keys_for(region)
    while True:
        with ctx.db.reading() as session:
            newest = kek_versions.newest_version(session, region)
            query = (
                select(Recording.id, Recording.tenant_id, Recording.wrapped_dek)
                .where(
                    col(Recording.wrapped_dek).is_not(None),
                    recording_in(region),
                    sa.or_(
                        col(Recording.kek_version).is_(None), col(Recording.kek_version) < newest
                    ),
                )
                .order_by(col(Recording.id))
                .limit(REWRAP_BATCH)
            )
            if after is not None:
                query = query.where(col(Recording.id) > after)
            rows = session.exec(query).all()
        if not rows:
            return newest, done, failed
        after = rows[-1][0]
        new: dict[uuid.UUID, tuple[str, WrappedKey]] = {}
        sources: set[int] = set()
        bad = 0
        for rid, tenant_id, stored in rows:
            try:
                sources.add(keys.version_of(stored))
                moved_to = keys.rewrap_dek(stored, tenant_id=tenant_id, recording_id=rid)
                new[rid] = (stored, moved_to)
            except (WrappedKeyInvalidError, KeyDestroyedError):
                log.error("kek-cycle: cannot rewrap the DEK of recording %s", rid)
                bad += 1
        moved = 0
        with ctx.db.transaction() as session:
            kek_versions.lock(session, exclusive=False)
            for rid, (old, wrapped) in new.items():
                if not kek_versions.is_live(session, wrapped.kek_version, region):
                    continue  # retired under us: the next run rewraps it again
                # updated_at stays: the recording itself did not change (the sweeper reads it).
                changed = session.execute(
                    sa.update(Recording)
                    .where(col(Recording.id) == rid, col(Recording.wrapped_dek) == old)
                    .values(wrapped_dek=keys.encode(wrapped), kek_version=wrapped.kek_version)
                    .execution_options(synchronize_session=False)
                )
                moved += changed.rowcount  # type: ignore[attr-defined]
            audit.record(
                session, action=AuditAction.kek_rewrap, actor=CYCLE_ACTOR, now=now,
                outcome=Outcome.failed if bad and not moved else Outcome.ok,
                details={"count": moved, "failed": bad, "from_versions": sorted(sources),
                         "to_version": newest, **kek_versions.region_detail(ctx, region)},
            )  # fmt: skip
        done, failed = done + moved, failed + bad
        renew()


def retire_unused(ctx: Context, *, now: datetime, region: str | None = None) -> list[int]:
    """Destroy every KEK version below the oldest one a live DEK still uses (never the newest).

    Three steps (see the module docstring): mark under the exclusive lock, destroy at the
    provider with no transaction open, record. Idempotent: versions already marked or already
    destroyed (a crash between the steps) are finished and recorded once.
    """
    live = kek_versions.provider_versions(ctx, now, region)
    ours, model = kek_versions.in_region(region), kek_versions.table(region)
    with ctx.db.transaction() as session:
        kek_versions.lock(session, exclusive=True)
        kek_versions.adopt(
            session, live, now=now, region=region, details=kek_versions.region_detail(ctx, region)
        )
        newest = kek_versions.newest_version(session, region)
        if newest is None:
            return []
        held = sa.and_(col(Recording.wrapped_dek).is_not(None), recording_in(region))
        unknown = session.exec(
            select(sa.func.count()).where(held, col(Recording.kek_version).is_(None))
        ).one()
        if unknown:
            log.error("kek retire: %d wrapped DEK(s) have no recorded KEK version", unknown)
            return []
        oldest_used = session.exec(select(sa.func.min(Recording.kek_version)).where(held)).one()
        through = min(oldest_used or newest, newest) - 1
        # Versions already marked by a run that crashed count too, whatever is due now.
        marked = session.exec(
            select(sa.func.max(model.version)).where(
                ours, col(model.retiring_at).is_not(None), col(model.retired_at).is_(None)
            )
        ).one()
        through = max(through, marked or 0)
        if through < 1:
            return []
        session.execute(
            sa.update(model)
            .where(ours, col(model.version) <= through, col(model.retiring_at).is_(None))
            .values(retiring_at=now)
        )
        pending = sorted(
            session.exec(
                select(model.version).where(
                    ours, col(model.version) <= through, col(model.retired_at).is_(None)
                )
            ).all()
        )
    destroy = [v for v in live if v <= through]
    versions = sorted(set(destroy) | set(pending))
    if not versions:
        return []
    if destroy:
        ctx.keys_for(region).retire(through)
    with ctx.db.transaction() as session:
        session.execute(
            sa.update(model)
            .where(ours, col(model.version) <= through, col(model.retired_at).is_(None))
            .values(retired_at=now)
        )
        for version in versions:
            audit.record(
                session, action=AuditAction.kek_retire, actor=CYCLE_ACTOR, now=now,
                details={"version": version, "destroyed": version in destroy,
                         **kek_versions.region_detail(ctx, region)},
            )  # fmt: skip
    log.info("KEK versions retired (region %s): %s", ctx.region_name(region), versions)
    return versions
