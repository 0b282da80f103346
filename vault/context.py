"""The runtime context: every long-lived component, built once from Settings.

The API holds one in ``app.state`` and injects it; the CLI and the worker build their own. Time
(``clock``) and randomness (``rng``) are parameters so tests control them. The factories of the
store and the key provider live here, with the context that holds them.

Data residency: ``store`` and ``keys`` are the home region's; every other configured region has
its own store and key provider, built once here. The context is the one owner of "which store
and keys": :meth:`Context.region_of` maps a tenant's region to the region key stored on its
recordings (``None`` is the home region, also for rows written before regions existed), and
:meth:`Context.store_for` / :meth:`Context.keys_for` answer for a region key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from crypto.errors import KeyringError
from crypto.keys.base import KeyProvider
from crypto.keys.local import LocalKeyring
from vault.audit.denials import LIMITER, DenialLimiter
from vault.config import ConfigError, Placement, Settings
from vault.db import Database
from vault.errors import MisconfiguredError, RegionNotConfiguredError
from vault.keys import Keys
from vault.models import utcnow
from vault.policy import Policy, load_policy
from vault.storage import BlobStore, HeaderCache, LocalBlobStore, Locations, S3BlobStore

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
    # The other regions (not the home one), by name.
    regional_stores: dict[str, BlobStore] = field(default_factory=dict)
    regional_keys: dict[str, Keys] = field(default_factory=dict)
    # Playback's cache of stream headers (public ciphertext) by object version.
    stream_headers: HeaderCache = field(default_factory=HeaderCache)
    # Where recently read recordings' ciphertext lies, for playback's early GETs.
    read_locations: Locations = field(default_factory=Locations)

    def now(self) -> datetime:
        return self.clock()

    # --- residency: the one answer to "which store and keys" ------------------------------------

    @property
    def home_region(self) -> str:
        return self.settings.home_region_name

    def region_of(self, tenant_region: str | None) -> str | None:
        """The region key for a tenant's region: ``None`` (home) when residency is off, the
        tenant has no region or it is the home region; else the region's name. A region the
        settings do not name is ``RegionNotConfiguredError``: never the home store instead."""
        if not self.settings.residency or tenant_region in (None, self.home_region):
            return None
        if tenant_region not in self.regional_stores:
            raise RegionNotConfiguredError(f"region {tenant_region!r} is not configured")
        return tenant_region

    def region_name(self, region: str | None) -> str:
        """The region's name as audited and shown (the home region's for ``None``)."""
        return self.home_region if region is None else region

    def regions(self) -> list[str | None]:
        """Every region key: the home region (``None``) first."""
        return [None, *sorted(self.regional_stores)]

    def store_for(self, region: str | None) -> BlobStore:
        return self.store if self._is_home(region) else _configured(self.regional_stores, region)

    def keys_for(self, region: str | None) -> Keys:
        return self.keys if self._is_home(region) else _configured(self.regional_keys, region)

    def _is_home(self, region: str | None) -> bool:
        return region is None or region == self.home_region

    def close(self) -> None:
        self.db.dispose()


T = TypeVar("T")


def _configured(by_region: dict[str, T], region: str | None) -> T:
    try:
        return by_region[region or ""]
    except KeyError:
        raise RegionNotConfiguredError(f"region {region!r} is not configured") from None


def open_store(settings: Placement) -> BlobStore:
    """The blob store of the home region (``Settings``) or of another region."""
    if settings.blob_dir is not None:
        return LocalBlobStore(Path(settings.blob_dir))
    if not settings.s3_endpoint:
        what = "CALLVAULT_S3_ENDPOINT" if isinstance(settings, Settings) else "s3_endpoint"
        raise ConfigError(f"{what} is required with an s3:// blob store")
    return S3BlobStore.from_settings(
        endpoint=settings.s3_endpoint,
        access_key=settings.s3_access_key or "",
        secret_key=settings.s3_secret_key or "",
        bucket=settings.s3_bucket or "",
        secure=settings.s3_secure,
        region=settings.s3_region,
        streaming_put=settings.s3_streaming_put,
    )


KEYRING_FILE = "keyring.json"


def open_keys(settings: Placement, *, create: bool = False) -> Keys:
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
        regional_stores={name: open_store(r) for name, r in settings.regions.items()},
        regional_keys={
            name: open_keys(r, create=create_keys) for name, r in settings.regions.items()
        },
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
