"""The recording lifecycle: the one owner of ``Recording.status``.

::

    create -> pending --> stored --> integrity_failed
                 |          |             |
                 v          v             v
               failed    disposing <------+
                            |
                            v
                         disposed

Every status change goes through :func:`transition` (one row) or :func:`transition_many` (a
batch, one statement). Each is a compare-and-set: only rows still in a source state move, so two
workers, or a worker and a request, never both win. The same statement clears what the new state
must not keep (a disposed recording is a tombstone: no DEK, no call id, no plaintext hash), and
the edge's audit event is written for every row that moved, all in the caller's transaction.
An edge that is not in :data:`TRANSITIONS` raises :class:`IllegalTransitionError`.

Nothing else writes ``Recording.status``; ``tests/vault/test_lifecycle_ownership.py`` enforces it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col

from vault import audit
from vault.models import HoldMembership, Recording, RecordingPurpose, RecordingStatus
from vault.tags import AuditAction, Outcome

__all__ = [
    "TRANSITIONS",
    "Edge",
    "IllegalTransitionError",
    "Moved",
    "create",
    "discard",
    "integrity_alarm",
    "transition",
    "transition_many",
]

S = RecordingStatus


class IllegalTransitionError(RuntimeError):
    """A programming error: the lifecycle has no such edge."""


@dataclass(frozen=True, slots=True)
class Edge:
    """What one edge does besides moving the status."""

    action: AuditAction
    outcome: Outcome = Outcome.ok
    clears: tuple[str, ...] = ()  # columns set to NULL
    stamps: tuple[str, ...] = ()  # columns set to the transition's time
    carries_kek_version: bool = False  # the event names the KEK version of the destroyed DEK


# Shredding the DEK also drops what identifies the call or the media: the tombstone keeps id,
# tenant, times, reason and the ciphertext hash only.
_SHRED = Edge(
    AuditAction.dek_destroy,
    clears=("wrapped_dek", "call_id", "sha256"),
    stamps=("dek_destroyed_at",),
    carries_kek_version=True,
)

TRANSITIONS: Mapping[tuple[S, S], Edge] = {
    (S.pending, S.stored): Edge(AuditAction.recording_ingest),
    (S.pending, S.failed): Edge(
        AuditAction.recording_ingest_failed, Outcome.failed, clears=("wrapped_dek",),
        stamps=("dek_destroyed_at",),
    ),
    (S.stored, S.integrity_failed): Edge(AuditAction.integrity_alarm, Outcome.failed),
    (S.stored, S.disposing): _SHRED,
    (S.integrity_failed, S.disposing): _SHRED,
    (S.disposing, S.disposed): Edge(
        AuditAction.media_destroy, clears=("call_id", "sha256"), stamps=("disposed_at",)
    ),
}


@dataclass(frozen=True, slots=True)
class Moved:
    """A row that moved, as the statement returned it."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    ciphertext_sha256: str | None
    kek_version: int | None


def _edge(sources: Iterable[S], to: S) -> tuple[list[S], Edge]:
    sources = sorted(set(sources))
    if not sources:
        raise IllegalTransitionError(f"no source state for -> {to}")
    edges = {TRANSITIONS.get((s, to)) for s in sources}
    if None in edges:
        bad = [s for s in sources if (s, to) not in TRANSITIONS]
        raise IllegalTransitionError(f"no lifecycle edge {bad[0]} -> {to}")
    if len(edges) != 1:
        raise IllegalTransitionError(f"edges into {to} from {sources} differ")
    return sources, edges.pop()  # type: ignore[return-value]


Details = Mapping[str, Any] | Callable[[Moved], Mapping[str, Any]] | None


