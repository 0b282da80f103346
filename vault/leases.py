"""Row claiming and job leases, shared by the KEK cycle and the worker's jobs.

- ``claim(session, stmt)`` adds ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two workers never
  claim the same row; on SQLite ``BEGIN IMMEDIATE`` already makes each transaction the only
  writer.
- ``acquire_lease`` / ``renew_lease`` / ``release_lease`` manage a ``job_lease`` row with a
  compare-and-set on ``expires_at``; ``process_holder()`` names this process as a holder.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from vault.db import Database, is_postgres
from vault.models import JobLease

Q = TypeVar("Q", bound=Any)

LEASE_TTL = timedelta(minutes=10)
_LEASE = JobLease.__table__  # type: ignore[attr-defined]


def claim(session: Session, stmt: Q, *, of: Any = None) -> Q:
    """Lock the selected rows, skipping rows other workers hold (PostgreSQL).

    ``of`` limits the lock to one table of a join. SQLite needs nothing: ``BEGIN IMMEDIATE``
    makes the transaction the single writer.
    """
    return stmt.with_for_update(skip_locked=True, of=of) if is_postgres(session) else stmt


def dialect(session: Session) -> Any:
    return postgresql if is_postgres(session) else sqlite


# --- the lease --------------------------------------------------------------------------------


def process_holder() -> str:
    """``host:pid-namespace:pid:nonce``: unique per process, and tells a dead local holder."""
    try:
        pidns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        pidns = "-"
    return f"{socket.gethostname()}:{pidns}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _holder_is_dead(holder: str) -> bool:
    """True only for a holder on this host and PID namespace whose process no longer exists."""
    parts = holder.split(":")
    if len(parts) != 4 or not parts[2].isdigit():
        return False
    mine = process_holder().split(":")
    if parts[:2] != mine[:2] or parts[2] == mine[2]:
        return False
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def acquire_lease(
    db: Database, name: str, *, holder: str, now: datetime, ttl: timedelta = LEASE_TTL
) -> bool:
    """Take the lease ``name`` until ``now + ttl`` with a compare-and-set; False if held.

    A lease held by a process of this host that has died (SIGKILL, OOM) is taken over at once
    instead of waiting for it to expire.
    """
    t = _LEASE
    with db.transaction() as session:
        row = session.get(JobLease, name)
        if row is None:
            new = dialect(session).insert(t).values(name=name, holder=holder, expires_at=now + ttl)
            return inserted(session, new.on_conflict_do_nothing().returning(t.c.name))
        free = [t.c.expires_at <= now, t.c.holder == holder]
        if _holder_is_dead(row.holder):
            free.append(t.c.holder == row.holder)
        take = sa.update(t).where(t.c.name == name, sa.or_(*free))
        return _changed(session, take.values(holder=holder, expires_at=now + ttl))


def renew_lease(
    db: Database, name: str, *, holder: str, now: datetime, ttl: timedelta = LEASE_TTL
) -> bool:
    """Extend a lease we hold; False if it was lost (expired and taken by someone else)."""
    return _update_own_lease(db, name, holder, expires_at=now + ttl)


def release_lease(db: Database, name: str, *, holder: str, now: datetime) -> None:
    _update_own_lease(db, name, holder, expires_at=now, last_run_at=now)


def _update_own_lease(db: Database, name: str, holder: str, **values: Any) -> bool:
    t = _LEASE
    with db.transaction() as session:
        own = sa.update(t).where(t.c.name == name, t.c.holder == holder)
        return _changed(session, own.values(**values))


def _changed(session: Session, stmt: Any) -> bool:
    return session.exec(stmt).rowcount == 1  # type: ignore[no-any-return]


def inserted(session: Session, insert: Any) -> bool:
    # INSERT ... ON CONFLICT DO NOTHING RETURNING: a row back means this call inserted it
    # (psycopg reports no rowcount for it).
    return session.exec(insert).first() is not None  # type: ignore[no-any-return]
