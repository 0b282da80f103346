"""The single-recording GET (one Core statement, issue #12) answers exactly what the batch path
of the list answers, for a recording with every kind of fact, on both databases, through the
session and through the API's path (``read_recording``: on the event loop on PostgreSQL); and
a recording of another tenant or a role without the permission is the same refusal either way,
audited as a denial."""

from __future__ import annotations

import functools
import uuid
from datetime import timedelta
from typing import Any

import anyio
import psycopg
import pytest
import sqlalchemy as sa

from tests.jobs.helpers import events, ingest, make_tenant, set_columns
from vault.authz import Actor
from vault.context import Context
from vault.db import READ_ONLY
from vault.errors import NotFoundError, PermissionDeniedError
from vault.models import Recording, RecordingPublic, Role
from vault.privacy import restriction
from vault.recordings import metadata
from vault.retention import holds


def _read(ctx: Context, **kwargs: Any) -> RecordingPublic:
    """The API's path (on the event loop on PostgreSQL), from a test's own event loop."""
    return anyio.run(functools.partial(metadata.read_recording, ctx.db, **kwargs))


def test_the_single_get_equals_the_batch_answer(ctx: Context) -> None:
    tenant = make_tenant(ctx)
    parent = ingest(ctx, tenant, b"p" * 100, purposes=("troubleshooting", "security"))
    children = [ingest(ctx, tenant, b"c" * 10) for _ in range(2)]
    for child in children:
        set_columns(ctx, child.id, parent_id=parent.id)
    op = Actor.operator()
    now = ctx.now()
    with ctx.db.transaction() as s:
        for case in ("case-b", "case-a"):
            holds.create_hold(
                s, actor=op, store=ctx.store, case_ref=case,
                reason="pending litigation over the call", recording_ids=[parent.id], now=now,
            )  # fmt: skip
        restriction.place_restriction(s, actor=op, recording_id=parent.id,
                                      reason="data subject contests accuracy", now=now)  # fmt: skip
    later = now + timedelta(days=45)  # troubleshooting (30 d) has lapsed, security not
    with ctx.db.reading() as s:
        single = metadata.get_recording(s, actor=op, recording_id=parent.id, now=later)
        rec = s.get(Recording, parent.id)
        assert rec is not None
        batch = metadata.to_public(s, rec, now=later)
    assert single == batch
    assert _read(ctx, actor=op, recording_id=parent.id, now=later) == batch
    assert single.restricted and len(single.holds) == 2 and len(single.derivatives) == 2
    assert [p.active for p in single.purposes] == [True, False]  # security, troubleshooting


def test_another_tenants_recording_is_a_404_and_a_denial(ctx: Context) -> None:
    theirs = ingest(ctx, make_tenant(ctx, "globex"), b"g" * 10)
    acme = make_tenant(ctx, "acme")
    eve = Actor(id=uuid.uuid4(), name="eve", role=Role.engineer, owner="eve-ref",
                tenant_ids=frozenset({acme.id}))  # fmt: skip
    with pytest.raises(NotFoundError), ctx.db.reading() as s:
        metadata.get_recording(s, actor=eve, recording_id=theirs.id, now=ctx.now())
    assert len(events(ctx, "permission.denied", str(theirs.id))) == 1
    # The API's path: the same 404 for theirs and for none at all; reaching for theirs is
    # audited (a missing id names nobody's recording: nothing to audit, as before).
    missing = uuid.uuid4()
    for rid in (theirs.id, missing):
        with pytest.raises(NotFoundError):
            _read(ctx, actor=eve, recording_id=rid, now=ctx.now())
    assert len(events(ctx, "permission.denied", str(theirs.id))) == 2
    assert events(ctx, "permission.denied", str(missing)) == []


def test_a_role_without_the_permission_is_refused_and_audited(ctx: Context) -> None:
    acme = make_tenant(ctx, "acme")
    mine = ingest(ctx, acme, b"m" * 10)
    monitor = Actor(id=uuid.uuid4(), name="svc", role=Role.monitor, owner="svc-ref",
                     tenant_ids=frozenset({acme.id}))  # fmt: skip
    with pytest.raises(PermissionDeniedError):
        _read(ctx, actor=monitor, recording_id=mine.id, now=ctx.now())
    denied = events(ctx, "permission.denied")
    assert denied and denied[-1].actor == monitor.audit_name


def test_a_single_read_opens_no_transaction_on_postgresql(ctx: Context) -> None:
    """The hot reads' bare connection (the metadata GET, the grant re-check while streaming):
    on PostgreSQL the statement runs in autocommit, so no BEGIN precedes it and nothing is left
    to roll back; on SQLite it is a deferred read that never queues for the write lock."""
    with ctx.db.single_read() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
        raw = conn.connection.dbapi_connection
        if ctx.db.is_postgres:
            assert raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # type: ignore[union-attr]
        else:
            assert conn.get_execution_options().get(READ_ONLY) is True
