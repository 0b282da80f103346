"""The privacy office's vault (both databases; SeaweedFS with PostgreSQL) with what the
disclosure tests add: an age identity of the authority's, a principal sharing another's owner,
and helpers to register, approve and disclose."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyrage
import pytest
from sqlmodel import select

from tests.vault.privacy.conftest import Vault, vault  # noqa: F401 (fixture)
from vault.authz import Actor
from vault.identity import principals
from vault.identity.owners import owner_of
from vault.models import Export
from vault.models.disclosures import MAX_DISCLOSURE_RECORDINGS

__all__ = ["MAX_DISCLOSURE_RECORDINGS", "Authority", "Register"]

BASIS = "Court order under section 100a StPO (interception of telecommunications)"


class Authority:
    """The recipient: an age identity in a key file, as the authority would hold it."""

    def __init__(self, tmp: Path) -> None:
        self.identity = pyrage.x25519.Identity.generate()
        self.recipient = str(self.identity.to_public())
        self.key_file = tmp / "authority.key"
        self.key_file.write_text(str(self.identity) + "\n")
        self.key_file.chmod(0o600)


class Register:
    """The disclosure API as the tests drive it."""

    def __init__(self, v: Vault, authority: Authority) -> None:
        self.v, self.authority = v, authority

    def create(self, who: str = "privacy", **fields: Any) -> httpx.Response:
        body = {
            "authority": "Staatsanwaltschaft Berlin", "legal_basis": BASIS,
            "legal_reference": "AZ 231 Js 1234/26", "received_at": "2026-11-25T09:00:00Z",
            "recipient": self.authority.recipient, **fields,
        }  # fmt: skip
        return self.v.post(who, "/v1/disclosures", body)

    def new(self, recording_ids: list[uuid.UUID], **fields: Any) -> dict[str, Any]:
        r = self.create(recording_ids=[str(i) for i in recording_ids], **fields)
        assert r.status_code == 201, r.text
        return r.json()

    def approve(self, who: str, d: dict[str, Any], **over: Any) -> httpx.Response:
        body = {
            "revision": d["revision"], "recipient_fingerprint": d["recipient_fingerprint"],
            "verification": "fingerprint read back by phone to the prosecutor's office",
            **over,
        }  # fmt: skip
        return self.v.post(who, f"/v1/disclosures/{d['id']}/approve", body)

    def approved(self, d: dict[str, Any]) -> dict[str, Any]:
        for who in ("privacy-all", "security"):
            r = self.approve(who, d)
            assert r.status_code == 200, r.text
        assert r.json()["status"] == "approved"
        return r.json()

    def act(self, d: dict[str, Any], verb: str, body: dict[str, Any] | None = None,
            who: str = "privacy") -> httpx.Response:  # fmt: skip
        return self.v.post(who, f"/v1/disclosures/{d['id']}/{verb}", body or {})

    def get(self, d: dict[str, Any], who: str = "privacy") -> httpx.Response:
        return self.v.client.get(f"/v1/disclosures/{d['id']}", headers=self.v.h(who))

    def download(self, item: dict[str, Any], token: str | None = None, **headers: str) -> Any:
        h = {"X-Download-Token": item["token"] if token is None else token, **headers}
        return self.v.client.get(item["path"], headers=h)

    def exports(self) -> list[Export]:
        with self.v.ctx.db.session() as s:
            return list(s.exec(select(Export)).all())

    def same_owner_as(self, other: str, name: str, role: str) -> str:
        """A new principal of ``other``'s owner (one person, two keys); its API key."""
        ctx = self.v.ctx
        with ctx.db.transaction() as s:
            _, key = principals.add_principal(
                s, actor=Actor.operator(), name=name, role=role,
                owner=owner_of(ctx.keys, f"{other}@example.com"), tenants=[],
                all_tenants=True, now=ctx.now(),
            )  # fmt: skip
        self.v.keys[name] = key
        return key


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return Authority(tmp_path)


@pytest.fixture
def reg(vault: Vault, authority: Authority) -> Iterator[Register]:  # noqa: F811
    yield Register(vault, authority)


@pytest.fixture(scope="session")
def small_media() -> bytes:
    import os

    from crypto import streaming

    return os.urandom(streaming.SEGMENT_PLAINTEXT + 4321)  # two segments
