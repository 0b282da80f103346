"""The single-recording GET (two Core statements, issue #12) answers exactly what the batch path
of the list answers, for a recording with every kind of fact, on both databases; and a recording
of another tenant is the same 404, audited as a denial."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from tests.jobs.helpers import events, ingest, make_tenant, set_columns
from vault.authz import Actor
from vault.context import Context
from vault.errors import NotFoundError
from vault.models import Recording, Role
from vault.privacy import restriction
from vault.recordings import metadata
from vault.retention import holds


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
    assert single.restricted and len(single.holds) == 2 and len(single.derivatives) == 2
    assert [p.active for p in single.purposes] == [True, False]  # security, troubleshooting


def test_another_tenants_recording_is_a_404_and_a_denial(ctx: Context) -> None:
    theirs = ingest(ctx, make_tenant(ctx, "globex"), b"g" * 10)
    acme = make_tenant(ctx, "acme")
    eve = Actor(id=uuid.uuid4(), name="eve", role=Role.engineer, owner="eve-ref",
                tenant_ids=frozenset({acme.id}))  # fmt: skip
    with pytest.raises(NotFoundError), ctx.db.reading() as s:
        metadata.get_recording(s, actor=eve, recording_id=theirs.id, now=ctx.now())
    assert events(ctx, "permission.denied", str(theirs.id))
