"""The envelope recipe over both providers: context binding, rewrap, shredding, parsing."""

from __future__ import annotations

import os
import typing
import uuid
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto.envelope import (
    context,
    decode_wrapped,
    encode_wrapped,
    new_dek,
    rewrap_dek,
    unwrap_dek,
    wrap_dek,
)
from crypto.errors import DecryptionError, KeyDestroyedError
from crypto.keys import KeyAdmin, KeyProvider, KeyWrapper, Signer, WrappedKey
from crypto.keys.local import LocalKeyring
from crypto.keys.transit import TransitKeyProvider
from tests.conftest import Bao

TENANT = "acme"
REC = uuid.UUID("6a1f0f3e-2a9c-4b7e-8f11-0c2d3e4f5a6b")


@pytest.fixture(params=["local", "transit"])
def provider(request: pytest.FixtureRequest, tmp_path: Path) -> KeyProvider:
    if request.param == "local":
        return LocalKeyring.open(tmp_path / "keys" / "keyring.json", create=True)
    bao: Bao = request.getfixturevalue("bao")
    # A fresh key prefix isolates this test's epoch from the others on the shared server.
    return TransitKeyProvider(bao.url, bao.token, key_prefix="e" + uuid.uuid4().hex[:12])


def test_context_is_tenant_then_recording_id() -> None:
    assert context(TENANT, REC) == b"acme" + REC.bytes
    assert context("ü", REC) == "ü".encode() + REC.bytes
    with pytest.raises(ValueError):
        context("", REC)
    with pytest.raises(TypeError):
        context(TENANT, str(REC))  # type: ignore[arg-type]


def test_new_dek() -> None:
    a, b = new_dek(), new_dek()
    assert len(a) == 32 and a != b
    assert new_dek(rng=lambda n: b"\x05" * n) == b"\x05" * 32
    with pytest.raises(ValueError):
        new_dek(rng=lambda n: b"short")


def test_roundtrip_and_binding(provider: KeyProvider) -> None:
    dek = new_dek()
    wrapped = wrap_dek(provider, dek, tenant=TENANT, recording_id=REC)
    assert unwrap_dek(provider, wrapped, tenant=TENANT, recording_id=REC) == dek
    with pytest.raises(DecryptionError):
        unwrap_dek(provider, wrapped, tenant="other", recording_id=REC)
    with pytest.raises(DecryptionError):
        unwrap_dek(provider, wrapped, tenant=TENANT, recording_id=uuid.uuid4())
    flipped = bytearray(wrapped.ciphertext)
    flipped[-3] ^= 0x01
    with pytest.raises(DecryptionError):
        unwrap_dek(
            provider,
            WrappedKey(wrapped.kek_version, bytes(flipped)),
            tenant=TENANT,
            recording_id=REC,
        )
    with pytest.raises(ValueError):
        wrap_dek(provider, b"\x00" * 16, tenant=TENANT, recording_id=REC)


def test_crypto_shred_lifecycle(provider: KeyProvider) -> None:
    """Rotate, rewrap the live row, retire: only copies left behind become useless."""
    dek_kept, dek_shredded = new_dek(), new_dek()
    rec_shredded = uuid.uuid4()
    kept = wrap_dek(provider, dek_kept, tenant=TENANT, recording_id=REC)
    shredded = wrap_dek(provider, dek_shredded, tenant=TENANT, recording_id=rec_shredded)
    db_backup = decode_wrapped(encode_wrapped(kept))  # a DB dump taken before the rotation

    v2 = provider.rotate()
    assert unwrap_dek(provider, kept, tenant=TENANT, recording_id=REC) == dek_kept
    kept_v2 = rewrap_dek(provider, kept, tenant=TENANT, recording_id=REC)
    assert kept_v2.kek_version == v2 == provider.current_version()
    # The shredded row's wrapped DEK was deleted from the DB instead of being rewrapped.
    provider.retire(v2 - 1)

    assert unwrap_dek(provider, kept_v2, tenant=TENANT, recording_id=REC) == dek_kept
    for stale, rec in ((kept, REC), (db_backup, REC), (shredded, rec_shredded)):
        with pytest.raises(KeyDestroyedError):
            unwrap_dek(provider, stale, tenant=TENANT, recording_id=rec)
    with pytest.raises(ValueError):
        provider.retire(v2)


def test_encode_decode_wrapped() -> None:
    w = WrappedKey(3, b"vault:v3:abc\x00\xff")
    text = encode_wrapped(w)
    assert text.startswith("cvk1:3:") and text.isascii()
    assert decode_wrapped(text) == w
    for bad in ("", "cvk1:0:AAAA", "cvk1:3:", "cvk2:3:AAAA", "cvk1:3:A", "cvk1:x:AAAA", "x" * 5):
        with pytest.raises(ValueError):
            decode_wrapped(bad)


# --- interfaces ---------------------------------------------------------------------------------


class AesGcmWrapper:
    """A KeyWrapper and nothing more: one in-memory AES-GCM key, always version 1."""

    def __init__(self) -> None:
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))

    def wrap(self, dek: bytes, *, tenant: str, associated_data: bytes) -> WrappedKey:
        nonce = os.urandom(12)
        return WrappedKey(1, nonce + self._aead.encrypt(nonce, dek, associated_data))

    def unwrap(self, wrapped: WrappedKey, *, tenant: str, associated_data: bytes) -> bytes:
        blob = wrapped.ciphertext
        try:
            return self._aead.decrypt(blob[:12], blob[12:], associated_data)
        except InvalidTag:
            raise DecryptionError() from None

    def rewrap(self, wrapped: WrappedKey, *, tenant: str, associated_data: bytes) -> WrappedKey:
        dek = self.unwrap(wrapped, tenant=tenant, associated_data=associated_data)
        return self.wrap(dek, tenant=tenant, associated_data=associated_data)


def test_providers_implement_each_protocol(provider: KeyProvider) -> None:
    for protocol in (KeyWrapper, KeyAdmin, Signer, KeyProvider):
        assert isinstance(provider, protocol), protocol.__name__


@pytest.mark.parametrize("fn", [wrap_dek, unwrap_dek, rewrap_dek])
def test_recipe_needs_only_a_key_wrapper(fn: typing.Callable[..., object]) -> None:
    assert typing.get_type_hints(fn)["provider"] is KeyWrapper


def test_recipe_works_with_a_bare_key_wrapper() -> None:
    wrapper = AesGcmWrapper()
    assert isinstance(wrapper, KeyWrapper)
    assert not isinstance(wrapper, KeyAdmin | Signer | KeyProvider)
    dek = new_dek()
    wrapped = wrap_dek(wrapper, dek, tenant=TENANT, recording_id=REC)
    assert unwrap_dek(wrapper, wrapped, tenant=TENANT, recording_id=REC) == dek
    rewrapped = rewrap_dek(wrapper, wrapped, tenant=TENANT, recording_id=REC)
    assert rewrapped != wrapped
    assert unwrap_dek(wrapper, rewrapped, tenant=TENANT, recording_id=REC) == dek
    with pytest.raises(DecryptionError):  # the recipe, not the wrapper, binds the context
        unwrap_dek(wrapper, wrapped, tenant=TENANT, recording_id=uuid.uuid4())
