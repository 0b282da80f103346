"""The disclosure state machine: the one owner of ``Disclosure.status``.

::

    received --> objected --> closed
        |  ^
        v  |  (a change to the request resets its approvals)
      approved --> disclosed --> closed
        |
        +--> closed          (received and approved may be closed too: withdrawn)

:func:`transition` is a compare-and-set (only a row still in a source state moves) that writes
the edge's audit event in the same transaction. Nothing else writes ``Disclosure.status``.
An objected disclosure never reaches ``disclosed``: there is no edge for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col

from vault import audit
from vault.errors import DisclosureStateError
from vault.models import Disclosure, DisclosureStatus
from vault.tags import AuditAction

__all__ = ["TRANSITIONS", "transition"]

S = DisclosureStatus

TRANSITIONS: Mapping[tuple[S, S], AuditAction] = {
    (S.received, S.objected): AuditAction.disclosure_object,
    (S.received, S.approved): AuditAction.disclosure_approve,
    (S.approved, S.received): AuditAction.disclosure_amend,
    (S.received, S.received): AuditAction.disclosure_amend,
    (S.approved, S.disclosed): AuditAction.disclosure_disclose,
    (S.received, S.closed): AuditAction.disclosure_close,
    (S.approved, S.closed): AuditAction.disclosure_close,
    (S.objected, S.closed): AuditAction.disclosure_close,
    (S.disclosed, S.closed): AuditAction.disclosure_close,
}


def transition(
    session: Session,
    row: Disclosure,
    *,
    from_: S | Iterable[S],
    to: S,
    actor: str,
    now: datetime,
    values: Mapping[str, Any] | None = None,
    where: Iterable[Any] = (),
    details: Mapping[str, Any] | None = None,
) -> None:
    """Move ``row`` from one of ``from_`` to ``to`` (setting ``values``), audited; a row that
    is no longer in a source state is a ``DisclosureStateError`` (409)."""
    sources = [from_] if isinstance(from_, S) else list(from_)
    actions = {TRANSITIONS.get((s, to)) for s in sources}
    if None in actions or len(actions) != 1:
        raise RuntimeError(f"no disclosure edge {sources} -> {to}")  # a programming error
    action = actions.pop()
    assert action is not None
    changes: dict[str, Any] = {"status": to.value, "updated_at": now, **(values or {})}
    moved = session.execute(
        sa.update(Disclosure)
        .where(
            col(Disclosure.id) == row.id,
            col(Disclosure.status).in_([s.value for s in sources]),
            *where,
        )
        .values(**changes)
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        raise DisclosureStateError(
            f"disclosure {row.id} is {row.status}; it cannot become {to.value}"
        )
    audit.record(
        session, action=action, actor=actor, now=now, tenant_id=row.tenant_id,
        target=str(row.id),
        details={"from": row.status, "to": to.value, "revision": row.revision,
                 **(details or {})},
    )  # fmt: skip
    session.expire(row)


def claim(session: Session, disclosure_id: uuid.UUID) -> Disclosure | None:
    """The row, locked (PostgreSQL; SQLite's writer lock already serialises)."""
    return session.get(Disclosure, disclosure_id, with_for_update=True, populate_existing=True)
