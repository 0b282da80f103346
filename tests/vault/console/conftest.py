"""A small world for the console: tenants, principals with keys, recordings, and one browser-like
client per person (each with its own cookie jar), all on one app."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.jobs.helpers import event_documents
from tests.support.clock import FakeClock
from tests.vault.test_access import make_principal, make_recording, make_tenant
from vault.app import create_app
from vault.authz import Actor
from vault.context import Context
from vault.recordings.ingest import ingest as ingest_recording
from vault.setup import initialise

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
PEOPLE = {
    # name: (role, tenants, all_tenants, owner)
    "alice": ("engineer", ["acme"], False, None),
    "bob": ("approver", ["acme"], False, None),
    "olga": ("approver", ["other"], False, None),
    "sec": ("security", [], True, None),
    "sec2": ("security", [], True, None),
    "priv": ("privacy", ["acme"], False, None),
    "aud": ("auditor", [], True, None),
    "aud-acme": ("auditor", ["acme"], False, None),
}


class Browser:
    """One person's browser: a cookie jar and the page's CSRF token."""

    def __init__(self, app: Any, key: str) -> None:
        self.client = TestClient(app, follow_redirects=False)
        self.key = key

    def sign_in(self) -> httpx.Response:
        form = self.client.get("/console/sign-in").text
        found = re.search(r'name="sign_in_token" value="([^"]+)"', form)
        assert found, "the sign-in form carries no token"
        data = {"api_key": self.key, "sign_in_token": found.group(1)}
        return self.client.post("/console/sign-in", data=data)

    def page(self, path: str = "/console", **params: str) -> httpx.Response:
        return self.client.get(path, params=params)

    def csrf(self, path: str = "/console") -> str:
        found = CSRF_RE.search(self.page(path).text)
        assert found, "the page carries no CSRF token"
        return found.group(1)

    def post(
        self, path: str, data: dict[str, str], *, csrf: str | None = "page", **headers: str
    ) -> httpx.Response:
        body = dict(data)
        if csrf == "page":
            body["csrf"] = self.csrf()
        elif csrf is not None:
            body["csrf"] = csrf
        return self.client.post(path, data=body, headers=headers)

    @property
    def cookie(self) -> str:
        return self.client.cookies.get("callvault_console", path="/console") or ""


@dataclass
class ConsoleWorld:
    ctx: Context
    clock: FakeClock
    app: Any
    keys: dict[str, str]
    actors: dict[str, Actor]
    tenants: dict[str, Any]
    rids: dict[str, uuid.UUID] = field(default_factory=dict)

    def browser(self, who: str, *, signed_in: bool = True) -> Browser:
        b = Browser(self.app, self.keys[who])
        if signed_in:
            assert b.sign_in().status_code == 303
        return b

    def api(self, who: str) -> TestClient:
        return TestClient(self.app, headers={"Authorization": f"Bearer {self.keys[who]}"})

    def events(self, action: str) -> list[dict[str, Any]]:
        return event_documents(self.ctx, action)

    def ingest(self, data: bytes, *, tenant: str = "acme") -> uuid.UUID:
        rec = ingest_recording(
            self.ctx, actor=Actor.operator(), tenant=tenant, purposes=["troubleshooting"],
            call_id="call-console", recorded_at=None, content_type="video/mp4", chunks=[data],
            expected_length=len(data),
        )  # fmt: skip
        return rec.id


def build(ctx: Context, clock: FakeClock) -> ConsoleWorld:
    initialise(ctx, now=ctx.now())
    tenants = {n: make_tenant(ctx, n) for n in ("acme", "other")}
    keys, actors = {}, {}
    for name, (role, scope, every, owner) in PEOPLE.items():
        actor, key = make_principal(ctx, name, role, owner=owner, tenants=scope, all_tenants=every)
        keys[name], actors[name] = key, actor
    w = ConsoleWorld(ctx=ctx, clock=clock, app=create_app(ctx.settings, ctx=ctx), keys=keys,
                     actors=actors, tenants=tenants)  # fmt: skip
    w.rids["acme"] = make_recording(ctx, tenants["acme"])
    w.rids["other"] = make_recording(ctx, tenants["other"])
    return w


@pytest.fixture
def sqlite_world(make_ctx: Any, clock: FakeClock) -> Iterator[ConsoleWorld]:
    yield build(make_ctx(db="sqlite", store="local", clock=clock, auth_failure_limit=3), clock)


@pytest.fixture
def world(ctx: Context, clock: FakeClock) -> Iterator[ConsoleWorld]:
    """Both backends (SQLite + directory, PostgreSQL + SeaweedFS)."""
    yield build(ctx, clock)
