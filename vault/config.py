"""Settings: built once (``Settings()`` reads ``CALLVAULT_*``) and passed explicitly.

Defaults are the embedded ones: SQLite and blobs under ``./callvault-data``, the local keyring
under ``./callvault-keys``. Nothing here opens a connection.

Secrets may come from files: ``CALLVAULT_<NAME>_FILE`` names a file whose content is the value of
each setting in ``FILE_SETTINGS`` (Docker/compose secrets). This module is the one place that
reads them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import make_url

from vault.errors import MisconfiguredError

DEFAULT_DATA_DIR = Path("callvault-data")
DEFAULT_KEY_DIR = Path("callvault-keys")


ENV_PREFIX = "CALLVAULT_"
# Settings that may be read from a file named by CALLVAULT_<NAME>_FILE (secrets, and the URL that
# may carry one).
FILE_SETTINGS = (
    "database_url",
    "database_password",
    "s3_access_key",
    "s3_secret_key",
    "transit_token",
    "regions",
)
# A region's name: a slug, as stored on tenants, principals and recordings.
REGION_RE = r"^[a-z0-9][a-z0-9._-]{0,63}$"
DEFAULT_HOME_REGION = "home"


class ConfigError(MisconfiguredError):
    """A setting is malformed or unsafe; the process must not start."""


def _read_secret_file(what: str, path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
        raise ConfigError(f"{what}: cannot read {path}: {reason}") from None
    value = text.removesuffix("\n").removesuffix("\r")
    if not value:
        raise ConfigError(f"{what}: {path} is empty")
    return value


class Placement(BaseModel):
    """Where one region's media and keys live: its blob store and key provider. The home
    region's are top-level settings (``Settings``), every other region's a ``RegionSettings``;
    both are read through these fields and checked by these validators."""

    blob_store: str
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = Field(default=None, repr=False)
    s3_secure: bool = False
    s3_region: str | None = None
    # A body of declared length goes up as one streaming PUT (issue #12); off: buffered parts,
    # for clients slower than one 1 MiB segment per the store's request-idle limit.
    s3_streaming_put: bool = True
    key_provider: str
    transit_token: str | None = Field(default=None, repr=False)
    transit_mount: str = "transit"

    @field_validator("blob_store")
    @classmethod
    def _blob_scheme(cls, v: str) -> str:
        if not (v.startswith("file:") or v.startswith("s3://")):
            raise ValueError("must be file:PATH or s3://BUCKET")
        return v

    @field_validator("key_provider")
    @classmethod
    def _key_scheme(cls, v: str) -> str:
        if not (v.startswith("local:") or v.startswith("transit:")):
            raise ValueError("must be local:PATH or transit:http(s)://HOST:PORT")
        return v

    @property
    def blob_dir(self) -> Path | None:
        store = self.blob_store
        return Path(store.removeprefix("file:")) if store.startswith("file:") else None

    @property
    def s3_bucket(self) -> str | None:
        store = self.blob_store
        return store.removeprefix("s3://") if store.startswith("s3://") else None

    @property
    def keyring_dir(self) -> Path | None:
        spec = self.key_provider
        return Path(spec.removeprefix("local:")) if spec.startswith("local:") else None


class RegionSettings(Placement):
    """One region of ``CALLVAULT_REGIONS``, written like the home region's settings. The secrets
    may be given as ``*_file`` paths instead (read here, once); giving both is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    s3_secret_key_file: str | None = None
    transit_token_file: str | None = None

    @model_validator(mode="after")
    def _secrets_from_files(self) -> RegionSettings:
        for name in ("s3_secret_key", "transit_token"):
            path = getattr(self, f"{name}_file")
            if path is None:
                continue
            if getattr(self, name) is not None:
                raise ValueError(f"set either {name} or {name}_file, not both")
            object.__setattr__(self, name, _read_secret_file(f"{name}_file", path))
        return self


