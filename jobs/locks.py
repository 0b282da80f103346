"""Row claiming and job leases for the worker.

The implementations live in :mod:`vault.services.leases` (the ``kek-cycle`` service takes its
lease itself); they are re-exported here for jobs:

- ``claim(session, stmt)`` adds ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two workers never
  claim the same row; on SQLite ``BEGIN IMMEDIATE`` already makes each transaction the only
  writer.
- ``acquire_lease`` / ``renew_lease`` / ``release_lease`` manage a ``job_lease`` row with a
  compare-and-set on ``expires_at``; ``process_holder()`` names this process as a holder.
"""

from __future__ import annotations

from vault.services.leases import (
    LEASE_TTL,
    acquire_lease,
    claim,
    process_holder,
    release_lease,
    renew_lease,
)

__all__ = [
    "LEASE_TTL",
    "acquire_lease",
    "claim",
    "process_holder",
    "release_lease",
    "renew_lease",
]
