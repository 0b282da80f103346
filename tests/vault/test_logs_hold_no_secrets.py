"""Nothing private in the logs: a representative day (ingest, access, playback, purge, erasure,
and failures along the way) is logged at DEBUG, SQLAlchemy's statement log included, and every
line is scanned for the API keys, the wrapped DEKs, the call ids, the owners' e-mail addresses
and a plaintext marker the scenario created. None may appear: a log line is out of reach of any
erasure."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from jobs.tasks import run_all
from tests.support.clock import FakeClock
from vault.app import create_app
from vault.authz import Actor
from vault.context import Context
from vault.identity import principals
from vault.identity.owners import owner_of
from vault.logs import JsonFormatter
from vault.models import Recording
from vault.setup import initialise

MARKER = b"PLAINTEXT-MARKER-7f3a"
CALL_ID = "call-private-9c1e"


def test_a_days_work_leaves_nothing_private_in_the_logs(
    make_ctx: Callable[..., Context], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)  # as with echo=True
    ctx = make_ctx(db="postgres", store="s3", clock=clock)
    admin = initialise(ctx, now=ctx.now())
    assert admin is not None
    owners = {role: f"{role}.person@acme.example" for role in ("ingest", "engineer", "approver")}
    keys = {"admin": admin}
    with TestClient(create_app(ctx.settings, ctx=ctx)) as client:
        as_admin = {"Authorization": f"Bearer {admin}"}
        client.post("/v1/tenants", json={"name": "acme"}, headers=as_admin)
        owner_ids = {role: owner_of(ctx.keys, owner) for role, owner in owners.items()}
        with ctx.db.transaction() as s:
            for role, owner_id in owner_ids.items():
                _, keys[role] = principals.add_principal(
                    s, actor=Actor.operator(), name=f"p-{role}", role=role, owner=owner_id,
                    tenants=["acme"], all_tenants=False, now=ctx.now(),
                )  # fmt: skip

        def h(who: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {keys[who]}"}

        body = MARKER * 40_000  # two segments and more
        rid = client.post(
            "/v1/recordings", params={"tenant": "acme", "purposes": "troubleshooting",
                                      "call_id": CALL_ID},
            content=body, headers={**h("ingest"), "Content-Type": "video/mp4"},
        ).json()["id"]  # fmt: skip
        req = client.post("/v1/access-requests", headers=h("engineer"), json={
            "recording_ids": [rid], "purpose": "troubleshooting", "ticket": "OPS-7",
            "reason": "one-way audio on the call", "duration_minutes": 30,
        }).json()  # fmt: skip
        client.post(f"/v1/access-requests/{req['id']}/approve", headers=h("approver"), json={})
        assert client.get(f"/v1/recordings/{rid}/content", headers=h("engineer")).content == body
        # Failures on the way: a bad key, a forbidden read, a bad body, a missing recording.
        client.get("/v1/recordings", headers={"Authorization": f"Bearer {keys['engineer']}x"})
        client.get(f"/v1/recordings/{rid}/content", headers=h("approver"))
        client.post("/v1/recordings", params={"tenant": "acme", "purposes": "nope",
                                              "call_id": CALL_ID},
                    content=b"x", headers={**h("ingest"), "Content-Type": "video/mp4"})  # fmt: skip
        # Erasure by call id, then purge and shred through every job.
        privacy_owner = owner_of(ctx.keys, "privacy.person@acme.example")
        with ctx.db.transaction() as s:
            _, privacy = principals.add_principal(
                s, actor=Actor.operator(), name="p-privacy", role="privacy",
                owner=privacy_owner, tenants=[], all_tenants=True, now=ctx.now(),
            )  # fmt: skip
        client.post("/v1/erasure-requests", headers={"Authorization": f"Bearer {privacy}"},
                    json={"tenant": "acme", "call_id": CALL_ID})  # fmt: skip
        with ctx.db.session() as s:
            wrapped = [r.wrapped_dek for r in s.exec(select(Recording)).all() if r.wrapped_dek]
        clock.advance(days=40)
        assert all(o.ok for o in run_all(ctx, ctx.now(), force=True))

    formatter = JsonFormatter()
    # The test's own HTTP client logs its request URLs: that is the client's log, not ours.
    ours = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    text = "\n".join(formatter.format(r) + " " + repr(r.args) for r in ours)
    assert "sqlalchemy.engine" in text  # the statement log was on, with its parameters hidden
    secrets = [*keys.values(), privacy, *wrapped, CALL_ID, *owners.values(), MARKER.decode()]
    for secret in secrets:
        assert secret and secret not in text, f"{secret[:12]}... appears in the logs"
