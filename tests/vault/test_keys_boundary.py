"""The key-provider factory of the runtime context and the vault's key boundary.

``open_provider`` turns ``CALLVAULT_KEY_PROVIDER`` into a provider (a bad spec is a
``MisconfiguredError``: one line for the CLI, never a traceback); :class:`vault.keys.Keys`
translates every provider failure into a domain error, once.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from crypto.envelope import unwrap_dek, wrap_dek
from crypto.keys.local import LocalKeyring
from crypto.keys.transit import TransitKeyProvider
from tests.conftest import Bao
from vault.context import open_provider
from vault.errors import (
    KeyDestroyedError,
    KeyProviderUnavailableError,
    MisconfiguredError,
    WrappedKeyInvalidError,
)
from vault.keys import Keys

TENANT = "acme"
REC = uuid.UUID("6a1f0f3e-2a9c-4b7e-8f11-0c2d3e4f5a6b")


def test_open_provider_specs(tmp_path: Path) -> None:
    keydir = tmp_path / "k"
    with pytest.raises(MisconfiguredError, match="does not exist"):
        open_provider(f"local:{keydir}")
    ring = open_provider(f"local:{keydir}", create=True)
    assert isinstance(ring, LocalKeyring) and ring.path == keydir / "keyring.json"
    assert isinstance(open_provider(f"local:{keydir}"), LocalKeyring)

    transit = open_provider(
        "transit:https://bao.internal:8200", transit_token="t", transit_mount="tr"
    )
    assert isinstance(transit, TransitKeyProvider)
    assert transit.url == "https://bao.internal:8200" and transit.mount == "tr"

    for bad in (
        "",
        "local:",
        "file:/x",
        "transit:",
        "transit:ftp://h:1",
        "transit:http://:8200",
        "transit:http://h:99999",
        "transit:http://h:8200/v1/x",
        "transit:http://u:p@h:8200",
        "kms:whatever",
    ):
        with pytest.raises(MisconfiguredError):
            open_provider(bad, transit_token="t")
    with pytest.raises(MisconfiguredError, match="token"):
        open_provider("transit:http://127.0.0.1:8200")


def test_open_provider_transit_against_bao(bao: Bao) -> None:
    provider = open_provider(f"transit:{bao.url}/", transit_token=bao.token)
    provider.check()
    wrapped = wrap_dek(provider, b"\x01" * 32, tenant=TENANT, recording_id=REC)
    assert unwrap_dek(provider, wrapped, tenant=TENANT, recording_id=REC) == b"\x01" * 32




def test_keys_translate_every_provider_failure(tmp_path: Path) -> None:
    ring = LocalKeyring.open(tmp_path / "k" / "keyring.json", create=True)
    keys = Keys(ring)
    tenant = uuid.uuid4()
    stored = keys.encode(keys.wrap_dek(b"\x07" * 32, tenant_id=tenant, recording_id=REC))
    assert keys.unwrap_dek(stored, tenant_id=tenant, recording_id=REC) == b"\x07" * 32
    # Another context, a malformed text: the stored wrap does not open (an integrity finding).
    with pytest.raises(WrappedKeyInvalidError):
        keys.unwrap_dek(stored, tenant_id=uuid.uuid4(), recording_id=REC)
    with pytest.raises(WrappedKeyInvalidError):
        keys.unwrap_dek("cvk1:1:not-base64!", tenant_id=tenant, recording_id=REC)
    # A retired version: crypto-shredding did its work (answered 410).
    keys.rotate()
    keys.retire(1)
    with pytest.raises(KeyDestroyedError):
        keys.unwrap_dek(stored, tenant_id=tenant, recording_id=REC)
    # An unreachable provider: 503.
    down = Keys(TransitKeyProvider("http://127.0.0.1:9", "t", key_prefix="x"))
    with pytest.raises(KeyProviderUnavailableError):
        down.wrap_dek(b"\x07" * 32, tenant_id=tenant, recording_id=REC)
