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

import os
import stat
from dataclasses import replace
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
from crypto.keys._local_store import (
    PSEUDONYM_KEY_SIZE,
    SIGNING_KEY_SIZE,
    Kek,
    State,
    dump,
    locked,
    parse,
    stamp,
    write_atomic,
)
from crypto.keys.base import WrappedKey, check_wrap_inputs

# Domain-separates KEK wraps from any other use of AES-GCM; the version is bound too, so a wrap
# relabelled with another kek_version fails authentication instead of decrypting.
_AAD_PREFIX = b"callvault/v1/kek"
_WRAPPED_SIZE = GCM_NONCE_SIZE + DEK_SIZE + GCM_TAG_SIZE


def _aad(version: int, associated_data: bytes) -> bytes:
    return _AAD_PREFIX + version.to_bytes(4, "big") + associated_data


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


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
        self._state: State | None = None
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
        with locked(path):
            if path.exists():
                return False
            state = State(
                keks={1: Kek(random_bytes(AES256_KEY_SIZE, rng), created_at)},
                retired_through=0,
                signing_key=random_bytes(SIGNING_KEY_SIZE, rng),
                pseudonym_key=random_bytes(PSEUDONYM_KEY_SIZE, rng),
            )
            write_atomic(path, dump(state))
        return True

    # -- loading -----------------------------------------------------------------------------

    def _current(self) -> State:
        """The keyring as on disk now; reloads only when the file was replaced."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise KeyringError(
                f"keyring {self.path} does not exist (run `callvault init` to create it)"
            ) from None
        except OSError as exc:
            raise KeyringError(f"cannot read keyring {self.path}: {exc.strerror}") from None
        if self._state is None or self._stamp != stamp(st):
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
        self._state = parse(raw, self.path)
        self._stamp = stamp(st)

    def _mutate(self, change: Any) -> State:
        """Apply ``change(state) -> new state | None`` under the lock, on the on-disk state."""
        with locked(self.path):
            self._state = None  # force a fresh read: another process may have written
            state = self._current()
            new = change(state)
            if new is not None:
                write_atomic(self.path, dump(new))
                self._state = None
                state = self._current()
        return state

    # -- KeyWrapper, KeyAdmin ----------------------------------------------------------------

    def wrap(self, dek: bytes, *, tenant: str, associated_data: bytes) -> WrappedKey:
        check_wrap_inputs(tenant, associated_data)
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
        check_wrap_inputs(tenant, associated_data)
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

        def change(state: State) -> State:
            keks = dict(state.keks)
            keks[state.newest + 1] = Kek(random_bytes(AES256_KEY_SIZE, self._rng), created_at)
            return replace(state, keks=keks)

        return self._mutate(change).newest

    def retire(self, version: int) -> None:
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise ValueError("version must be a non-negative int")

        def change(state: State) -> State | None:
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

            def add(state: State) -> State | None:
                if state.pseudonym_key is not None:
                    return None  # another process added it first
                return replace(state, pseudonym_key=random_bytes(PSEUDONYM_KEY_SIZE, self._rng))

            self._mutate(add)
            key = self._current().pseudonym_key
            assert key is not None
        return hmac_sha256(key, value)
