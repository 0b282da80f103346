"""The local keyring's file: its JSON shape, parsed and validated whole, and its persistence
(an ``fcntl`` lock beside it, atomic replacement, change detection). The keys' use is in
:mod:`crypto.keys.local`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from crypto._primitives import AES256_KEY_SIZE
from crypto.errors import KeyringError

FORMAT = "callvault-keyring/1"
SIGNING_KEY_SIZE = 32  # raw Ed25519 private key (RFC 8032 seed)
PSEUDONYM_KEY_SIZE = 32  # HMAC-SHA256 key


@dataclass(frozen=True, slots=True)
class Kek:
    key: bytes = field(repr=False)
    created_at: datetime


@dataclass(frozen=True, slots=True)
class State:
    keks: dict[int, Kek]
    retired_through: int
    signing_key: bytes = field(repr=False)
    # Keys pseudonyms (HMAC); never rotated, so a pseudonym stays equal to itself forever.
    # Keyrings written before it existed get one the first time a pseudonym is asked for.
    pseudonym_key: bytes | None = field(default=None, repr=False)

    @property
    def newest(self) -> int:
        return max(self.keks)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def parse(raw: bytes, path: Path) -> State:
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
    keks: dict[int, Kek] = {}
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
        keks[int(name)] = Kek(key, created)
    retired = doc.get("retired_through", 0)
    if not isinstance(retired, int) or isinstance(retired, bool) or retired < 0:
        raise bad("retired_through is not a non-negative integer")
    # Live versions must be exactly retired+1..newest: a gap means someone edited the file.
    if set(keks) != set(range(retired + 1, max(keks) + 1)):
        raise bad("KEK versions are not contiguous after retired_through")
    signing = key_bytes(doc.get("signing_key"), "signing_key", SIGNING_KEY_SIZE)
    pseudonym = doc.get("pseudonym_key")
    return State(
        keks=keks, retired_through=retired, signing_key=signing,
        pseudonym_key=None if pseudonym is None
        else key_bytes(pseudonym, "pseudonym_key", PSEUDONYM_KEY_SIZE),
    )  # fmt: skip


def dump(state: State) -> bytes:
    doc = {
        "format": FORMAT,
        "keks": {
            str(v): {"key": b64(k.key), "created_at": k.created_at.isoformat()}
            for v, k in sorted(state.keks.items())
        },
        "retired_through": state.retired_through,
        "signing_key": b64(state.signing_key),
    }
    if state.pseudonym_key is not None:
        doc["pseudonym_key"] = b64(state.pseudonym_key)
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


def stamp(st: os.stat_result) -> tuple[int, ...]:
    # os.replace always gives a new inode, so this changes on every write.
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
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


def write_atomic(path: Path, data: bytes) -> None:
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
