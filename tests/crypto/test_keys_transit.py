"""TransitKeyProvider against a real OpenBao (session fixture ``bao``)."""

from __future__ import annotations

import base64
import contextlib
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import hvac
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from crypto.errors import DecryptionError, KeyDestroyedError, KeyProviderError
from crypto.keys.base import KeyProvider, WrappedKey
from crypto.keys.transit import TransitKeyProvider
from tests.conftest import Bao

TENANT = "3f0c6c1e-8a4b-4c52-9a57-1f6f2b0c9d11"
AD = TENANT.encode() + uuid.UUID(int=7).bytes


@pytest.fixture
def prefix() -> str:
    # A fresh prefix per test: each test gets its own epoch and tenant keys.
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def transit(bao: Bao, prefix: str) -> TransitKeyProvider:
    return TransitKeyProvider(bao.url, bao.token, key_prefix=prefix)


@pytest.fixture
def admin(bao: Bao) -> Any:
    return hvac.Client(url=bao.url, token=bao.token).secrets.transit


def key_config(admin: Any, name: str) -> dict[str, Any]:
    return admin.read_key(name)["data"]


def tamper(wrapped: WrappedKey) -> WrappedKey:
    """Flip one bit inside the base64 body, keeping the text well-formed."""
    head, body = wrapped.ciphertext.decode().rsplit(":", 1)
    raw = bytearray(base64.b64decode(body))
    raw[len(raw) // 2] ^= 0x01
    text = f"{head}:{base64.b64encode(bytes(raw)).decode()}"
    return WrappedKey(wrapped.kek_version, text.encode())


def test_roundtrip_and_key_config(transit: TransitKeyProvider, admin: Any) -> None:
    assert isinstance(transit, KeyProvider)
    assert transit.name == "transit"
    transit.check()
    dek = os.urandom(32)
    wrapped = transit.wrap(dek, tenant=TENANT, associated_data=AD)
    assert wrapped.kek_version == 1
    assert wrapped.ciphertext.startswith(b"vault:v1:")
    assert transit.unwrap(wrapped, tenant=TENANT, associated_data=AD) == dek

    config = key_config(admin, transit.key_name(TENANT))
    assert config["type"] == "aes256-gcm96"
    assert config["derived"] is True
    assert config["exportable"] is False
    assert config["allow_plaintext_backup"] is False


def test_key_names_are_safe_and_distinct(transit: TransitKeyProvider) -> None:
    p = transit.key_prefix
    assert transit.key_name(TENANT) == f"{p}-t-{TENANT}"
    assert transit.key_name("acme-eu") == f"{p}-t-acme-eu"
    odd = {"Acme", "acme/../x", "a b", "ünï", "-x", "x" * 200}
    names = {transit.key_name(t) for t in odd}
    assert len(names) == len(odd)
    for name in names:
        assert name.startswith(f"{p}-h-") and len(name) < 64
    with pytest.raises(ValueError):
        transit.key_name("")


def test_wrong_context_and_tampering(transit: TransitKeyProvider) -> None:
    other_tenant = "acme"
    wrapped = transit.wrap(os.urandom(32), tenant=TENANT, associated_data=AD)
    transit.wrap(os.urandom(32), tenant=other_tenant, associated_data=b"acme" + bytes(16))
    cases = [
        # another recording id, same tenant key
        (wrapped, TENANT, TENANT.encode() + uuid.UUID(int=8).bytes),
        # another tenant (its own key, its own context)
        (wrapped, other_tenant, other_tenant.encode() + uuid.UUID(int=7).bytes),
        # a tenant whose key does not exist at all
        (wrapped, "nobody", b"nobody" + uuid.UUID(int=7).bytes),
        (tamper(wrapped), TENANT, AD),
        (WrappedKey(1, wrapped.ciphertext.replace(b"vault:", b"vaulx:")), TENANT, AD),
        (WrappedKey(2, wrapped.ciphertext), TENANT, AD),  # DB version disagrees
        (WrappedKey(1, b"\xff" + wrapped.ciphertext), TENANT, AD),
    ]
    for candidate, tenant, ad in cases:
        with pytest.raises(DecryptionError):
            transit.unwrap(candidate, tenant=tenant, associated_data=ad)


def test_version_too_new_is_decryption_error(transit: TransitKeyProvider) -> None:
    wrapped = transit.wrap(os.urandom(32), tenant=TENANT, associated_data=AD)
    forged = wrapped.ciphertext.replace(b"vault:v1:", b"vault:v5:")
    with pytest.raises(DecryptionError):
        transit.unwrap(WrappedKey(5, forged), tenant=TENANT, associated_data=AD)


def test_rotate_rewrap_retire(transit: TransitKeyProvider, admin: Any) -> None:
    dek = os.urandom(32)
    original = transit.wrap(dek, tenant=TENANT, associated_data=AD)
    backup = WrappedKey(original.kek_version, bytes(original.ciphertext))  # "kept aside"

    assert transit.rotate() == 2
    assert transit.current_version() == 2
    assert transit.live_versions() == [1, 2]
    assert transit.unwrap(original, tenant=TENANT, associated_data=AD) == dek
    assert transit.wrap(dek, tenant=TENANT, associated_data=AD).kek_version == 2

    moved = transit.rewrap(original, tenant=TENANT, associated_data=AD)
    assert moved.kek_version == 2 and moved.ciphertext.startswith(b"vault:v2:")
    assert transit.unwrap(moved, tenant=TENANT, associated_data=AD) == dek
    with pytest.raises(DecryptionError):  # rewrap checks the context too
        transit.rewrap(original, tenant=TENANT, associated_data=AD + b"x")

    with pytest.raises(ValueError, match="newest"):
        transit.retire(2)
    transit.retire(1)
    transit.retire(1)  # idempotent

    assert transit.live_versions() == [2]
    for stale in (original, backup):
        with pytest.raises(KeyDestroyedError, match="KEK version 1 has been retired"):
            transit.unwrap(stale, tenant=TENANT, associated_data=AD)
        with pytest.raises(KeyDestroyedError):
            transit.rewrap(stale, tenant=TENANT, associated_data=AD)
    assert transit.unwrap(moved, tenant=TENANT, associated_data=AD) == dek

    # Destroyed, not just disabled: version 1 is trimmed from the tenant key and the epoch.
    for name in (transit.key_name(TENANT), transit.epoch_key):
        config = key_config(admin, name)
        assert set(config["keys"]) == {"2"}
        assert config["min_available_version"] == 2
        assert config["min_decryption_version"] == 2


def test_versions_are_one_epoch_across_tenants(transit: TransitKeyProvider, admin: Any) -> None:
    early = transit.wrap(os.urandom(32), tenant="early", associated_data=b"early-ctx")
    assert early.kek_version == 1
    for expected in (2, 3, 4):
        assert transit.rotate() == expected
    transit.retire(1)

    dek = os.urandom(32)
    late = transit.wrap(dek, tenant="late", associated_data=b"late-ctx")
    assert late.kek_version == 4
    assert transit.unwrap(late, tenant="late", associated_data=b"late-ctx") == dek
    config = key_config(admin, transit.key_name("late"))
    assert config["latest_version"] == 4
    assert set(config["keys"]) == {"4"}  # never-used versions were trimmed at creation
    assert config["derived"] is True and config["exportable"] is False

    assert transit.rotate() == 5
    for tenant in ("early", "late"):
        assert key_config(admin, transit.key_name(tenant))["latest_version"] == 5
    transit.retire(3)  # below the late key's floor on that key: must not fail
    assert transit.live_versions() == [4, 5]
    assert set(key_config(admin, transit.key_name("early"))["keys"]) == {"4", "5"}


def test_lagging_tenant_key_catches_up(transit: TransitKeyProvider, admin: Any, bao: Bao) -> None:
    """A crash between rotating the epoch and the tenant keys heals on the next use."""
    transit.wrap(os.urandom(32), tenant="acme", associated_data=b"ctx")
    admin.rotate_key(transit.epoch_key)  # simulate: epoch rotated, tenant keys not yet
    fresh = TransitKeyProvider(bao.url, bao.token, key_prefix=transit.key_prefix)
    assert fresh.wrap(os.urandom(32), tenant="acme", associated_data=b"ctx").kek_version == 2


def test_wraps_racing_the_kek_cycle_all_succeed(transit: TransitKeyProvider, bao: Bao) -> None:
    """While the KEK cycle rotates and retires without pause (another process), two API
    processes keep wrapping: every rotation makes their first wraps bring the tenant key up to
    the new epoch at the same moment as the cycle, and OpenBao refuses one of two concurrent
    writes ("transaction commit failed"). Every wrap must still succeed, under a live epoch,
    and unwrap (the dev stack's concurrent-ingest test once met this as a 503)."""
    apis = [TransitKeyProvider(bao.url, bao.token, key_prefix=transit.key_prefix)
            for _ in range(2)]  # fmt: skip
    for api in apis:
        api.wrap(os.urandom(32), tenant="acme", associated_data=b"ctx")
    stop = threading.Event()

    def kek_cycle() -> None:
        while not stop.is_set():
            with contextlib.suppress(KeyProviderError):  # a lost race: the job simply reruns
                transit.retire(transit.rotate() - 1)

    cycle = threading.Thread(target=kek_cycle)
    cycle.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            wrapped = list(pool.map(
                lambda api: api.wrap(os.urandom(32), tenant="acme", associated_data=b"ctx"),
                [apis[i % 2] for i in range(600)],
            ))  # fmt: skip
    finally:
        stop.set()
        cycle.join()
    assert len({w.kek_version for w in wrapped}) > 3  # the epoch really moved meanwhile
    for api in apis:  # and the key is whole: a wrap under the newest epoch opens again
        dek = os.urandom(32)
        again = api.wrap(dek, tenant="acme", associated_data=b"ctx")
        assert again.kek_version == transit.current_version()
        assert api.unwrap(again, tenant="acme", associated_data=b"ctx") == dek


def test_created_at(transit: TransitKeyProvider) -> None:
    stamp = transit.created_at(transit.current_version())
    assert abs(datetime.now(UTC) - stamp) < timedelta(minutes=5)
    with pytest.raises(ValueError):
        transit.created_at(99)


def test_sign_verify(transit: TransitKeyProvider, admin: Any) -> None:
    message = b"checkpoint seq=42 head=abc"
    signature = transit.sign(message)
    public = transit.signing_public_key()
    assert len(signature) == 64 and len(public) == 32
    Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(public).verify(signature, b"other")
    config = key_config(admin, transit.signing_key)
    assert config["type"] == "ed25519" and config["exportable"] is False


def test_bad_inputs(transit: TransitKeyProvider) -> None:
    with pytest.raises(ValueError):
        transit.wrap(os.urandom(31), tenant=TENANT, associated_data=AD)
    with pytest.raises(ValueError):
        transit.wrap(os.urandom(32), tenant=TENANT, associated_data=b"")
    with pytest.raises(ValueError):
        TransitKeyProvider("http://127.0.0.1:1", "", key_prefix="x")
    with pytest.raises(ValueError):
        TransitKeyProvider("http://127.0.0.1:1", "tok", key_prefix="a-b")


def test_unreachable_and_unauthorised(bao: Bao, prefix: str) -> None:
    down = TransitKeyProvider("http://127.0.0.1:1", "tok", key_prefix=prefix, timeout=2)
    with pytest.raises(KeyProviderError):
        down.check()
    with pytest.raises(KeyProviderError):
        down.wrap(os.urandom(32), tenant=TENANT, associated_data=AD)
    wrong = TransitKeyProvider(bao.url, "not-the-token", key_prefix=prefix)
    with pytest.raises(KeyProviderError):
        wrong.check()
    with pytest.raises(KeyProviderError):
        wrong.unwrap(
            WrappedKey(1, b"vault:v1:" + base64.b64encode(bytes(60))),
            tenant=TENANT,
            associated_data=AD,
        )
    no_mount = TransitKeyProvider(bao.url, bao.token, "no-such-mount", key_prefix=prefix)
    with pytest.raises(KeyProviderError):
        no_mount.check()


def test_pseudonyms_are_keyed_stable_and_survive_every_rotation(
    transit: TransitKeyProvider, admin: Any, bao: Bao, prefix: str
) -> None:
    alice = transit.pseudonym(b"owner:alice@example.com")
    assert len(alice) == 32
    assert transit.pseudonym(b"owner:alice@example.com") == alice
    assert transit.pseudonym(b"owner:bob@example.com") != alice
    config = key_config(admin, transit.pseudonym_key)
    assert config["type"] == "hmac" and config["exportable"] is False
    # The KEK cycle rotates and retires; an operator may even rotate the HMAC key itself.
    # Four-eyes compares stored pseudonyms, so none of it may change one.
    transit.rotate()
    admin.rotate_key(transit.pseudonym_key, mount_point=transit.mount)
    other_process = TransitKeyProvider(bao.url, bao.token, key_prefix=prefix)
    assert other_process.pseudonym(b"owner:alice@example.com") == alice
