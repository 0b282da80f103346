"""The PostgreSQL pool's liveness check (issue #12).

A pooled connection idle longer than :data:`PING_AFTER_IDLE_SECONDS` is pinged before use. A
ping on every checkout (``pool_pre_ping``) was one more round trip per request and per
transaction; a database restarted while connections idled is still caught, and one that fails
under a busy pool fails that request once (503) and invalidates the whole pool, as any
disconnect does.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

__all__ = ["PING_AFTER_IDLE_SECONDS", "ping_when_idle"]

PING_AFTER_IDLE_SECONDS = 5.0
_CHECKED_IN = "callvault_checked_in"


def ping_when_idle(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_CHECKED_IN)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return  # new, or used a moment ago
        try:
            with dbapi_conn.cursor() as cur:
                cur.execute("SELECT 1")
            dbapi_conn.rollback()
        except Exception as exc:
            # The pool discards this connection and checks out another (SQLAlchemy's contract).
            raise sa.exc.DisconnectionError() from exc
