"""An in-process API under test: its client, its context and the keys of its principals."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.testclient import TestClient

from vault.context import Context


@dataclass
class Api:
    client: TestClient
    ctx: Context
    keys: dict[str, str]

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}
