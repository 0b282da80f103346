"""LocalKeyring: wrap/unwrap, rotation, retirement, file hygiene and signing."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto.errors import DecryptionError, KeyDestroyedError, KeyringError
from crypto.keys.base import KeyProvider, WrappedKey
from crypto.keys.local import LocalKeyring

AD = b"tenant-a" + uuid.UUID(int=1).bytes


@pytest.fixture
def keyring_path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "keyring.json"


@pytest.fixture
def ring(keyring_path: Path) -> LocalKeyring:
    return LocalKeyring.create(keyring_path)


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def test_is_a_key_provider(ring: LocalKeyring) -> None:
    assert isinstance(ring, KeyProvider)
    assert ring.name == "local"
    assert ring.current_version() == 1
    assert ring.live_versions() == [1]
    ring.check()


def test_roundtrip(ring: LocalKeyring) -> None:
    dek = os.urandom(32)
    wrapped = ring.wrap(dek, tenant="tenant-a", associated_data=AD)
    assert wrapped.kek_version == 1
    assert len(wrapped.ciphertext) == 12 + 32 + 16
    assert dek not in wrapped.ciphertext
    assert ring.unwrap(wrapped, tenant="tenant-a", associated_data=AD) == dek


def test_other_context_fails(ring: LocalKeyring) -> None:
    wrapped = ring.wrap(os.urandom(32), tenant="tenant-a", associated_data=AD)
    with pytest.raises(DecryptionError):
        ring.unwrap(wrapped, tenant="tenant-a", associated_data=AD + b"x")


def test_every_flipped_byte_fails(ring: LocalKeyring) -> None:
    wrapped = ring.wrap(os.urandom(32), tenant="tenant-a", associated_data=AD)
    for i in range(len(wrapped.ciphertext)):
        bad = WrappedKey(wrapped.kek_version, flip(wrapped.ciphertext, i))
        with pytest.raises(DecryptionError):
            ring.unwrap(bad, tenant="tenant-a", associated_data=AD)
    with pytest.raises(DecryptionError):  # truncated
        ring.unwrap(WrappedKey(1, wrapped.ciphertext[:-1]), tenant="tenant-a", associated_data=AD)


def test_relabelled_version_fails(ring: LocalKeyring) -> None:
    wrapped = ring.wrap(os.urandom(32), tenant="tenant-a", associated_data=AD)
    ring.rotate()
    with pytest.raises(DecryptionError):  # the version is bound into the AAD
        ring.unwrap(WrappedKey(2, wrapped.ciphertext), tenant="tenant-a", associated_data=AD)
    with pytest.raises(DecryptionError):  # never existed: not "destroyed"
        ring.unwrap(WrappedKey(9, wrapped.ciphertext), tenant="tenant-a", associated_data=AD)


def test_bad_inputs(ring: LocalKeyring) -> None:
    with pytest.raises(ValueError):
        ring.wrap(os.urandom(16), tenant="t", associated_data=AD)
    with pytest.raises(ValueError):
        ring.wrap(os.urandom(32), tenant="t", associated_data=b"")
    with pytest.raises(TypeError):
        ring.wrap(os.urandom(32), tenant="t", associated_data="text")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ring.wrap(os.urandom(32), tenant="", associated_data=AD)


def test_rotate_keeps_old_wraps_and_rewrap_moves(ring: LocalKeyring) -> None:
    dek = os.urandom(32)
    old = ring.wrap(dek, tenant="tenant-a", associated_data=AD)
    assert ring.rotate() == 2
    assert ring.current_version() == 2
    assert ring.live_versions() == [1, 2]
    assert ring.unwrap(old, tenant="tenant-a", associated_data=AD) == dek
    assert ring.wrap(dek, tenant="tenant-a", associated_data=AD).kek_version == 2
    moved = ring.rewrap(old, tenant="tenant-a", associated_data=AD)
    assert moved.kek_version == 2
    assert ring.unwrap(moved, tenant="tenant-a", associated_data=AD) == dek


def test_retire_destroys_old_version_and_backups(ring: LocalKeyring, keyring_path: Path) -> None:
    dek = os.urandom(32)
    original = ring.wrap(dek, tenant="tenant-a", associated_data=AD)
    backup = WrappedKey(original.kek_version, bytes(original.ciphertext))  # e.g. a DB backup
    old_key = json.loads(keyring_path.read_text())["keks"]["1"]["key"]
    ring.rotate()
    moved = ring.rewrap(original, tenant="tenant-a", associated_data=AD)

    ring.retire(1)

    assert ring.live_versions() == [2]
    for stale in (original, backup):
        with pytest.raises(KeyDestroyedError, match="KEK version 1 has been retired"):
            ring.unwrap(stale, tenant="tenant-a", associated_data=AD)
        with pytest.raises(KeyDestroyedError):
            ring.rewrap(stale, tenant="tenant-a", associated_data=AD)
    assert ring.unwrap(moved, tenant="tenant-a", associated_data=AD) == dek
    # The key material itself is gone from the file, and a fresh process agrees.
    doc = json.loads(keyring_path.read_text())
    assert set(doc["keks"]) == {"2"} and doc["retired_through"] == 1
    assert old_key not in keyring_path.read_text()
    with pytest.raises(KeyDestroyedError):
        LocalKeyring(keyring_path).unwrap(backup, tenant="tenant-a", associated_data=AD)


def test_retire_refuses_newest_and_is_idempotent(ring: LocalKeyring) -> None:
    with pytest.raises(ValueError, match="newest"):
        ring.retire(1)
    ring.rotate()
    ring.rotate()
    with pytest.raises(ValueError):
        ring.retire(3)
    ring.retire(2)
    ring.retire(2)
    ring.retire(1)
    assert ring.live_versions() == [3]


def test_other_process_sees_rotation(ring: LocalKeyring, keyring_path: Path) -> None:
    other = LocalKeyring(keyring_path)
    other.rotate()
    other.retire(1)
    assert ring.current_version() == 2
    assert ring.live_versions() == [2]


def test_create_refuses_existing_and_open_create_is_idempotent(keyring_path: Path) -> None:
    first = LocalKeyring.open(keyring_path, create=True)
    again = LocalKeyring.open(keyring_path, create=True)
    assert first.signing_public_key() == again.signing_public_key()
    with pytest.raises(KeyringError, match="already exists"):
        LocalKeyring.create(keyring_path)


def test_file_and_directory_modes(ring: LocalKeyring, keyring_path: Path) -> None:
    assert stat.S_IMODE(keyring_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keyring_path.parent.stat().st_mode) == 0o700
    ring.rotate()  # rewritten atomically, still 0600
    assert stat.S_IMODE(keyring_path.stat().st_mode) == 0o600
    leftovers = [p.name for p in keyring_path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_missing_keyring(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "keyring.json"
    with pytest.raises(KeyringError, match="does not exist") as info:
        LocalKeyring(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: "{not json", "not valid JSON"),
        (lambda d: "[]", "not an object"),
        (lambda d: {**d, "format": "other/9"}, "format"),
        (lambda d: {**d, "keks": {}}, "no KEKs"),
        (lambda d: {**d, "keks": {"1": {**d["keks"]["1"], "key": "%%%"}}}, "base64"),
        (lambda d: {**d, "keks": {"1": {**d["keks"]["1"], "key": "AAAA"}}}, "3 bytes"),
        (lambda d: {**d, "keks": {"x": d["keks"]["1"]}}, "positive integer"),
        (lambda d: {**d, "keks": {"1": {"key": d["keks"]["1"]["key"]}}}, "created_at"),
        (lambda d: {**d, "keks": {"2": d["keks"]["1"]}}, "contiguous"),
        (lambda d: {**d, "signing_key": None}, "signing_key"),
    ],
)
def test_corrupt_keyring(keyring_path: Path, mutate: Callable[[dict], Any], reason: str) -> None:
    LocalKeyring.create(keyring_path)
    doc = mutate(json.loads(keyring_path.read_text()))
    keyring_path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(KeyringError, match=reason) as info:
        LocalKeyring(keyring_path)
    message = str(info.value)
    assert str(keyring_path) in message and "\n" not in message


def test_loose_permissions_refused(keyring_path: Path) -> None:
    LocalKeyring.create(keyring_path)
    os.chmod(keyring_path, 0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        LocalKeyring(keyring_path)


def test_created_at(keyring_path: Path) -> None:
    t0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    ring = LocalKeyring.create(keyring_path, now=t0)
    ring.rotate(now=t0 + timedelta(days=7))
    assert ring.created_at(1) == t0
    assert ring.created_at(2) == t0 + timedelta(days=7)
    assert ring.created_at(2).tzinfo is not None
    with pytest.raises(ValueError):
        ring.created_at(3)
    with pytest.raises(ValueError):
        ring.rotate(now=datetime(2026, 1, 1))  # naive datetimes are ambiguous


def test_sign_verify(ring: LocalKeyring) -> None:
    message = b"checkpoint seq=42 head=abc"
    signature = ring.sign(message)
    public = ring.signing_public_key()
    assert len(signature) == 64 and len(public) == 32
    Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message + b"!")


def test_injected_rng_is_used(tmp_path: Path) -> None:
    calls: list[int] = []

    def rng(n: int) -> bytes:
        calls.append(n)
        return b"\x07" * n

    ring = LocalKeyring.create(tmp_path / "k.json", rng=rng)
    a = ring.wrap(b"\x01" * 32, tenant="t", associated_data=b"ctx")
    b = ring.wrap(b"\x01" * 32, tenant="t", associated_data=b"ctx")
    assert a == b and 12 in calls  # deterministic nonces prove the rng was used


@pytest.fixture(scope="module")
def shared_ring(tmp_path_factory: pytest.TempPathFactory) -> LocalKeyring:
    return LocalKeyring.create(tmp_path_factory.mktemp("prop") / "keyring.json")


@settings(deadline=None, max_examples=50, suppress_health_check=[HealthCheck.too_slow])
@given(
    dek=st.binary(min_size=32, max_size=32),
    ad=st.binary(min_size=1, max_size=64),
    other=st.binary(min_size=1, max_size=64),
)
def test_property_roundtrip_and_binding(
    shared_ring: LocalKeyring, dek: bytes, ad: bytes, other: bytes
) -> None:
    wrapped = shared_ring.wrap(dek, tenant="t", associated_data=ad)
    assert shared_ring.unwrap(wrapped, tenant="t", associated_data=ad) == dek
    if other != ad:
        with pytest.raises(DecryptionError):
            shared_ring.unwrap(wrapped, tenant="t", associated_data=other)


def test_concurrent_rotations_do_not_clobber(ring: LocalKeyring, keyring_path: Path) -> None:
    """Two processes rotating at once: the lock serialises them, no version is lost."""
    script = (
        "import sys; from crypto.keys.local import LocalKeyring\n"
        "ring = LocalKeyring(sys.argv[1])\n"
        "for _ in range(15): ring.rotate()\n"
    )
    root = Path(__file__).resolve().parents[2]
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(keyring_path)], cwd=root)
        for _ in range(2)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert ring.current_version() == 31
    assert ring.live_versions() == list(range(1, 32))


def test_pseudonyms_are_keyed_stable_and_survive_rotation(
    ring: LocalKeyring, keyring_path: Path, tmp_path: Path
) -> None:
    alice = ring.pseudonym(b"owner:alice@example.com")
    assert len(alice) == 32 and alice == ring.pseudonym(b"owner:alice@example.com")
    assert ring.pseudonym(b"owner:bob@example.com") != alice
    ring.rotate()
    ring.retire(1)
    assert LocalKeyring.open(keyring_path).pseudonym(b"owner:alice@example.com") == alice
    # Another deployment's key gives another pseudonym: nobody can test a guessed e-mail.
    other = LocalKeyring.create(tmp_path / "other" / "keyring.json")
    assert other.pseudonym(b"owner:alice@example.com") != alice


def test_a_keyring_from_before_pseudonyms_gains_a_key_once(keyring_path: Path) -> None:
    LocalKeyring.create(keyring_path)
    doc = json.loads(keyring_path.read_text())
    del doc["pseudonym_key"]
    keyring_path.write_text(json.dumps(doc))
    first = LocalKeyring.open(keyring_path).pseudonym(b"x")
    assert "pseudonym_key" in json.loads(keyring_path.read_text())
    assert stat.S_IMODE(keyring_path.stat().st_mode) == 0o600
    assert LocalKeyring.open(keyring_path).pseudonym(b"x") == first
