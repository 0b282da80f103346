"""An in-process API with the principals a tenant change needs: an admin who proposes, a
privacy officer of another owner who approves, and a privacy key of the admin's own owner."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.support.api import Api, principal_key
from tests.support.clock import FakeClock
from tests.vault.test_recordings import make_tenant
from vault.app import create_app
from vault.authz import Actor
from vault.context import Context
from vault.identity import principals
from vault.identity.owners import owner_of
from vault.setup import initialise


@pytest.fixture
def api(ctx: Context, clock: FakeClock) -> Iterator[Api]:
    initialise(ctx, now=clock())  # also records the KEK version in the DB
    make_tenant(ctx, "acme")
    make_tenant(ctx, "globex")
    keys = {
        "admin": principal_key(ctx, "admin", "admin", []),
        "dpo": principal_key(ctx, "dpo", "privacy", []),
        "ingest": principal_key(ctx, "ingest", "ingest", ["acme"]),
        "eng": principal_key(ctx, "eng", "engineer", ["acme"]),
        "eng2": principal_key(ctx, "eng2", "engineer", ["acme", "globex"]),
    }
    # The admin's own person holding a privacy key: four-eyes must still count one person.
    with ctx.db.transaction() as s:
        _, keys["admin-as-dpo"] = principals.add_principal(
            s, actor=Actor.operator(), name="admin-privacy", role="privacy",
            owner=owner_of(ctx.keys, "admin@example.com"), tenants=[], all_tenants=True,
            now=clock(),
        )  # fmt: skip
    with TestClient(create_app(ctx.settings, ctx=ctx)) as client:
        yield Api(client=client, ctx=ctx, keys=keys)
