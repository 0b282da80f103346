"""Key provider backed by OpenBao / HashiCorp Vault Transit (via ``hvac``).

Layout under one ``key_prefix`` (default ``callvault``) on the Transit mount:

- ``<prefix>-t-<tenant>`` (or ``<prefix>-h-<sha256>`` for tenants that are not plain slugs): one
  ``aes256-gcm96`` key per tenant, ``derived=True``, non-exportable, no plaintext backup. Every
  operation passes ``context = base64(associated_data)``, so a wrap only opens for its own
  ``tenant || recording_id``. (``associated_data`` is not used: it does not survive ``rewrap``.)
- ``<prefix>-epoch``: never used for data. Its ``latest_version`` is the global KEK epoch and its
  ``min_decryption_version - 1`` is how far versions have been retired. Tenant keys are kept in
  step with it, so one version number means the same epoch for every tenant, as the metadata DB
  and the ``kek-cycle`` job expect.
- ``<prefix>-audit-signing``: an ``ed25519`` key for signed audit checkpoints.

Crash safety: ``rotate`` bumps the epoch first and ``retire`` finishes with it, and every use of a
tenant key first brings it up to the epoch, so an interrupted run is finished by the next one.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import hvac
import requests
from hvac.exceptions import InvalidPath, InvalidRequest, VaultError

from crypto._layout import DEK_SIZE
from crypto.errors import DecryptionError, KeyDestroyedError, KeyProviderError
from crypto.keys.base import (
    ED25519_PUBLIC_KEY_SIZE,
    ED25519_SIGNATURE_SIZE,
    WrappedKey,
    check_wrap_inputs,
)

_AES_KEY_TYPE = "aes256-gcm96"
_SIGNING_KEY_TYPE = "ed25519"
_PREFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]{0,31}")
# Lower-case slugs and canonical UUID strings are used verbatim (readable in the Bao UI);
# anything else is hashed under a different infix, so the mapping stays injective.
_SLUG_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
_CIPHERTEXT_RE = re.compile(r"vault:v([1-9][0-9]{0,9}):([A-Za-z0-9+/=]+)")
_DATA_KEY = {"type": _AES_KEY_TYPE, "derived": True, "exportable": False}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _parse_ciphertext(wrapped: WrappedKey) -> str:
    """The Transit ciphertext string, checked against the version the DB recorded."""
    try:
        text = wrapped.ciphertext.decode("ascii")
    except UnicodeDecodeError:
        raise DecryptionError() from None
    match = _CIPHERTEXT_RE.fullmatch(text)
    if match is None or int(match.group(1)) != wrapped.kek_version:
        raise DecryptionError()
    return text


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


@contextlib.contextmanager
def _provider_errors(what: str) -> Iterator[None]:
    """Any transport or server failure becomes ``KeyProviderError``."""
    try:
        yield
    except (VaultError, requests.RequestException) as exc:
        raise KeyProviderError(f"transit {what} failed: {_describe(exc)}") from exc


# How often a tenant key's catch-up is tried when another process races it (see _sync).
_SYNC_TRIES = 3


class TransitKeyProvider:
    """A :class:`~crypto.keys.base.KeyProvider` on a Transit secrets engine."""

    name = "transit"

    def __init__(
        self,
        url: str,
        token: str,
        mount: str = "transit",
        *,
        key_prefix: str = "callvault",
        timeout: float = 5.0,
        verify: bool | str = True,
    ) -> None:
        if not isinstance(token, str) or not token:
            # hvac would silently fall back to $VAULT_TOKEN; configuration must be explicit.
            raise ValueError("a Transit token is required")
        if not _PREFIX_RE.fullmatch(key_prefix):
            # No '-' allowed, so one prefix's "<prefix>-t-" can never be another's key.
            raise ValueError("key_prefix must be 1-32 letters, digits or '_'")
        self.url = url
        self.mount = mount
        self.key_prefix = key_prefix
        self._client = hvac.Client(url=url, token=token, timeout=timeout, verify=verify)
        self._transit = self._client.secrets.transit
        self._synced: dict[str, int] = {}  # tenant key name -> epoch it is known to have reached
        self._signing_ready = False
        self._pseudonym_ready = False

    # -- names -------------------------------------------------------------------------------

    @property
    def epoch_key(self) -> str:
        return f"{self.key_prefix}-epoch"

    @property
    def signing_key(self) -> str:
        return f"{self.key_prefix}-audit-signing"

    @property
    def pseudonym_key(self) -> str:
        return f"{self.key_prefix}-pseudonym"

    def key_name(self, tenant: str) -> str:
        """The Transit key that holds ``tenant``'s KEK versions."""
        if not isinstance(tenant, str) or not tenant:
            raise ValueError("tenant must be a non-empty str")
        if _SLUG_RE.fullmatch(tenant):
            return f"{self.key_prefix}-t-{tenant}"
        digest = hashlib.sha256(tenant.encode("utf-8")).hexdigest()[:40]
        return f"{self.key_prefix}-h-{digest}"

    def _tenant_keys(self) -> list[str]:
        with _provider_errors("list keys"):
            try:
                names = self._transit.list_keys(mount_point=self.mount)["data"]["keys"]
            except InvalidPath:  # LIST answers 404 when the mount holds no key at all
                return []
        heads = (f"{self.key_prefix}-t-", f"{self.key_prefix}-h-")
        return sorted(n for n in names if n.startswith(heads))

    # -- low-level key management ------------------------------------------------------------

    def _read(self, name: str) -> dict[str, Any] | None:
        with _provider_errors(f"read key {name}"):
            try:
                return self._transit.read_key(name, mount_point=self.mount)["data"]
            except InvalidPath:
                return None

    def _create(self, name: str, **params: Any) -> dict[str, Any]:
        with _provider_errors(f"create key {name}"):
            # Transit's create is an upsert that returns the key, so a race is harmless.
            return self._transit.create_key(name, mount_point=self.mount, **params)["data"]

    def _epoch(self) -> dict[str, Any]:
        info = self._read(self.epoch_key)
        if info is None:
            info = self._create(
                self.epoch_key,
                key_type=_AES_KEY_TYPE,
                exportable=False,
                allow_plaintext_backup=False,
            )
        return info

    @staticmethod
    def _retired_through(info: dict[str, Any]) -> int:
        return max(int(info["min_decryption_version"]), int(info["min_available_version"]), 1) - 1

    def _raise_floor(self, name: str, info: dict[str, Any], floor: int) -> None:
        """Destroy every version of ``name`` below ``floor`` (never lowers anything)."""
        floor = min(floor, int(info["latest_version"]))
        if floor <= 1:
            return
        dec, enc = int(info["min_decryption_version"]), int(info["min_encryption_version"])
        with _provider_errors(f"retire versions of {name}"):
            if dec < floor or enc < floor:
                # trim requires both minimums at or above the new floor first. Raw call: hvac's
                # own check wrongly refuses min_encryption_version == min_decryption_version,
                # which the server accepts and which retiring up to the newest-but-one needs.
                self._client.adapter.post(
                    f"/v1/{self.mount}/keys/{name}/config",
                    json={
                        "min_decryption_version": max(dec, floor),
                        "min_encryption_version": max(enc, floor),
                    },
                )
            if int(info["min_available_version"]) < floor:
                self._transit.trim_key(name, min_version=floor, mount_point=self.mount)

    def _sync(self, name: str, info: dict[str, Any], epoch: int, floor: int) -> None:
        """Rotate ``name`` up to ``epoch`` and destroy its versions below ``floor``.

        Right after a rotation every API process's first wrap, and the KEK cycle, bring the same
        key up at the same moment; OpenBao then refuses one of two concurrent writes
        ("transaction commit failed"), or a trim another process already made. So when the
        server answers with an error, the key is read again and what is left is done (at most
        _SYNC_TRIES times); an unreachable server fails at once."""
        for attempt in range(_SYNC_TRIES):
            try:
                with _provider_errors(f"rotate key {name}"):
                    while int(info["latest_version"]) < epoch:
                        info = self._transit.rotate_key(name, mount_point=self.mount)["data"]
                self._raise_floor(name, info, floor)
                return
            except KeyProviderError as exc:
                if attempt == _SYNC_TRIES - 1 or not isinstance(exc.__cause__, VaultError):
                    raise
                fresh = self._read(name)
                if fresh is None:
                    raise
                info = fresh

    def _ensure_tenant_key(self, tenant: str, epoch_info: dict[str, Any]) -> str:
        name = self.key_name(tenant)
        epoch = int(epoch_info["latest_version"])
        if self._synced.get(name, 0) >= epoch:
            return name
        info = self._read(name)
        fresh = info is None
        if info is None:
            info = self._create(
                name,
                key_type=_AES_KEY_TYPE,
                derived=True,
                exportable=False,
                allow_plaintext_backup=False,
            )
        if any(info.get(k) != v for k, v in _DATA_KEY.items()):
            raise KeyProviderError(f"transit key {name} is not a derived, non-exportable AES key")
        # A key we just created never wrapped anything below the epoch: drop those versions.
        floor = epoch if fresh else self._retired_through(epoch_info) + 1
        self._sync(name, info, epoch, floor)
        self._synced[name] = epoch
        return name

    # -- KeyWrapper, KeyAdmin ----------------------------------------------------------------

    def wrap(self, dek: bytes, *, tenant: str, associated_data: bytes) -> WrappedKey:
        check_wrap_inputs(tenant, associated_data)
        if not isinstance(dek, bytes) or len(dek) != DEK_SIZE:
            raise ValueError(f"dek must be {DEK_SIZE} bytes")
        epoch_info = self._epoch()
        epoch = int(epoch_info["latest_version"])
        name = self._ensure_tenant_key(tenant, epoch_info)
        with _provider_errors(f"encrypt with {name}"):
            # key_version pins the epoch even if this tenant key ever got ahead of it.
            data = self._transit.encrypt_data(
                name,
                plaintext=_b64(dek),
                context=_b64(associated_data),
                key_version=epoch,
                mount_point=self.mount,
            )["data"]
        return self._wrapped(data["ciphertext"], expect=epoch)

    def unwrap(self, wrapped: WrappedKey, *, tenant: str, associated_data: bytes) -> bytes:
        check_wrap_inputs(tenant, associated_data)
        ciphertext = _parse_ciphertext(wrapped)
        name = self.key_name(tenant)  # never create keys on the read path
        with self._crypto_errors(wrapped):
            data = self._transit.decrypt_data(
                name, ciphertext=ciphertext, context=_b64(associated_data), mount_point=self.mount
            )["data"]
        try:
            dek = base64.b64decode(data["plaintext"], validate=True)
        except (binascii.Error, KeyError, TypeError):
            raise DecryptionError() from None
        if len(dek) != DEK_SIZE:
            raise DecryptionError()
        return dek

    def rewrap(self, wrapped: WrappedKey, *, tenant: str, associated_data: bytes) -> WrappedKey:
        check_wrap_inputs(tenant, associated_data)
        ciphertext = _parse_ciphertext(wrapped)
        epoch_info = self._epoch()
        epoch = int(epoch_info["latest_version"])
        name = self._ensure_tenant_key(tenant, epoch_info)
        with self._crypto_errors(wrapped):
            # Transit decrypts and re-encrypts inside the server: the DEK never leaves it.
            data = self._transit.rewrap_data(
                name,
                ciphertext=ciphertext,
                context=_b64(associated_data),
                key_version=epoch,
                mount_point=self.mount,
            )["data"]
        return self._wrapped(data["ciphertext"], expect=epoch)

    def rotate(self) -> int:
        with _provider_errors("rotate epoch"):
            self._epoch()  # make sure it exists before rotating it
            epoch_info = self._transit.rotate_key(self.epoch_key, mount_point=self.mount)["data"]
        epoch = int(epoch_info["latest_version"])
        floor = self._retired_through(epoch_info) + 1
        for name in self._tenant_keys():
            info = self._read(name)
            if info is not None:
                self._sync(name, info, epoch, floor)
                self._synced[name] = epoch
        return epoch

    def retire(self, version: int) -> None:
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise ValueError("version must be a non-negative int")
        epoch_info = self._epoch()
        epoch = int(epoch_info["latest_version"])
        if version >= epoch:
            raise ValueError(
                f"cannot retire KEK version {version}: the newest version is {epoch} "
                "and it must stay"
            )
        if version <= self._retired_through(epoch_info):
            return  # the epoch is marked last, so every tenant key is already trimmed
        for name in self._tenant_keys():
            info = self._read(name)
            if info is not None:
                self._sync(name, info, epoch, version + 1)
        # Last: the epoch's floor is the record that this retirement completed.
        self._raise_floor(self.epoch_key, epoch_info, version + 1)

    def delete_tenant_key(self, tenant: str) -> bool:
        """Delete ``tenant``'s key with every version (offboarding, once no wrap under it is
        left). Idempotent: True once the key no longer exists, whoever deleted it. Transit
        refuses a deletion until the key's config allows it."""
        name = self.key_name(tenant)
        if self._read(name) is not None:
            try:
                with _provider_errors(f"delete key {name}"):
                    self._transit.update_key_configuration(
                        name, deletion_allowed=True, mount_point=self.mount
                    )
                    self._transit.delete_key(name, mount_point=self.mount)
            except KeyProviderError:
                if self._read(name) is not None:
                    raise  # not another worker's deletion: a real failure
        self._synced.pop(name, None)
        return self._read(name) is None

    def current_version(self) -> int:
        return int(self._epoch()["latest_version"])

    def live_versions(self) -> list[int]:
        info = self._epoch()
        return list(range(self._retired_through(info) + 1, int(info["latest_version"]) + 1))

    def check(self) -> None:
        # Reading (or first creating) the epoch key proves reachability, unsealed state, a valid
        # token with rights on our keys, and that the mount exists, within ``timeout``.
        self._epoch()

    # -- KeyAdmin.created_at (rotation schedule), Signer (audit checkpoints) -----------------

    def created_at(self, version: int) -> datetime:
        """When an epoch version was created (UTC); ``ValueError`` if it is not live."""
        stamp = self._epoch()["keys"].get(str(version))
        if stamp is None:
            raise ValueError(f"KEK version {version} is not live")
        return datetime.fromtimestamp(int(stamp), UTC)

    def _signing_info(self) -> dict[str, Any]:
        info = self._read(self.signing_key)
        if info is None:
            info = self._create(
                self.signing_key,
                key_type=_SIGNING_KEY_TYPE,
                exportable=False,
                allow_plaintext_backup=False,
            )
        if info.get("type") != _SIGNING_KEY_TYPE:
            raise KeyProviderError(f"transit key {self.signing_key} is not an ed25519 key")
        return info

    def sign(self, message: bytes) -> bytes:
        """Raw Ed25519 signature, verifiable with :meth:`signing_public_key`."""
        if not self._signing_ready:
            self._signing_info()
            self._signing_ready = True
        with _provider_errors(f"sign with {self.signing_key}"):
            data = self._transit.sign_data(
                self.signing_key, hash_input=_b64(message), mount_point=self.mount
            )["data"]
        try:
            signature = base64.b64decode(str(data["signature"]).rsplit(":", 1)[-1], validate=True)
        except binascii.Error:
            signature = b""
        if len(signature) != ED25519_SIGNATURE_SIZE:
            raise KeyProviderError("transit returned a malformed Ed25519 signature")
        return signature

    def signing_public_key(self) -> bytes:
        """Raw Ed25519 public key of the newest signing key version."""
        info = self._signing_info()
        entry = info["keys"][str(info["latest_version"])]
        public = base64.b64decode(entry["public_key"])
        if len(public) != ED25519_PUBLIC_KEY_SIZE:
            raise KeyProviderError("transit returned a malformed Ed25519 public key")
        return public

    # -- Pseudonymizer -----------------------------------------------------------------------

    def pseudonym(self, value: bytes) -> bytes:
        """HMAC-SHA256 under a Transit ``hmac`` key that callvault never rotates (version 1)."""
        if not self._pseudonym_ready:
            if self._read(self.pseudonym_key) is None:
                # A dedicated "hmac" key (hvac's create_key does not know the type yet).
                with _provider_errors(f"create key {self.pseudonym_key}"):
                    self._client.adapter.post(
                        f"/v1/{self.mount}/keys/{self.pseudonym_key}",
                        json={"type": "hmac", "key_size": 32, "exportable": False},
                    )
            self._pseudonym_ready = True
        with _provider_errors(f"hmac with {self.pseudonym_key}"):
            data = self._transit.generate_hmac(
                self.pseudonym_key, hash_input=_b64(value), key_version=1,
                algorithm="sha2-256", mount_point=self.mount,
            )["data"]  # fmt: skip
        try:
            mac = base64.b64decode(str(data["hmac"]).rsplit(":", 1)[-1], validate=True)
        except binascii.Error:
            mac = b""
        if len(mac) != 32:
            raise KeyProviderError("transit returned a malformed HMAC")
        return mac

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _wrapped(ciphertext: str, *, expect: int) -> WrappedKey:
        match = _CIPHERTEXT_RE.fullmatch(ciphertext)
        if match is None or int(match.group(1)) != expect:
            raise KeyProviderError("transit returned an unexpected ciphertext version")
        return WrappedKey(kek_version=expect, ciphertext=ciphertext.encode("ascii"))

    @contextlib.contextmanager
    def _crypto_errors(self, wrapped: WrappedKey) -> Iterator[None]:
        """Map Transit's answers on decrypt/rewrap to the provider contract."""
        try:
            yield
        except InvalidRequest as exc:
            if "too old" in str(exc):
                # min_decryption_version/trim moved past it: the version is destroyed.
                raise KeyDestroyedError(
                    f"KEK version {wrapped.kek_version} has been retired; "
                    "this key can no longer be opened"
                ) from None
            # Wrong context, tampering, unknown key or a version that never existed.
            raise DecryptionError() from None
        except (VaultError, requests.RequestException) as exc:
            raise KeyProviderError(f"transit decrypt failed: {_describe(exc)}") from exc
