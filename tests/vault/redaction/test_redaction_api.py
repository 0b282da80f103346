"""Redaction over the API (roles, scope, status, manifest) and on expiry through the jobs."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from jobs.tasks import run as run_job
from tests.support.api import Api
from tests.support.clock import FakeClock
from tests.vault.redaction.test_redaction import clips, store  # noqa: F401  (a fixture)
from tests.vault.test_recordings import assert_chain_ok, events
from vault.app import create_app
from vault.authz import Actor
from vault.context import Context
from vault.identity import principals
from vault.identity.owners import owner_of
from vault.identity.tenants import create_tenant
from vault.models import Manifest, Recording, RecordingPurpose, RecordingStatus, Redaction
from vault.recordings import metadata
from vault.retention import erasure, holds
from vault.setup import initialise

OP = Actor.operator()
TYPE = "https://callvault.dev/problems/"


@pytest.fixture
def api(make_ctx: Callable[..., Context], clock: FakeClock) -> Iterator[Api]:
    ctx = make_ctx(db="postgres", store="s3", clock=clock)
    initialise(ctx, now=ctx.now())
    people = {"privacy-acme": ("privacy", ["acme"]), "privacy-globex": ("privacy", ["globex"]),
              "eng-acme": ("engineer", ["acme"]), "auditor": ("auditor", [])}  # fmt: skip
    owners = {name: owner_of(ctx.keys, f"{name}@example.com") for name in people}
    keys = {}
    with ctx.db.transaction() as s:
        for tenant in ("acme", "globex"):
            create_tenant(s, actor=OP, name=tenant, region=None, now=ctx.now())
        for name, (role, tenants) in people.items():
            _, keys[name] = principals.add_principal(
                s, actor=OP, name=name, role=role, owner=owners[name], tenants=tenants,
                all_tenants=not tenants, now=ctx.now(),
            )  # fmt: skip
    with TestClient(create_app(ctx.settings, ctx=ctx)) as client:
        yield Api(client, ctx, keys)


def problem(r: object, status: int, code: str) -> None:
    assert r.status_code == status, r.text  # type: ignore[attr-defined]
    assert r.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    assert r.json()["type"] == TYPE + code  # type: ignore[attr-defined]


def test_redaction_over_the_api(api: Api, clips: dict[str, bytes]) -> None:  # noqa: F811
    parent = store(api.ctx, clips["call"])
    url = f"/v1/recordings/{parent.id}/redactions"
    body = {"profile": "network-diagnostics", "purposes": ["troubleshooting"]}
    problem(api.client.post(url, json=body, headers=api.h("eng-acme")), 403, "forbidden")
    problem(api.client.post(url, json=body, headers=api.h("privacy-globex")), 404, "not-found")
    problem(api.client.post(url, json={**body, "profile": "nope"}, headers=api.h("privacy-acme")),
            422, "unknown-profile")  # fmt: skip
    problem(api.client.post(url, json={**body, "purposes": ["fraud"]},
                            headers=api.h("privacy-acme")), 422, "invalid-input")  # fmt: skip
    problem(api.client.post(url, json={**body, "purposes": [True]},
                            headers=api.h("privacy-acme")), 422, "invalid-input")  # fmt: skip
    r = api.client.post(url, json=body, headers=api.h("privacy-acme"))
    assert r.status_code == 202, r.text
    red = r.json()
    assert (red["status"], red["trigger"], red["progress"]) == ("queued", "request", 0)
    problem(api.client.get(f"/v1/redactions/{red['id']}", headers=api.h("privacy-globex")),
            404, "not-found")  # fmt: skip

    assert run_job("redact", api.ctx, api.ctx.now()) == "1 redaction(s) verified, 0 failed"
    done = api.client.get(f"/v1/redactions/{red['id']}", headers=api.h("privacy-acme")).json()
    assert (done["status"], done["progress"], done["failed_check"]) == ("verified", 100, None)
    child = done["derivative_id"]
    meta = api.client.get(f"/v1/recordings/{parent.id}", headers=api.h("auditor")).json()
    assert meta["derivatives"] == [child]
    shown = api.client.get(f"/v1/recordings/{child}/manifest", headers=api.h("auditor"))
    assert shown.status_code == 200, shown.text
    doc = shown.json()["manifest"]
    assert doc["type"] == "callvault.redaction-manifest" and doc["recording_id"] == child
    problem(api.client.get(f"/v1/recordings/{parent.id}/manifest", headers=api.h("auditor")),
            404, "not-found")  # fmt: skip
    problem(api.client.get(f"/v1/recordings/{child}/manifest", headers=api.h("privacy-globex")),
            404, "not-found")  # fmt: skip
    # An edited manifest row is not a manifest: its signature no longer holds.
    with api.ctx.db.transaction() as s:
        row = s.get(Manifest, uuid.UUID(child))
        assert row is not None
        row.canonical = row.canonical.replace('"passed":true', '"passed":false', 1)
    problem(api.client.get(f"/v1/recordings/{child}/manifest", headers=api.h("auditor")),
            500, "integrity-failure")  # fmt: skip


def test_redact_on_expiry_end_to_end(
    make_ctx: Callable[..., Context], clock: FakeClock, clips: dict[str, bytes],  # noqa: F811
    tmp_path: Path,
) -> None:  # fmt: skip
    policy = tmp_path / "policy.toml"
    policy.write_text(
        "[purposes.troubleshooting]\nretention_days = 1\nmax_access_minutes = 60\napprovals = 1\n"
        'approver_roles = ["approver"]\non_expiry = "redact"\n'
        'redaction_profile = "network-diagnostics"\nderivative_retention_days = 10\n'
        "[purposes.fraud]\nretention_days = 1\nmax_access_minutes = 60\napprovals = 1\n"
        'approver_roles = ["security"]\non_expiry = "delete"\n'
    )
    ctx = make_ctx(db="postgres", store="s3", clock=clock, policy_file=policy)
    expiring = store(ctx, clips["call"])
    held = store(ctx, clips["call"])
    erased = store(ctx, clips["call"])
    corrupt = store(ctx, os.urandom(200_000))
    ended = store(ctx, clips["call"])
    deleted = store(ctx, clips["call"], purposes=("fraud",))
    with ctx.db.transaction() as s:
        holds.create_hold(s, actor=OP, store=ctx.store, case_ref="CASE-1", reason="litigation",
                          recording_ids=[held.id], now=ctx.now())  # fmt: skip
        erasure.create_request(s, actor=OP, policy=ctx.policy, recording_ids=[erased.id],
                               reason="data subject request", now=ctx.now())  # fmt: skip
        metadata.end_purpose(s, actor=OP, recording_id=ended.id, purpose="troubleshooting",
                             reason="consent withdrawn", now=ctx.now())  # fmt: skip
    clock.advance(days=2)
    for job in ("erasure", "dispose"):
        run_job(job, ctx, ctx.now())

    with ctx.db.reading() as s:
        recs = {r.id: r for r in s.exec(select(Recording)).all()}
        reds = {r.recording_id: r for r in s.exec(select(Redaction)).all()}
        purposes = s.exec(select(RecordingPurpose)).all()
    status = {rid: recs[rid].status for rid in
              (expiring.id, held.id, erased.id, corrupt.id, ended.id, deleted.id)}  # fmt: skip
    assert status == {expiring.id: "disposed", held.id: "stored", erased.id: "disposed",
                      corrupt.id: "disposed", ended.id: "disposed", deleted.id: "disposed"}
    # Only the recording that expired by retention under a "redact" purpose got a derivative;
    # the corrupt one failed by name and was disposed of on schedule anyway.
    assert set(reds) == {expiring.id, corrupt.id}
    assert (reds[corrupt.id].status, reds[corrupt.id].failed_check) == ("failed", "input-not-media")
    made = reds[expiring.id]
    assert made.status == "verified" and made.trigger == "expiry"
    child = recs[made.derivative_id]  # type: ignore[index]
    assert child.status == RecordingStatus.stored and child.call_id is None
    assert [(p.purpose, p.expires_at) for p in purposes if p.recording_id == child.id] == [
        ("troubleshooting", ctx.now() + ctx.policy.purpose("troubleshooting").derivative_retention)
    ]
    failed = [json.loads(e.canonical)["details"] for e in events(ctx, "redaction.failed")]
    assert [f["check"] for f in failed] == ["input-not-media"]

    # The derivative expires in turn: disposed of, never redacted again.
    clock.advance(days=11)
    run_job("dispose", ctx, ctx.now())
    with ctx.db.reading() as s:
        assert s.get(Recording, child.id).status == "disposed"  # type: ignore[union-attr]
        assert len(s.exec(select(Redaction)).all()) == 2
    assert_chain_ok(ctx)
