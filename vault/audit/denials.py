"""Denials: audited one by one up to a burst, then in aggregate per window.

A flood of bad keys, or a scan of random ids, must not serialise the chain. :class:`DenialLimiter`
counts per key and per window; the first denials of a window are audited individually, the rest
only counted and later written as one aggregate event per key and window by
:func:`flush_denials`. Two kinds go through it:

- failed authentications (:func:`record_denial`, keyed by the presented key's public prefix),
  written in a short transaction of their own;
- authorization denials (:func:`deny`, keyed by actor, permission, reason and tenant), written by
  the unit of work *after* the caller's transaction has ended, whatever its outcome, so a denial
  survives the rollback of the request it refused.

The limiter is the process's (built with the runtime context); every session carries it in
``session.info[LIMITER]``.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from vault.audit.chain import format_ts, record
from vault.db import Database, detached
from vault.tags import AuditAction, Outcome

OVERFLOW_KEY = "overflow"
LIMITER = "callvault.denial_limiter"
_FORBIDDEN = "permission.denied"
Closed = tuple[str, int, datetime, datetime]  # key, suppressed count, window start, window end


@dataclass(slots=True)
class _Window:
    start: datetime
    seen: int = 0
    suppressed: int = 0


class DenialLimiter:
    """Per-key windows of unauthenticated denials, so a flood cannot serialise the chain.

    The first ``burst`` denials per key per window are audited one by one; the rest are only
    counted and later written as one aggregate event per key and window. Attackers choose the
    keys, so both the number of tracked keys (``max_keys``; the rest share ``OVERFLOW_KEY``) and
    the individual events across all keys per window (``global_burst``) are bounded too.
    """

    def __init__(
        self, burst: int, window: timedelta, *, max_keys: int = 256, global_burst: int | None = None
    ) -> None:
        if burst < 0 or window <= timedelta(0) or max_keys < 1:
            raise ValueError("burst >= 0, window > 0 and max_keys >= 1 are required")
        self.burst = burst
        self.window = window
        self.max_keys = max_keys
        self.global_burst = 4 * burst if global_burst is None else global_burst
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._closed: list[Closed] = []
        self._global: _Window | None = None

    def note(self, key: str, now: datetime) -> bool:
        """Count one denial; True when it should be audited individually."""
        with self._lock:
            self._close_expired(now)
            if key not in self._windows and len(self._windows) >= self.max_keys:
                key = OVERFLOW_KEY
            win = self._windows.get(key)
            if win is None:
                win = self._windows[key] = _Window(start=now)
            if self._global is None or now >= self._global.start + self.window:
                self._global = _Window(start=now)
            win.seen += 1
            if win.seen <= self.burst and self._global.seen < self.global_burst:
                self._global.seen += 1
                return True
            win.suppressed += 1
            return False

    def drain(self, now: datetime, *, force: bool = False) -> list[Closed]:
        """Closed windows that suppressed denials; ``force`` closes the open ones too."""
        with self._lock:
            self._close_expired(now)
            if force:
                for key, win in self._windows.items():
                    if win.suppressed:
                        end = min(now, win.start + self.window)
                        self._closed.append((key, win.suppressed, win.start, end))
                self._windows.clear()
            closed, self._closed = self._closed, []
            return closed

    def _close_expired(self, now: datetime) -> None:
        for key in [k for k, w in self._windows.items() if now >= w.start + self.window]:
            win = self._windows.pop(key)
            if win.suppressed:
                self._closed.append((key, win.suppressed, win.start, win.start + self.window))


def record_denial(
    db: Database, limiter: DenialLimiter, *, key: str, reason: str, now: datetime
) -> None:
    """Audit one unauthenticated denial (or just count it), in its own transaction.

    ``key`` is attacker-influenced: pass a short, sanitised label (see
    ``authentication.denial_key``), never the presented secret.
    """
    single = {"key": key, "reason": reason} if limiter.note(key, now) else None
    _write_denials(db, limiter.drain(now), now, single=single)


def flush_denials(
    db: Database, limiter: DenialLimiter, *, now: datetime, force: bool = False
) -> int:
    """Write aggregates for closed windows (call periodically and at shutdown); returns how many."""
    closed = limiter.drain(now, force=force)
    _write_denials(db, closed, now, single=None)
    return len(closed)


def _write_denials(
    db: Database, closed: list[Closed], now: datetime, *, single: dict[str, Any] | None
) -> None:
    if single is None and not closed:
        return
    with db.transaction() as session:
        if single is not None:
            record(
                session, action=AuditAction.auth_denied, actor=None, now=now,
                outcome=Outcome.denied, details=single,
            )  # fmt: skip
        _write_aggregates(session, closed, now)


def _write_aggregates(session: Session, closed: list[Closed], now: datetime) -> None:
    for key, count, start, end in closed:
        window = {"count": count, "window_start": format_ts(start), "window_end": format_ts(end)}
        kind, _, rest = key.partition("|")
        if kind == _FORBIDDEN:
            actor, permission, reason, tenant = rest.split("|")
            record(
                session, action=AuditAction.permission_denied_aggregate, actor=actor, now=now,
                outcome=Outcome.denied, tenant_id=uuid.UUID(tenant) if tenant else None,
                details={"permission": permission, "reason": reason, **window},
            )  # fmt: skip
        else:
            record(
                session, action=AuditAction.auth_denied_aggregate, actor=None, now=now,
                outcome=Outcome.denied, details={"key": key, **window},
            )  # fmt: skip


def deny(
    session: Session,
    *,
    actor: str,
    role: str,
    permission: str,
    reason: str,
    target: str | None,
    tenant_id: uuid.UUID | None,
    now: datetime,
) -> None:
    """Audit an authorization denial once the caller's unit of work has ended (see the module
    docstring); beyond the burst only counted, for an aggregate event."""
    limiter: DenialLimiter | None = session.info.get(LIMITER)
    about = "" if tenant_id is None else str(tenant_id)
    key = "|".join((_FORBIDDEN, actor, permission, reason, about))
    if limiter is not None and not limiter.note(key, now):
        return
    details = {"permission": permission, "role": role, "reason": reason}

    def write(own: Session) -> None:
        record(
            own, action=AuditAction.permission_denied, actor=actor, now=now,
            outcome=Outcome.denied, tenant_id=tenant_id, target=target, details=details,
        )  # fmt: skip
        if limiter is not None:
            _write_aggregates(own, limiter.drain(now), now)

    detached(session, write)
