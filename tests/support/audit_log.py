"""Audit-log test helpers: appending events, tampering as a DB superuser, and a legacy hash
chain as a vault written before the Merkle log (schema 0007) left it."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from vault import audit
from vault.audit import tree
from vault.context import Context
from vault.models import AuditEvent, AuditTree
from vault.tags import AuditAction

SQL = str | tuple[str, dict[str, Any]]


def append(
    ctx: Context,
    n: int,
    *,
    start: int = 0,
    now: datetime | None = None,
    tenants: list[uuid.UUID | None] | None = None,
) -> list[AuditEvent]:
    """``n`` events, one transaction each; tenants cycle through ``tenants`` (random ones
    by default). Times advance a second per event from ``now`` (the context's clock)."""
    base = ctx.now() if now is None else now
    rows = []
    for i in range(start, start + n):
        tenant = uuid.uuid4() if tenants is None else tenants[i % len(tenants)]
        with ctx.db.transaction() as s:
            rows.append(
                audit.record(
                    s,
                    action=AuditAction.recording_read,
                    actor=f"principal-{i % 3}",
                    now=base + timedelta(seconds=i),
                    tenant_id=tenant,
                    target=str(uuid.uuid4()),
                    purpose="troubleshooting",
                    details={"i": i, "range": [0, i * 10]},
                )
            )
    return rows


def sequence(ctx: Context) -> int:
    return tree.sequence(ctx.db, wait=True)


def tamper(ctx: Context, *statements: SQL) -> None:
    """SQL as an attacker with DB superuser powers: the append-only triggers are bypassed
    (replica mode on PostgreSQL for this transaction only; dropped triggers on SQLite)."""
    with ctx.db.engine.begin() as conn:
        if ctx.db.is_postgres:
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        else:
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_event_no_update")
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_event_no_delete")
        for stmt in statements:
            sql, params = (stmt, {}) if isinstance(stmt, str) else stmt
            conn.execute(sa.text(sql), params)


def legacy_event(seq: int, prev_hash: str, ts: datetime, **fields: Any) -> AuditEvent:
    """One event in the pre-Merkle chained form (its canonical text names the previous hash)."""
    event = {
        "seq": seq, "chain_id": "global", "ts": audit.format_ts(ts), "actor": "principal-0",
        "action": AuditAction.recording_read.value, "outcome": "ok", "tenant_id": None,
        "target": None, "purpose": None, "grant_id": None, "details": {"legacy": seq},
        "prev_hash": prev_hash,
    }  # fmt: skip
    event.update(fields)
    canonical = audit.canonical_json(event)
    tenant = event["tenant_id"]
    return AuditEvent(
        seq=seq, chain_id="global", ts=ts, actor=event["actor"], action=event["action"],
        outcome=event["outcome"], tenant_id=None if tenant is None else uuid.UUID(tenant),
        target=event["target"], purpose=event["purpose"], grant_id=None, prev_hash=prev_hash,
        hash=audit.hash_canonical(canonical), canonical=canonical,
    )  # fmt: skip


def legacy_chain(ctx: Context, n: int, *, tenant: uuid.UUID | None = None) -> list[AuditEvent]:
    """A chain of ``n`` legacy events on an empty log, as the 0008 upgrade finds it: its head
    recorded in ``audit_tree`` and (PostgreSQL) the seq sequence moved past it."""
    prev, rows = audit.GENESIS_HASH, []
    base = ctx.now() - timedelta(days=1)
    for seq in range(1, n + 1):
        rows.append(
            legacy_event(
                seq,
                prev,
                base + timedelta(seconds=seq),
                tenant_id=None if tenant is None else str(tenant),
            )
        )
        prev = rows[-1].hash
    with ctx.db.transaction() as s:
        for row in rows:
            s.add(row)
        s.flush()
        s.execute(sa.update(AuditTree).values(legacy_head_seq=rows[-1].seq, legacy_head_hash=prev))
        if ctx.db.is_postgres:
            s.execute(sa.text(f"SELECT setval('audit_event_seq', {n + 1}, false)"))
        for row in rows:
            s.expunge(row)
    return rows
