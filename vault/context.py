"""The runtime context: every long-lived component, built once from Settings.

The API holds one in ``app.state`` and injects it; the CLI and the worker build their own. Time
(``clock``) and randomness (``rng``) are parameters so tests control them. The factories of the
store and the key provider live here, with the context that holds them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from crypto.errors import KeyringError
from crypto.keys.base import KeyProvider
from crypto.keys.local import LocalKeyring
from vault.audit.denials import LIMITER, DenialLimiter
from vault.config import ConfigError, Settings
from vault.db import Database
from vault.errors import MisconfiguredError
from vault.keys import Keys
from vault.models import utcnow
from vault.policy import Policy, load_policy
from vault.storage import BlobStore, LocalBlobStore, S3BlobStore

Clock = Callable[[], datetime]


@dataclass
class Context:
    settings: Settings
    db: Database
    store: BlobStore
    keys: Keys
    policy: Policy
    # The process's denial limiter (every session carries it, see vault.audit.denials).
    denials: DenialLimiter
    clock: Clock = field(default=utcnow)
    rng: Callable[[int], bytes] | None = None

    def now(self) -> datetime:
        return self.clock()

    def close(self) -> None:
        self.db.dispose()


def open_store(settings: Settings) -> BlobStore:
    if settings.blob_dir is not None:
        return LocalBlobStore(Path(settings.blob_dir))
    if not settings.s3_endpoint:
        raise ConfigError("CALLVAULT_S3_ENDPOINT is required with an s3:// blob store")
    return S3BlobStore.from_settings(
        endpoint=settings.s3_endpoint,
        access_key=settings.s3_access_key or "",
        secret_key=settings.s3_secret_key or "",
        bucket=settings.s3_bucket or "",
        secure=settings.s3_secure,
        region=settings.s3_region,
    )


KEYRING_FILE = "keyring.json"


def open_keys(settings: Settings, *, create: bool = False) -> Keys:
    provider = open_provider(
        settings.key_provider,
        transit_token=settings.transit_token,
        transit_mount=settings.transit_mount,
        create=create,
    )
    return Keys(provider)


def build_context(
    settings: Settings,
    *,
    clock: Clock | None = None,
    rng: Callable[[int], bytes] | None = None,
    create_keys: bool = False,
) -> Context:
    """Open every component. Nothing is migrated here; a missing SQLite file and keyring are
    created only with ``create_keys`` (``init`` and ``serve``)."""
    settings.check_key_separation()
    denials = DenialLimiter(
        burst=settings.auth_denial_burst,
        window=timedelta(seconds=settings.auth_denial_window_seconds),
    )
    return Context(
        settings=settings,
        db=Database.from_url(
            settings.database_url, session_info={LIMITER: denials}, create=create_keys
        ),
        denials=denials,
        store=open_store(settings),
        keys=open_keys(settings, create=create_keys),
        policy=load_policy(settings.policy_file),
        clock=clock or utcnow,
        rng=rng,
    )


def open_provider(
    spec: str,
    *,
    transit_token: str | None = None,
    transit_mount: str = "transit",
    create: bool = False,
) -> KeyProvider:
    """Build a provider from ``CALLVAULT_KEY_PROVIDER``.

    ``local:DIR`` opens ``DIR/keyring.json`` (``create=True`` makes it if missing, for ``init``);
    ``transit:http(s)://HOST:PORT`` talks to OpenBao / Vault Transit with ``transit_token``.
    A bad spec is a ``MisconfiguredError``.
    """
    if not isinstance(spec, str):
        raise MisconfiguredError("key provider spec must be a string")
    kind, sep, rest = spec.partition(":")
    if kind == "local" and sep and rest:
        try:
            return LocalKeyring.open(Path(rest) / KEYRING_FILE, create=create)
        except KeyringError as exc:  # missing, unreadable or corrupted
            raise MisconfiguredError(str(exc)) from exc
    if kind == "transit" and sep:
        url = urlsplit(rest)
        try:
            url.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise MisconfiguredError(f"invalid Transit URL in key provider spec {spec!r}") from None
        if (
            url.scheme not in ("http", "https")
            or not url.hostname
            or url.path not in ("", "/")
            or url.query
            or url.fragment
            or url.username
            or url.password
        ):
            raise MisconfiguredError(
                f"invalid Transit URL in key provider spec {spec!r}; "
                "expected transit:http(s)://HOST:PORT"
            )
        if not transit_token:
            raise MisconfiguredError(
                "a Transit key provider needs a token (CALLVAULT_TRANSIT_TOKEN)"
            )
        # Imported here so that local-keyring deployments never load hvac.
        from crypto.keys.transit import TransitKeyProvider

        return TransitKeyProvider(rest.rstrip("/"), transit_token, transit_mount)
    raise MisconfiguredError(
        f"invalid key provider spec {spec!r}; expected local:PATH or transit:http(s)://HOST:PORT"
    )
