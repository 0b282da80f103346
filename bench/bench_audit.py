"""Audit appends per second on PostgreSQL vs. the same rows inserted into a plain table.

Target (issue #13): 16 concurrent writers, one commit per event, events spread over 8 tenants;
``audit.record`` (the Merkle log's lock-free append) reaches at least 0.5x the plain inserts.

Every contender runs the same writers through the same unit of work (``Database.transaction``),
one event per transaction, for a fixed time; the figure is the median of a few short runs,
contenders interleaved so that a busy machine hurts them alike:

- **plain**: the event's row (same columns, same canonical text and hash) into a table with only
  a primary key from a sequence, and no trigger;
- **merkle**: ``audit.record`` as the vault calls it;
- **chain** (for comparison): the old global hash chain's append, emulated: the advisory lock,
  the head read, the chained row.

The sequencer's own rate (leaves per second, in batches) is reported too: it runs beside the
writers, not in their commits.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlmodel import Session

from bench._util import report
from tests.support.postgres import temp_database
from vault import audit
from vault.audit import tree
from vault.db import Database, migrate
from vault.tags import AuditAction

WRITERS, TENANTS = 16, 8
PLAIN = sa.table(
    "bench_plain",
    *(sa.column(c) for c in ("seq", "chain_id", "ts", "actor", "action", "outcome", "tenant_id",
                             "target", "purpose", "grant_id", "hash", "canonical")),
)  # fmt: skip
PLAIN_INSERT = sa.insert(PLAIN)
PLAIN_DDL = """
CREATE TABLE bench_plain (
    seq BIGINT PRIMARY KEY DEFAULT nextval('bench_plain_seq'), chain_id VARCHAR(64) NOT NULL,
    ts TIMESTAMPTZ NOT NULL, actor VARCHAR(64), action VARCHAR(64) NOT NULL,
    outcome VARCHAR(16) NOT NULL, tenant_id UUID, target VARCHAR(64), purpose VARCHAR(32),
    grant_id UUID, hash VARCHAR(64) NOT NULL, canonical TEXT NOT NULL)
"""
Writer = Callable[[Session, int, uuid.UUID], None]


def _event(i: int, tenant: uuid.UUID) -> dict[str, object]:
    return {
        "chain_id": "global", "ts": datetime.now(UTC), "actor": f"principal-{i % 5}",
        "action": AuditAction.recording_read.value, "outcome": "ok", "tenant_id": tenant,
        "target": str(uuid.uuid4()), "purpose": "troubleshooting", "grant_id": None,
    }  # fmt: skip


def plain(session: Session, i: int, tenant: uuid.UUID) -> None:
    row = _event(i, tenant)
    text = audit.canonical_json({**row, "ts": audit.format_ts(row["ts"]),  # type: ignore[arg-type]
                                 "tenant_id": str(tenant), "details": {"i": i}})  # fmt: skip
    # A prebuilt statement, as audit.record uses: the same Python work per row, or less.
    session.execute(PLAIN_INSERT, {**row, "hash": audit.hash_canonical(text), "canonical": text})


def merkle(session: Session, i: int, tenant: uuid.UUID) -> None:
    audit.record(
        session, action=AuditAction.recording_read, actor=f"principal-{i % 5}",
        now=datetime.now(UTC), tenant_id=tenant, target=str(uuid.uuid4()),
        purpose="troubleshooting", details={"i": i},
    )  # fmt: skip


def chain(session: Session, i: int, tenant: uuid.UUID) -> None:
    """The pre-#13 append: one global lock, read the head, name it in the new event."""
    audit.acquire_append_lock(session)
    seq, prev = session.execute(
        sa.text("SELECT seq, hash FROM bench_chain ORDER BY seq DESC LIMIT 1")
    ).first() or (0, audit.GENESIS_HASH)
    text = audit.canonical_json({"seq": seq + 1, "prev_hash": prev, "i": i, "t": str(tenant)})
    session.execute(
        sa.text("INSERT INTO bench_chain (seq, hash, canonical) VALUES (:s, :h, :c)"),
        {"s": seq + 1, "h": audit.hash_canonical(text), "c": text},
    )


def run(db: Database, write: Writer, seconds: float) -> float:
    """Commits per second of WRITERS threads, each committing one event at a time."""
    tenants = [uuid.uuid4() for _ in range(TENANTS)]
    stop, counts = threading.Event(), [0] * WRITERS
    start = threading.Barrier(WRITERS + 1)

    def writer(w: int) -> None:
        start.wait()
        i = 0
        while not stop.is_set():
            with db.transaction() as s:
                write(s, i, tenants[(w + i) % TENANTS])
            i += 1
        counts[w] = i

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def main() -> dict[str, float]:
    base = os.environ.get("CALLVAULT_BENCH_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/")
    seconds = float(os.environ.get("CALLVAULT_BENCH_AUDIT_SECONDS", "3"))
    runs = int(os.environ.get("CALLVAULT_BENCH_AUDIT_RUNS", "3"))
    with temp_database(base) as url:
        db = Database.from_url(url)  # the vault's own engine and pool settings
        try:
            migrate(db.engine)
            with db.engine.begin() as conn:
                conn.exec_driver_sql("CREATE SEQUENCE bench_plain_seq")
                conn.exec_driver_sql(PLAIN_DDL)
                conn.exec_driver_sql(
                    "CREATE TABLE bench_chain (seq BIGINT PRIMARY KEY, hash VARCHAR(64) NOT NULL,"
                    " canonical TEXT NOT NULL)"
                )
            rates: dict[str, list[float]] = {"plain": [], "merkle": [], "chain": []}
            for _ in range(runs):
                for name, fn in (("plain", plain), ("merkle", merkle), ("chain", chain)):
                    rates[name].append(run(db, fn, seconds))
            with db.reading() as s:
                waiting = audit.stats(s, now=datetime.now(UTC)).unsequenced
            t0 = time.perf_counter()
            sequenced = tree.sequence(db, wait=True)
            seq_rate = sequenced / (time.perf_counter() - t0)
            assert sequenced == waiting
        finally:
            db.dispose()
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = med["merkle"] / med["plain"]
    report(
        "audit",
        [
            ("writers x tenants", f"{WRITERS} x {TENANTS}, one commit per event"),
            ("plain table", f"{med['plain']:.0f} appends/s (median of {runs} x {seconds:.0f} s)"),
            ("merkle log", f"{med['merkle']:.0f} appends/s"),
            ("old chain", f"{med['chain']:.0f} appends/s (emulated: lock, head read)"),
            ("merkle / plain", f"{ratio:.2f} x (target >= 0.5)"),
            ("chain / plain", f"{med['chain'] / med['plain']:.2f} x"),
            ("sequencer", f"{seq_rate:.0f} leaves/s ({sequenced} leaves)"),
        ],
        {"rates": rates, "median": med, "ratio": ratio, "sequencer_leaves_per_s": seq_rate},
    )
    return {"ratio": ratio}


if __name__ == "__main__":
    main()
