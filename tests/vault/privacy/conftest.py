"""A vault on both databases with the principals the privacy tests need, served in process."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import col, select

from crypto import streaming
from tests.support.api import principal_key
from tests.support.clock import FakeClock
from vault.access import grants
from vault.app import create_app
from vault.authz import Actor
from vault.context import Context
from vault.identity import authentication
from vault.identity.tenants import create_tenant
from vault.models import AuditEvent
from vault.recordings.ingest import ingest as ingest_recording
from vault.setup import initialise

SEG = streaming.SEGMENT_PLAINTEXT
PROBLEM = "application/problem+json"
TYPE = "https://callvault.dev/problems/"

# name -> (role, tenants); no tenants: all tenants
PRINCIPALS = {
    "eng": ("engineer", ["acme"]),
    "approver": ("approver", ["acme"]),
    "security": ("security", []),
    "security2": ("security", []),
    "privacy": ("privacy", ["acme"]),
    "privacy-all": ("privacy", []),
    "privacy-globex": ("privacy", ["globex"]),
}


@dataclass
class Vault:
    ctx: Context
    client: TestClient
    clock: FakeClock
    keys: dict[str, str]
    actors: dict[str, Actor]

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    def post(self, who: str, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.client.post(path, json=body, headers=self.h(who))

    def ingest(
        self, data: bytes, *, call_id: str, tenant: str = "acme",
        purposes: tuple[str, ...] = ("troubleshooting", "security"),
    ) -> uuid.UUID:  # fmt: skip
        rec = ingest_recording(
            self.ctx, actor=Actor.operator(), tenant=tenant, purposes=list(purposes),
            call_id=call_id, recorded_at=None, content_type="application/octet-stream",
            chunks=[data], expected_length=len(data),
        )  # fmt: skip
        return rec.id

    def grant(self, who: str, rid: uuid.UUID, *, minutes: float = 60) -> uuid.UUID:
        actor = self.actors[who]
        now = self.clock()
        with self.ctx.db.transaction() as s:
            g = grants.issue_grant(
                s, principal_id=actor.id, owner=actor.owner, purpose="troubleshooting",
                recording_ids=[rid], not_before=now, expires_at=now + timedelta(minutes=minutes),
            )  # fmt: skip
            return g.id

    def request(self, rid: uuid.UUID, who: str = "eng") -> httpx.Response:
        return self.post(who, "/v1/access-requests", {
            "recording_ids": [str(rid)], "purpose": "troubleshooting",
            "reason": "customer reports one-way audio", "ticket": "OPS-42",
            "duration_minutes": 30,
        })  # fmt: skip

    def restrict(
        self, rid: uuid.UUID, who: str = "privacy", *, lift: bool = False
    ) -> httpx.Response:
        path = f"/v1/recordings/{rid}/restriction" + ("/lift" if lift else "")
        return self.post(who, path, {"reason": "data subject contests accuracy (art. 18)"})

    def events(self, action: str | None = None) -> list[dict[str, Any]]:
        with self.ctx.db.session() as s:
            stmt = select(AuditEvent.canonical).order_by(col(AuditEvent.seq))
            if action is not None:
                stmt = stmt.where(AuditEvent.action == action)
            return [json.loads(r) for r in s.exec(stmt).all()]

    def audit_text(self) -> str:
        with self.ctx.db.session() as s:
            return "\n".join(s.exec(select(AuditEvent.canonical)).all())


def consume(
    resp: httpx.Response, on_chunk: Callable[[int], None]
) -> tuple[bytes, BaseException | None]:
    """Read a streamed body chunk by chunk; return what arrived and how it ended."""
    got = bytearray()
    try:
        for chunk in resp.iter_raw():
            got += chunk
            on_chunk(len(got))
    except Exception as exc:
        return bytes(got), exc
    return bytes(got), None


def caused_by(exc: BaseException | None, kind: type[BaseException]) -> bool:
    """Starlette re-raises an error after the response started wrapped in a RuntimeError."""
    for _ in range(10):
        if exc is None:
            return False
        if isinstance(exc, kind):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def problem(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"] == TYPE + code


@pytest.fixture
def vault(ctx: Context, clock: FakeClock) -> Iterator[Vault]:
    initialise(ctx, now=ctx.now())
    with ctx.db.transaction() as s:
        for name in ("acme", "globex"):
            create_tenant(s, actor=Actor.operator(), name=name, region=None, now=ctx.now())
    keys = {n: principal_key(ctx, n, role, ts) for n, (role, ts) in PRINCIPALS.items()}
    with ctx.db.session() as s:
        actors = {
            n: authentication.authenticate(s, api_key=k, now=ctx.now()) for n, k in keys.items()
        }
    with TestClient(create_app(ctx.settings, ctx=ctx)) as client:
        yield Vault(ctx=ctx, client=client, clock=clock, keys=keys, actors=actors)


@pytest.fixture(scope="session")
def media() -> bytes:
    return os.urandom(4 * SEG)  # several segments, so a stream can be cut between them