class _FileSecrets(PydanticBaseSettingsSource):
    """``CALLVAULT_<NAME>_FILE``: the file's content (one trailing newline dropped)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every file setting at once

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in FILE_SETTINGS:
            var = f"{ENV_PREFIX}{name.upper()}"
            path = os.environ.get(f"{var}_FILE")
            if path is None:
                continue
            if var in os.environ:
                # Two sources for one secret: refuse rather than guess which one wins.
                raise ConfigError(f"set either {var} or {var}_FILE, not both")
            values[name] = _read_secret_file(f"{var}_FILE", path)
        return values


class Settings(Placement, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CALLVAULT_", extra="ignore", frozen=True)

    database_url: str = f"sqlite:///{DEFAULT_DATA_DIR}/callvault.db"
    # The PostgreSQL password, kept out of the URL (so the URL may live in plain config and the
    # password in a secret file shared with the database container).
    database_password: str | None = Field(default=None, repr=False)
    # The home region's store and key provider (the other fields are Placement's).
    blob_store: str = f"file:{DEFAULT_DATA_DIR}/blobs"
    key_provider: str = f"local:{DEFAULT_KEY_DIR}"
    policy_file: Path | None = None
    # Data residency (README, "Data residency"). The settings above are the home region's;
    # ``regions`` (JSON) adds the others, each with its own store and key provider. Residency is
    # on once either is set: tenant and principal regions must then name a configured region.
    home_region: str | None = Field(default=None, pattern=REGION_RE)
    regions: dict[str, RegionSettings] = Field(default_factory=dict)
    # Where ``init`` (and a first ``serve``) writes the bootstrap admin key, mode 0600, instead of
    # printing it.
    admin_key_file: Path | None = None

    job_interval_seconds: float = Field(default=60.0, gt=0)
    # An ingest still pending after this long is presumed dead; the sweeper reclaims it.
    pending_ingest_timeout_seconds: float = Field(default=3600.0, gt=0)
    access_request_ttl_hours: float = Field(default=24.0, gt=0)
    # Hex of a pinned Ed25519 public key for checkpoint verification (else: the provider's).
    audit_public_key: str | None = None
    # The audit sequencer (job audit-sequence) runs this often; an event left unsequenced for
    # longer than the bound raises an alarm (an error in the log; the metric
    # callvault_audit_unsequenced_oldest_seconds).
    audit_sequence_interval_seconds: float = Field(default=5.0, gt=0)
    audit_sequence_bound_seconds: float = Field(default=300.0, gt=0)
    # Unauthenticated denials: the first N per window are audited one by one, the rest in
    # aggregate, so a flood cannot serialise the audit chain.
    auth_denial_burst: int = Field(default=10, ge=1)
    auth_denial_window_seconds: float = Field(default=60.0, gt=0)
    readiness_timeout_seconds: float = Field(default=3.0, gt=0)
    # Abuse limits (per process). Failed authentications per client address and window, then
    # 429 with Retry-After; X-Forwarded-For counts only when the peer is a trusted proxy.
    auth_failure_limit: int = Field(default=20, ge=1)
    auth_failure_window_seconds: float = Field(default=60.0, gt=0)
    trusted_proxies: list[str] = Field(default_factory=list)
    # A verified API key is reused for this long per process (at most 1 s; 0: never), so a
    # revocation takes effect on every process within it.
    auth_cache_seconds: float = Field(default=1.0, ge=0, le=1.0)
    # Ingest: the largest body accepted (413 above it, before anything is stored), how long a
    # body may stall between chunks, and how many uploads one principal may run at once.
    max_ingest_bytes: int = Field(default=16 << 30, ge=1)
    upload_idle_timeout_seconds: float = Field(default=30.0, gt=0)
    max_uploads_per_principal: int = Field(default=4, ge=1)
    list_page_limit: int = Field(default=100, ge=1, le=1000)
    # Redaction: the deadline of each ffmpeg process of one run (a stuck run is killed and
    # retried), and how many queued redactions one job run takes on.
    redaction_timeout_seconds: float = Field(default=3600.0, gt=0)
    redaction_batch: int = Field(default=4, ge=1, le=100)
    # A revoked principal's owner e-mail is personal data: cleared this long after revocation
    # (the pseudonym stays), by the clear-revoked-owners job.
    revoked_owner_retention_days: float = Field(default=90.0, gt=0)
    # Console sessions: idle timeout and absolute lifetime (a sign-in never outlives either).
    console_idle_minutes: float = Field(default=30.0, gt=0)
    console_lifetime_hours: float = Field(default=12.0, gt=0)
    # Access recertification: an API key older than this (from its creation) is listed in the
    # evidence report as past its maximum age; `callvault principal rotate-key` resets it.
    max_key_age_days: float = Field(default=90.0, gt=0)
    # Legal disclosures: how long an authority's one-time download stays available.
    disclosure_export_hours: float = Field(default=72.0, gt=0, le=24 * 30)
    # A hand-off to a sub-processor can be downloaded for this long after it is issued (the
    # notice promises a short-lived transfer: never more than an hour).
    handoff_minutes: float = Field(default=60.0, gt=0, le=60)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSecrets(settings_cls), dotenv_settings)

    @classmethod
    def env_names(cls) -> set[str]:
        """Every environment variable that configures callvault (for typo warnings, checks)."""
        names = {f"{ENV_PREFIX}{name.upper()}" for name in cls.model_fields}
        return names | {f"{ENV_PREFIX}{name.upper()}_FILE" for name in FILE_SETTINGS}

    @field_validator("database_url")
    @classmethod
    def _db_scheme(cls, v: str) -> str:
        if not (v.startswith("sqlite:///") or v.startswith("postgresql+psycopg://")):
            raise ValueError("must start with sqlite:/// or postgresql+psycopg://")
        return v

    @field_validator("database_password")
    @classmethod
    def _password_fits_url(cls, v: str | None, info: ValidationInfo) -> str | None:
        url = info.data.get("database_url")
        if v is None or url is None:  # no password, or the URL already failed
            return v
        if not url.startswith("postgresql+psycopg://"):
            raise ValueError("needs a postgresql+psycopg:// CALLVAULT_DATABASE_URL")
        if make_url(url).password not in (None, v):
            raise ValueError("CALLVAULT_DATABASE_URL carries a password already; set only one")
        return v

    @model_validator(mode="after")
    def _password_into_url(self) -> Settings:
        """Put ``database_password`` into the URL: the engine and everything else see one URL."""
        password = self.database_password
        if password is None:
            return self
        url = make_url(self.database_url)
        full = url.set(password=password).render_as_string(hide_password=False)
        object.__setattr__(self, "database_url", full)  # frozen model: set once, here
        return self

    @field_validator("regions", mode="before")
    @classmethod
    def _regions_json(cls, v: Any) -> Any:
        # From CALLVAULT_REGIONS_FILE the value arrives as text.
        if isinstance(v, str):
            try:
                return json.loads(v)
            except ValueError:
                raise ValueError("must be a JSON object of region name to settings") from None
        return v

    @model_validator(mode="after")
    def _region_names(self) -> Settings:
        for name in self.regions:
            if not re.fullmatch(REGION_RE, name):
                raise ValueError(f"region name {name!r}: a lower-case slug of 1-64 characters")
            if name == self.home_region_name:
                raise ValueError(
                    f"region {name!r} is the home region (CALLVAULT_HOME_REGION): its store and "
                    "keys are CALLVAULT_BLOB_STORE and CALLVAULT_KEY_PROVIDER"
                )
        return self

    # --- derived views ----------------------------------------------------------------------

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")

    @property
    def sqlite_path(self) -> Path | None:
        return Path(self.database_url.removeprefix("sqlite:///")) if self.is_sqlite else None

    @property
    def home_region_name(self) -> str:
        return self.home_region or DEFAULT_HOME_REGION

    @property
    def residency(self) -> bool:
        """Regions are configured: tenant and principal regions must name one of them."""
        return self.home_region is not None or bool(self.regions)

    @property
    def region_names(self) -> frozenset[str]:
        """Every configured region, the home region included."""
        return frozenset({self.home_region_name, *self.regions})

    @property
    def known_regions(self) -> frozenset[str] | None:
        """What a tenant's region must be one of; None while residency is off (the region is
        then a label only, as before regions existed)."""
        return self.region_names if self.residency else None

    def check_key_separation(self) -> None:
        """Key material must never live inside the directories of the data it protects (in any
        region: one region's keyring inside another's blobs is as bad)."""
        blob_dirs = [self.blob_dir] + [r.blob_dir for r in self.regions.values()]
        keyrings = [self.keyring_dir] + [r.keyring_dir for r in self.regions.values()]
        for keyring in keyrings:
            if keyring is not None:
                self._check_keyring(keyring.resolve(), blob_dirs)

    def _check_keyring(self, keyring: Path, blob_dirs: list[Path | None]) -> None:
        guarded = [p for p in (*blob_dirs, self.sqlite_path) if p is not None]
        for path in guarded:
            root = path.resolve()
            # The DB is a file: guard its directory.
            if self.sqlite_path is not None and path == self.sqlite_path:
                root = root.parent
            if keyring == root or keyring.is_relative_to(root):
                raise ConfigError(
                    f"the keyring {keyring} lies inside the data directory {root}; keep key "
                    "material apart from what it protects (CALLVAULT_KEY_PROVIDER=local:PATH)"
                )
