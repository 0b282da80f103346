"""Exports: a recording re-encrypted to a third party's ``age`` key, as a one-time, expiring
download (issue #15). Disclosures (to an authority) and hand-offs (to a sub-processor) own their
exports through these service functions; nothing else writes the ``export`` table.
"""

from __future__ import annotations

import uuid

from sqlmodel import Session, col, select

from vault.exports.produce import Produced, produce
from vault.exports.retention import purge, revoke, revoke_for_recordings
from vault.exports.serve import ExportResponse, serve
from vault.models import Export, ExportPublic

__all__ = [
    "ExportResponse", "Produced", "produce", "purge", "receipts", "revoke",
    "revoke_for_recordings", "serve",
]  # fmt: skip


def receipts(session: Session, *, subject_id: uuid.UUID) -> list[ExportPublic]:
    """The exports of one disclosure or hand-off, oldest first (no token, no object key)."""
    rows = session.exec(
        select(Export).where(col(Export.subject_id) == subject_id).order_by(col(Export.created_at))
    ).all()
    return [ExportPublic.model_validate(row, from_attributes=True) for row in rows]
