"""Read-only units on PostgreSQL (``Database.reading``, issue #12) run on a pool of their own,
read-only and in autocommit: no transaction is left open between statements, the driver's
prepared statements survive from one unit to the next, and a write or a row lock tried in one
is refused by the server instead of being rolled back unseen. On SQLite a read unit is a
deferred transaction that never takes the write lock. No server-side cursor outlives its
statement in autocommit: the evidence report's scans page by key instead."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import psycopg
import pytest
import sqlalchemy as sa
from sqlmodel import select

from tests.jobs.helpers import make_tenant
from vault import audit
from vault.authz import Actor
from vault.context import Context
from vault.models import AuditEvent, Tenant
from vault.reports import evidence
from vault.tags import AuditAction


@pytest.fixture
def pg(make_ctx: Callable[..., Context]) -> Context:
    return make_ctx(db="postgres", store="local")


def test_a_read_unit_leaves_no_transaction_open_between_statements(pg: Context) -> None:
    make_tenant(pg, "acme")
    with pg.db.reading() as s:
        assert [t.name for t in s.exec(select(Tenant)).all()] == ["acme"]
        raw = s.connection().connection.dbapi_connection
        assert raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # type: ignore[union-attr]


def test_prepared_statements_survive_from_one_read_unit_to_the_next(pg: Context) -> None:
    tenant = make_tenant(pg, "acme")
    for _ in range(8):  # psycopg prepares a statement at its fifth run on a connection
        with pg.db.reading() as s:
            assert s.get(Tenant, tenant.id, populate_existing=True) is not None
    with pg.db.reading() as s:
        prepared = s.connection().exec_driver_sql("SELECT count(*) FROM pg_prepared_statements")
        assert prepared.scalar_one() >= 1


def test_a_write_in_a_read_unit_is_refused_not_rolled_back_unseen(pg: Context) -> None:
    with pytest.raises(sa.exc.InternalError, match="read-only transaction"), pg.db.reading() as s:
        s.add(Tenant(name="smuggled", created_at=pg.now()))
        s.flush()
    with pg.db.reading() as s:
        assert s.exec(select(Tenant).where(Tenant.name == "smuggled")).first() is None


def test_a_row_lock_in_a_read_unit_is_refused(pg: Context) -> None:
    """A lock taken in autocommit would end with its statement: the server refuses it."""
    make_tenant(pg, "acme")
    with pytest.raises(sa.exc.InternalError, match="read-only transaction"), pg.db.reading() as s:
        s.exec(select(Tenant).with_for_update()).all()


def test_the_units_that_write_are_untouched(pg: Context) -> None:
    make_tenant(pg, "acme")
    with pg.db.transaction() as s:
        tenant = s.exec(select(Tenant).with_for_update()).one()
        tenant.status = "offboarding"
    with pg.db.reading() as s:
        assert s.exec(select(Tenant.status)).one() == "offboarding"


def test_the_evidence_reports_long_reads_page_by_key_and_miss_nothing(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No server-side cursor outlives a statement in autocommit, so the report's scans over the
    audit log page by ``seq``: every event once, in order, across page boundaries."""
    tenant = make_tenant(ctx, "acme")
    with ctx.db.transaction() as s:
        for i in range(7):
            audit.record(
                s, action=AuditAction.integrity_alarm, actor="system:test", now=ctx.now(),
                tenant_id=tenant.id, details={"source": f"s{i % 2}"},
            )  # fmt: skip
    monkeypatch.setattr(evidence, "_PAGE", 3)
    query = select(AuditEvent).where(AuditEvent.action == AuditAction.integrity_alarm.value)
    with ctx.db.reading() as s:
        seqs = [ev.seq for ev in evidence._each(s, query)]
        assert len(seqs) == 7 and seqs == sorted(seqs)
        figures = evidence._alarms(s, Actor.operator(), ctx.now() - timedelta(days=1),
                                   ctx.now() + timedelta(days=1))  # fmt: skip
    assert figures == {"count": 7, "by_source": {"s0": 4, "s1": 3}}
