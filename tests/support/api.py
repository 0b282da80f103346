"""An in-process API under test: its client, its context and the keys of its principals."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.testclient import TestClient

from vault.authz import Actor
from vault.context import Context
from vault.identity import principals
from vault.identity.owners import owner_of


@dataclass
class Api:
    client: TestClient
    ctx: Context
    keys: dict[str, str]

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


def principal_key(ctx: Context, name: str, role: str, tenants: list[str]) -> str:
    """A new principal ``name`` (owner ``name@example.com``) and its API key; no tenants means
    all tenants."""
    owner = owner_of(ctx.keys, f"{name}@example.com")
    with ctx.db.transaction() as s:
        _, key = principals.add_principal(
            s, actor=Actor.operator(), name=name, role=role, owner=owner,
            tenants=tenants, all_tenants=not tenants, now=ctx.now(),
        )  # fmt: skip
    return key
