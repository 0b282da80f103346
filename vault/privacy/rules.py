"""Restriction look-ups shared by the access checks and the recording metadata.

Only the tables below: the access and recordings domains import this without importing the
privacy services (which use theirs).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlmodel import Session, col, select

from vault.models import Restriction

__all__ = ["restricted_of"]


def restricted_of(session: Session, recording_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """The recordings among ``recording_ids`` under an active restriction."""
    ids = list(set(recording_ids))
    found: set[uuid.UUID] = set()
    for start in range(0, len(ids), 1000):
        found.update(
            session.exec(
                select(Restriction.recording_id).where(
                    col(Restriction.recording_id).in_(ids[start : start + 1000]),
                    col(Restriction.lifted_at).is_(None),
                )
            ).all()
        )
    return found