def transition_many(
    session: Session,
    ids: Sequence[uuid.UUID],
    *,
    from_: S | Iterable[S],
    to: S,
    actor: str,
    now: datetime,
    details: Details = None,
    values: Mapping[str, Any] | None = None,
    where: Sequence[Any] = (),
    event: Mapping[str, Any] | None = None,
) -> list[Moved]:
    """Move every row of ``ids`` still in ``from_`` (and matching ``where``) to ``to``.

    ``values`` sets further columns (e.g. ``disposal_reason``); ``details`` (a mapping, or a
    function of the moved row) goes into each row's audit event, with ``event`` as further
    columns of that event (``purpose``, ``grant_id``). Returns the rows that moved, by id.
    """
    sources, edge = _edge([from_] if isinstance(from_, S) else from_, to)
    if not ids:
        return []
    changes: dict[str, Any] = {"status": to.value, "updated_at": now}
    changes.update({name: None for name in edge.clears})
    changes.update({name: now for name in edge.stamps})
    changes.update(values or {})
    stmt = (
        sa.update(Recording)
        .where(
            col(Recording.id).in_(sorted(set(ids))),
            col(Recording.status).in_([s.value for s in sources]),
            *where,
        )
        .values(**changes)
        .returning(
            col(Recording.id), col(Recording.tenant_id), col(Recording.ciphertext_sha256),
            col(Recording.kek_version),
        )
        .execution_options(synchronize_session=False)
    )
    moved = sorted((Moved(*row) for row in session.execute(stmt)), key=lambda m: m.id)
    # Audited after every row change: the audit (append) lock is always taken last.
    for row in moved:
        extra = details(row) if callable(details) else (details or {})
        standard: dict[str, Any] = {"ciphertext_sha256": row.ciphertext_sha256}
        if edge.carries_kek_version:
            standard["kek_version"] = row.kek_version
        audit.record(
            session, action=edge.action, actor=actor, now=now, outcome=edge.outcome,
            tenant_id=row.tenant_id, target=str(row.id), details={**standard, **extra},
            **(event or {}),
        )  # fmt: skip
    # Rows this session already holds must not show their old state: reload them on next use.
    for row in moved:
        cached = session.identity_map.get(session.identity_key(Recording, row.id))
        if cached is not None:
            session.expire(cached)
    return moved


def transition(
    session: Session,
    recording_id: uuid.UUID,
    *,
    from_: S | Iterable[S],
    to: S,
    actor: str,
    now: datetime,
    details: Details = None,
    values: Mapping[str, Any] | None = None,
    where: Sequence[Any] = (),
    event: Mapping[str, Any] | None = None,
) -> bool:
    """:func:`transition_many` for one row; True if it moved."""
    moved = transition_many(
        session, [recording_id], from_=from_, to=to, actor=actor, now=now, details=details,
        values=values, where=where, event=event,
    )  # fmt: skip
    return bool(moved)


def create(session: Session, recording: Recording) -> Recording:
    """Insert a new recording row; it always starts ``pending`` (not audited: the ingest event
    is written when it becomes ``stored``)."""
    recording.status = S.pending
    session.add(recording)
    session.flush()
    return recording


def discard(
    session: Session, recording_id: uuid.UUID, *, actor: str, now: datetime, reason: str
) -> bool:
    """Delete a row that never held media worth a tombstone (``pending`` or ``failed``), with
    its purposes and hold memberships, audited as a failed ingest. False if the row moved on."""
    rec = session.get(Recording, recording_id, populate_existing=True)
    if rec is None or rec.status not in (S.pending, S.failed):
        return False
    tenant_id = rec.tenant_id
    # A hold's membership of a recording that never existed means nothing: it goes too.
    session.execute(sa.delete(HoldMembership).where(col(HoldMembership.recording_id) == rec.id))
    session.execute(sa.delete(RecordingPurpose).where(col(RecordingPurpose.recording_id) == rec.id))
    gone = session.execute(
        sa.delete(Recording)
        .where(col(Recording.id) == rec.id, col(Recording.status).in_([S.pending, S.failed]))
        .execution_options(synchronize_session=False)
    )
    session.expunge(rec)
    if gone.rowcount != 1:  # type: ignore[attr-defined]
        return False
    audit.record(
        session, action=AuditAction.recording_ingest_failed, actor=actor, now=now,
        outcome=Outcome.failed, tenant_id=tenant_id, target=str(recording_id),
        details={"reason": reason, "discarded": True},
    )  # fmt: skip
    return True


def integrity_alarm(
    session: Session,
    recording_id: uuid.UUID,
    *,
    actor: str,
    now: datetime,
    source: str,
    reason: str,
    version_id: str | None = None,
    details: Mapping[str, Any] | None = None,
    event: Mapping[str, Any] | None = None,
) -> bool:
    """The one integrity-alarm path (playback and scrub): ``stored -> integrity_failed`` with
    its ``integrity.alarm`` event; False when the row moved on meanwhile (disposed, already
    failed) or, given ``version_id``, names another object version than the one checked."""
    where: list[Any] = []
    if version_id is not None:
        where.append(col(Recording.version_id) == version_id)
    return transition(
        session, recording_id, from_=S.stored, to=S.integrity_failed, actor=actor, now=now,
        details={"source": source, "reason": reason, **(details or {})}, where=where,
        event=event,
    )  # fmt: skip
