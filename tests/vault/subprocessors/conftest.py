"""A vault with a sub-processor, an opted-in tenant and a recording whose transcription purpose
is active; the API with the keys of its principals (two sub-processors, an admin, an engineer,
a privacy officer)."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyrage
import pytest
from fastapi.testclient import TestClient

from tests.support.api import Api, principal_key
from tests.support.clock import FakeClock
from vault.app import create_app
from vault.authz import Actor
from vault.context import Context
from vault.identity.owners import owner_of
from vault.identity.tenants import create_tenant, resolve_tenant
from vault.models import Recording, SubprocessorCreate
from vault.recordings.ingest import ingest
from vault.setup import initialise
from vault.subprocessors import handoffs, registry
from vault.tenants import policy as tenant_policy

OP = Actor.operator()
MEDIA = os.urandom(300_000)


@dataclass
class World:
    api: Api
    ctx: Context
    clock: FakeClock
    identity: Any  # the sub-processor's age identity (pyrage.x25519.Identity)
    rid: uuid.UUID

    @property
    def client(self) -> TestClient:
        return self.api.client

    def h(self, who: str) -> dict[str, str]:
        return self.api.h(who)

    def run_job(self) -> handoffs.HandoffRun:
        return handoffs.run(self.ctx, now=self.clock())

    def authorise(self, tenant: str = "acme", **raw: Any) -> None:
        """Make ``raw`` the tenant's approved authorisations (the four-eyes flow has its tests
        in tests/vault/tenants; here only the outcome matters)."""
        parsed = tenant_policy.parse_authorisations(raw)
        with self.ctx.db.transaction() as s:
            tid = resolve_tenant(s, tenant).id
            tenant_policy.apply_authorisations(
                s, tenant_id=tid, change_id=uuid.uuid4(), authorisations=parsed, now=self.clock()
            )

    def ingest(
        self, purposes: tuple[str, ...] = ("transcription",), tenant: str = "acme"
    ) -> uuid.UUID:
        return ingest(
            self.ctx, actor=OP, tenant=tenant, purposes=list(purposes), call_id="call-1",
            recorded_at=None, content_type="video/mp4", chunks=[MEDIA],
        ).id  # fmt: skip

    def handoffs(self, who: str = "sp") -> list[dict[str, Any]]:
        r = self.client.get("/v1/handoffs", headers=self.h(who))
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def token(self, handoff_id: str, who: str = "sp") -> str:
        r = self.client.post(f"/v1/handoffs/{handoff_id}/claim", headers=self.h(who))
        assert r.status_code == 200, r.text
        sealed = base64.b64decode(r.json()["sealed_token"])
        return pyrage.decrypt(sealed, [self.identity]).decode()

    def media(self, handoff_id: str, token: str | None, rng: str | None = None,
              who: str = "sp") -> Any:  # fmt: skip
        headers = dict(self.h(who))
        if token is not None:
            headers["X-Handoff-Token"] = token
        if rng is not None:
            headers["Range"] = rng
        return self.client.get(f"/v1/handoffs/{handoff_id}/media", headers=headers)


SCRIBE = {"name": "scribe", "purpose": "transcription", "region": "eu",
          "contract_ref": "DPA-2026-017 (confidential annex)"}  # fmt: skip


def add_sp(ctx: Context, name: str, identity: Any, region: str = "eu") -> None:
    body = SubprocessorCreate(**{**SCRIBE, "name": name, "region": region,
                                 "age_recipient": str(identity.to_public())})  # fmt: skip
    with ctx.db.transaction() as s:
        registry.add_subprocessor(s, actor=OP, policy=ctx.policy, body=body, now=ctx.now())


def sp_key(ctx: Context, name: str, subprocessor: str) -> str:
    owner = owner_of(ctx.keys, f"{name}@scribe.example")
    with ctx.db.transaction() as s:
        _, key = registry.add_principal(
            s, actor=OP, name=name, owner=owner, subprocessor=subprocessor, now=ctx.now()
        )
    return key


def build_world(ctx: Context, clock: FakeClock) -> Iterator[World]:
    initialise(ctx, now=clock())
    with ctx.db.transaction() as s:
        create_tenant(s, actor=OP, name="acme", region="eu", now=clock())
        create_tenant(s, actor=OP, name="globex", region="eu", now=clock())
    identity = pyrage.x25519.Identity.generate()
    add_sp(ctx, "scribe", identity)
    add_sp(ctx, "otherscribe", pyrage.x25519.Identity.generate())
    keys = {
        "sp": sp_key(ctx, "scribe-bot", "scribe"),
        "sp2": sp_key(ctx, "other-bot", "otherscribe"),
        "admin": principal_key(ctx, "admin", "admin", []),
        "eng": principal_key(ctx, "eng", "engineer", ["acme"]),
        "dpo": principal_key(ctx, "dpo", "privacy", []),
    }
    with TestClient(create_app(ctx.settings, ctx=ctx)) as client:
        world = World(Api(client, ctx, keys), ctx, clock, identity, uuid.UUID(int=0))
        world.authorise(subprocessors=[
            {"subprocessor": "scribe", "opted_in": True, "instruction_ref": "ORDER-1"}
        ])  # fmt: skip
        world.rid = world.ingest()
        yield world


@pytest.fixture
def world(ctx: Context, clock: FakeClock) -> Iterator[World]:
    """On both backends: SQLite with a local directory, PostgreSQL with SeaweedFS."""
    yield from build_world(ctx, clock)


@pytest.fixture
def lite(make_ctx: Any, clock: FakeClock) -> Iterator[World]:
    """SQLite only, for the rules that do not depend on the backend."""
    yield from build_world(make_ctx(db="sqlite", store="local", clock=clock), clock)


def recording(ctx: Context, rid: uuid.UUID) -> Recording:
    with ctx.db.session() as s:
        rec = s.get(Recording, rid)
        assert rec is not None
        return rec
