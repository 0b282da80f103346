"""The local keyring: versioned AES-256-GCM KEKs and an Ed25519 signing key in one JSON file.

File shape (mode 0600, in a directory created 0700)::

    {"format": "callvault-keyring/1",
     "keks": {"3": {"key": "<b64 32 bytes>", "created_at": "2026-11-25T08:00:00+00:00"}, ...},
     "retired_through": 2,
     "signing_key": "<b64 raw Ed25519 private key>"}

Live versions are always the contiguous range ``retired_through+1 .. newest``, so a version that
is missing from the file is either retired (destroyed) or never existed, and we can tell which.

Writes are read-modify-write under an ``fcntl`` lock on a sibling lock file, and land atomically
(temp file + fsync + ``os.replace``) so a crash or a second process (``serve`` and ``worker``)
never sees a half-written keyring. Readers reload whenever the file's identity changes, so a
rotation or retirement done by another process takes effect here at the next call.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crypto._layout import DEK_SIZE
from crypto._primitives import (
    AES256_KEY_SIZE,
    GCM_NONCE_SIZE,
    GCM_TAG_SIZE,
    Rng,
    aesgcm_open,
    aesgcm_seal,
    hmac_sha256,
    random_bytes,
)
from crypto.errors import DecryptionError, KeyDestroyedError, KeyringError
from crypto.keys.base import WrappedKey

FORMAT = "callvault-keyring/1"
_SIGNING_KEY_SIZE = 32  # raw Ed25519 private key (RFC 8032 seed)
_PSEUDONYM_KEY_SIZE = 32  # HMAC-SHA256 key
# Domain-separates KEK wraps from any other use of AES-GCM; the version is bound too, so a wrap
# relabelled with another kek_version fails authentication instead of decrypting.
_AAD_PREFIX = b"callvault/v1/kek"
_WRAPPED_SIZE = GCM_NONCE_SIZE + DEK_SIZE + GCM_TAG_SIZE


@dataclass(frozen=True, slots=True)
class _Kek:
    key: bytes = field(repr=False)
    created_at: datetime


@dataclass(frozen=True, slots=True)
class _State:
    keks: dict[int, _Kek]
    retired_through: int
    signing_key: bytes = field(repr=False)
    # Keys pseudonyms (HMAC); never rotated, so a pseudonym stays equal to itself forever.
    # Keyrings written before it existed get one the first time a pseudonym is asked for.
    pseudonym_key: bytes | None = field(default=None, repr=False)

    @property
    def newest(self) -> int:
        return max(self.keks)


def _aad(version: int, associated_data: bytes) -> bytes:
    return _AAD_PREFIX + version.to_bytes(4, "big") + associated_data


def _check_inputs(tenant: str, associated_data: bytes) -> None:
    if not isinstance(tenant, str) or not tenant:
        raise ValueError("tenant must be a non-empty str")
    if not isinstance(associated_data, bytes):
        raise TypeError("associated_data must be bytes")
    if not associated_data:
        # An empty context would make every wrap interchangeable between rows.
        raise ValueError("associated_data must not be empty")


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _parse(raw: bytes, path: Path) -> _State:
    """Validate the whole file; any problem is a one-line ``KeyringError`` naming the path."""

    def bad(reason: str) -> KeyringError:
        return KeyringError(f"keyring {path} is corrupted: {reason}")

    def key_bytes(value: Any, what: str, size: int) -> bytes:
        try:
            key = base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise bad(f"{what} is not valid base64") from None
        if len(key) != size:
            raise bad(f"{what} is {len(key)} bytes, expected {size}")
        return key

    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad("not valid JSON") from None
    if not isinstance(doc, dict):
        raise bad("top level is not an object")
    if doc.get("format") != FORMAT:
        raise bad(f"format is {doc.get('format')!r}, expected {FORMAT!r}")
    entries = doc.get("keks")
    if not isinstance(entries, dict) or not entries:
        raise bad("no KEKs")
    keks: dict[int, _Kek] = {}
    for name, entry in entries.items():
        if not (isinstance(name, str) and name.isdigit() and str(int(name)) == name):
            raise bad(f"KEK version {name!r} is not a positive integer")
        if not isinstance(entry, dict):
            raise bad(f"KEK version {name} is not an object")
        try:
            created = datetime.fromisoformat(entry.get("created_at"))
        except (TypeError, ValueError):
            raise bad(f"KEK version {name} has no valid created_at") from None
        if created.tzinfo is None:
            raise bad(f"KEK version {name} created_at has no timezone")
        key = key_bytes(entry.get("key"), f"KEK version {name}", AES256_KEY_SIZE)
        keks[int(name)] = _Kek(key, created)
    retired = doc.get("retired_through", 0)
    if not isinstance(retired, int) or isinstance(retired, bool) or retired < 0:
        raise bad("retired_through is not a non-negative integer")
    # Live versions must be exactly retired+1..newest: a gap means someone edited the file.
    if set(keks) != set(range(retired + 1, max(keks) + 1)):
        raise bad("KEK versions are not contiguous after retired_through")
    signing = key_bytes(doc.get("signing_key"), "signing_key", _SIGNING_KEY_SIZE)
    pseudonym = doc.get("pseudonym_key")
    return _State(
        keks=keks, retired_through=retired, signing_key=signing,
        pseudonym_key=None if pseudonym is None
        else key_bytes(pseudonym, "pseudonym_key", _PSEUDONYM_KEY_SIZE),
    )  # fmt: skip


def _dump(state: _State) -> bytes:
    doc = {
        "format": FORMAT,
        "keks": {
            str(v): {"key": _b64(k.key), "created_at": k.created_at.isoformat()}
            for v, k in sorted(state.keks.items())
        },
        "retired_through": state.retired_through,
        "signing_key": _b64(state.signing_key),
    }
    if state.pseudonym_key is not None:
        doc["pseudonym_key"] = _b64(state.pseudonym_key)
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


class LocalKeyring:
    """A :class:`~crypto.keys.base.KeyProvider` backed by a keyring file.

    One global KEK serves every tenant: the tenant is bound through ``associated_data``.
    """

    name = "local"

    def __init__(self, path: Path | str, *, rng: Rng | None = None) -> None:
        """Open an existing keyring; raises ``KeyringError`` if missing or corrupted."""
        self.path = Path(path)
        self._rng = rng
        self._stamp: tuple[int, ...] | None = None
        self._state: _State | None = None
        self._current()

    # -- creation ----------------------------------------------------------------------------

    @classmethod
    def create(
        cls, path: Path | str, *, now: datetime | None = None, rng: Rng | None = None
    ) -> LocalKeyring:
        """Create a new keyring with KEK version 1; ``KeyringError`` if one already exists."""
        if not cls._create_if_missing(Path(path), now=now, rng=rng):
            raise KeyringError(f"keyring {path} already exists")
        return cls(path, rng=rng)

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        create: bool = False,
        now: datetime | None = None,
        rng: Rng | None = None,
    ) -> LocalKeyring:
        """Open a keyring, creating it first when ``create`` is true (idempotent, for ``init``)."""
        if create:
            cls._create_if_missing(Path(path), now=now, rng=rng)
        return cls(path, rng=rng)

    @classmethod
    def _create_if_missing(cls, path: Path, *, now: datetime | None, rng: Rng | None) -> bool:
        created_at = _utc(now)
        parent = path.parent
        if not parent.exists():
            try:
                parent.mkdir(parents=True, mode=0o700)
                os.chmod(parent, 0o700)  # mkdir's mode is filtered by the umask
            except OSError as exc:
                raise KeyringError(f"cannot create keyring directory {parent}: {exc}") from None
        with _locked(path):
            if path.exists():
                return False
            state = _State(
                keks={1: _Kek(random_bytes(AES256_KEY_SIZE, rng), created_at)},
                retired_through=0,
                signing_key=random_bytes(_SIGNING_KEY_SIZE, rng),
                pseudonym_key=random_bytes(_PSEUDONYM_KEY_SIZE, rng),
            )
            _write_atomic(path, _dump(state))
        return True

    # -- loading -----------------------------------------------------------------------------

    def _current(self) -> _State:
        """The keyring as on disk now; reloads only when the file was replaced."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise KeyringError(
                f"keyring {self.path} does not exist (run `callvault init` to create it)"
            ) from None
        except OSError as exc:
            raise KeyringError(f"cannot read keyring {self.path}: {exc.strerror}") from None
        if self._state is None or self._stamp != _stamp(st):
            self._load()
        assert self._state is not None
        return self._state

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise KeyringError(f"keyring {self.path} is not a regular file")
                if st.st_mode & 0o077:
                    raise KeyringError(
                        f"keyring {self.path} has mode {stat.S_IMODE(st.st_mode):04o}; "
                        f"it must be readable by its owner only (chmod 600 {self.path})"
                    )
                raw = fh.read()
        except FileNotFoundError:
            raise KeyringError(
                f"keyring {self.path} does not exist (run `callvault init` to create it)"
            ) from None
        except OSError as exc:
            raise KeyringError(f"cannot read keyring {self.path}: {exc.strerror}") from None
        self._state = _parse(raw, self.path)
        self._stamp = _stamp(st)

    def _mutate(self, change: Any) -> _State:
        """Apply ``change(state) -> new state | None`` under the lock, on the on-disk state."""
        with _locked(self.path):
            self._state = None  # force a fresh read: another process may have written
            state = self._current()
            new = change(state)
            if new is not None:
                _write_atomic(self.path, _dump(new))
                self._state = None
                state = self._current()
        return state

    # -- KeyWrapper, KeyAdmin ----------------------------------------------------------------

    def wrap(self, dek: bytes, *, tenant: str, associated_data: bytes) -> WrappedKey:
        _check_inputs(tenant, associated_data)
        if not isinstance(dek, bytes) or len(dek) != DEK_SIZE:
            raise ValueError(f"dek must be {DEK_SIZE} bytes")
        state = self._current()
        version = state.newest
        nonce = random_bytes(GCM_NONCE_SIZE, self._rng)
        # Random 96-bit nonces are safe here: a KEK version wraps far fewer than 2**32 DEKs
        # before it is rotated away.
        sealed = aesgcm_seal(state.keks[version].key, nonce, dek, _aad(version, associated_data))
        return WrappedKey(kek_version=version, ciphertext=nonce + sealed)

    def unwrap(self, wrapped: WrappedKey, *, tenant: str, associated_data: bytes) -> bytes:
        _check_inputs(tenant, associated_data)
        state = self._current()
        version = wrapped.kek_version
        kek = state.keks.get(version)
        if kek is None:
            if version <= state.retired_through:
                raise KeyDestroyedError(
                    f"KEK version {version} has been retired; this key can no longer be opened"
                )
            raise DecryptionError()  # a version that never existed: forged or corrupted
        blob = wrapped.ciphertext
        if len(blob) != _WRAPPED_SIZE:
            raise DecryptionError()
        nonce, sealed = blob[:GCM_NONCE_SIZE], blob[GCM_NONCE_SIZE:]
        return aesgcm_open(kek.key, nonce, sealed, _aad(version, associated_data))

    def rewrap(self, wrapped: WrappedKey, *, tenant: str, associated_data: bytes) -> WrappedKey:
        dek = self.unwrap(wrapped, tenant=tenant, associated_data=associated_data)
        return self.wrap(dek, tenant=tenant, associated_data=associated_data)

    def rotate(self, now: datetime | None = None) -> int:
        created_at = _utc(now)

        def change(state: _State) -> _State:
            keks = dict(state.keks)
            keks[state.newest + 1] = _Kek(random_bytes(AES256_KEY_SIZE, self._rng), created_at)
            return replace(state, keks=keks)

        return self._mutate(change).newest

    def retire(self, version: int) -> None:
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise ValueError("version must be a non-negative int")

        def change(state: _State) -> _State | None:
            if version >= state.newest:
                raise ValueError(
                    f"cannot retire KEK version {version}: the newest version is "
                    f"{state.newest} and it must stay"
                )
            if version <= state.retired_through:
                return None  # already destroyed: idempotent
            # Dropping the entries from the file is the destruction; old copies of the file
            # (backups) are the operator's to expire, as the README says.
            keks = {v: k for v, k in state.keks.items() if v > version}
            return replace(state, keks=keks, retired_through=version)

        self._mutate(change)

    def current_version(self) -> int:
        return self._current().newest

    def live_versions(self) -> list[int]:
        return sorted(self._current().keks)

    def check(self) -> None:
        self._current()

    # -- KeyAdmin.created_at (rotation schedule), Signer (audit checkpoints) -----------------

    def created_at(self, version: int) -> datetime:
        """When a live KEK version was created (UTC); ``ValueError`` if it is not live."""
        kek = self._current().keks.get(version)
        if kek is None:
            raise ValueError(f"KEK version {version} is not live")
        return kek.created_at.astimezone(UTC)

    def sign(self, message: bytes) -> bytes:
        """Raw Ed25519 signature over ``message``, for audit checkpoints."""
        return Ed25519PrivateKey.from_private_bytes(self._current().signing_key).sign(message)

    def signing_public_key(self) -> bytes:
        """The raw Ed25519 public key matching :meth:`sign`."""
        private = Ed25519PrivateKey.from_private_bytes(self._current().signing_key)
        return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    # -- Pseudonymizer -----------------------------------------------------------------------

    def pseudonym(self, value: bytes) -> bytes:
        """HMAC-SHA256 of ``value`` under the keyring's pseudonym key (never rotated)."""
        key = self._current().pseudonym_key
        if key is None:

            def add(state: _State) -> _State | None:
                if state.pseudonym_key is not None:
                    return None  # another process added it first
                return replace(state, pseudonym_key=random_bytes(_PSEUDONYM_KEY_SIZE, self._rng))

            self._mutate(add)
            key = self._current().pseudonym_key
            assert key is not None
        return hmac_sha256(key, value)


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    # os.replace always gives a new inode, so this changes on every write.
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``.<name>.lock`` beside the keyring."""
    lock_path = path.parent / f".{path.name}.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise KeyringError(f"cannot lock keyring {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either the old or the new file, never half."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise KeyringError(f"cannot write keyring {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise KeyringError(f"cannot write keyring {path}: {exc.strerror}") from None
