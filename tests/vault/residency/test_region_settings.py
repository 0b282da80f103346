"""Region settings: the env shape, secrets from files, and regions checked when a tenant or a
principal is created (never first at ingest)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from tests.vault.residency.conftest import EEA, HOME, Regions
from vault.app import create_app
from vault.authz import Actor
from vault.config import ConfigError, Settings
from vault.context import Context
from vault.errors import UnknownRegionError
from vault.identity import principals
from vault.identity.owners import owner_of
from vault.identity.tenants import create_tenant

EXE = Path(sys.executable).with_name("callvault")


def _region(tmp: Path, name: str, **extra: str) -> dict[str, str]:
    return {"blob_store": f"file:{tmp / name / 'blobs'}",
            "key_provider": f"local:{tmp / name / 'keys'}", **extra}  # fmt: skip


def _base(tmp: Path) -> dict[str, str]:
    return {
        "CALLVAULT_DATABASE_URL": f"sqlite:///{tmp / 'data' / 'callvault.db'}",
        "CALLVAULT_BLOB_STORE": f"file:{tmp / 'data' / 'blobs'}",
        "CALLVAULT_KEY_PROVIDER": f"local:{tmp / 'keys'}",
    }


def _from_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    for name in list(os.environ):
        if name.startswith("CALLVAULT_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_regions_from_the_environment_with_secrets_from_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "eea-s3-secret"
    secret.write_text("s3cr3t-eea\n")
    token = tmp_path / "eea-token"
    token.write_text("hvs.eea-token\n")
    eea = {"blob_store": "s3://eea-bucket", "s3_endpoint": "eu.example:9000",
           "s3_access_key": "AK", "s3_secret_key_file": str(secret),
           "key_provider": "transit:https://bao.eu.example:8200",
           "transit_token_file": str(token), "transit_mount": "transit-eea"}  # fmt: skip
    regions_file = tmp_path / "regions.json"
    regions_file.write_text(json.dumps({EEA: eea}))
    env = {**_base(tmp_path), "CALLVAULT_HOME_REGION": "ch"}
    by_value = _from_env(monkeypatch, {**env, "CALLVAULT_REGIONS": json.dumps({EEA: eea})})
    by_file = _from_env(monkeypatch, {**env, "CALLVAULT_REGIONS_FILE": str(regions_file)})
    for settings in (by_value, by_file):
        region = settings.regions[EEA]
        assert (region.s3_secret_key, region.transit_token) == ("s3cr3t-eea", "hvs.eea-token")
        assert region.s3_bucket == "eea-bucket" and region.transit_mount == "transit-eea"
        assert settings.residency and settings.known_regions == {"ch", EEA}
        assert "s3cr3t" not in repr(settings) and "hvs." not in repr(settings)
    assert {"CALLVAULT_REGIONS", "CALLVAULT_REGIONS_FILE", "CALLVAULT_HOME_REGION"} <= (
        Settings.env_names()
    )


def test_without_regions_everything_is_the_home_region(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'db'}")  # type: ignore[call-arg]
    assert not settings.residency and settings.known_regions is None
    assert settings.region_names == {"home"}


@pytest.mark.parametrize(
    ("regions", "home", "match"),
    [
        ({"EU West": {}}, None, "region name"),
        ({HOME: {}}, HOME, "is the home region"),
        ({EEA: {"blob_store": "ftp://x"}}, None, "file:PATH or s3://BUCKET"),
        ({EEA: {"key_provider": "kms:x"}}, None, "local:PATH or transit"),
        ({EEA: {"bucket": "x"}}, None, "Extra inputs are not permitted"),
        ({EEA: {"transit_token": "a", "transit_token_file": "/dev/null"}}, None, "not both"),
        ("not json", None, "JSON object"),
    ],
)
def test_malformed_regions_are_refused_at_startup(
    tmp_path: Path, regions: object, home: str | None, match: str
) -> None:
    if isinstance(regions, dict):
        regions = {name: {**_region(tmp_path, name), **spec} for name, spec in regions.items()}
    with pytest.raises(ValidationError, match=match):
        Settings(_env_file=None, regions=regions, home_region=home)  # type: ignore[call-arg]


def test_a_regions_keyring_inside_another_regions_blobs_is_refused(tmp_path: Path) -> None:
    bad = {EEA: {"blob_store": f"file:{tmp_path / 'eea'}",
                 "key_provider": f"local:{tmp_path / 'data' / 'blobs' / 'k'}"}}  # fmt: skip
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{tmp_path / 'data' / 'callvault.db'}",
        blob_store=f"file:{tmp_path / 'data' / 'blobs'}", key_provider=f"local:{tmp_path / 'k'}",
        regions=bad,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="keep key material apart"):
        settings.check_key_separation()


def _local_regions(make_ctx: Callable[..., Context], tmp_path: Path) -> Context:
    return make_ctx(db="sqlite", home_region=HOME, regions={EEA: _region(tmp_path, EEA)})


def test_a_tenant_in_an_unconfigured_region_is_refused_at_creation(
    make_ctx: Callable[..., Context], tmp_path: Path
) -> None:
    ctx = _local_regions(make_ctx, tmp_path)
    with ctx.db.transaction() as s, pytest.raises(UnknownRegionError, match="'mars'"):
        create_tenant(s, actor=Actor.operator(), name="acme", region="mars", now=ctx.now(),
                      regions=ctx.settings.known_regions)  # fmt: skip
    with TestClient(create_app(ctx.settings, ctx=ctx)) as client:
        key = _admin_key(ctx)
        resp = client.post("/v1/tenants", json={"name": "acme", "region": "mars"},
                           headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert resp.status_code == 422, resp.text
        assert resp.json()["type"] == "https://callvault.dev/problems/unknown-region"
        ok = client.post("/v1/tenants", json={"name": "acme", "region": EEA},
                         headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert ok.status_code == 201 and ok.json()["region"] == EEA


def test_without_regions_a_tenant_region_stays_a_label(make_ctx: Callable[..., Context]) -> None:
    ctx = make_ctx(db="sqlite")
    with ctx.db.transaction() as s:
        tenant = create_tenant(s, actor=Actor.operator(), name="acme", region="eu-central-1",
                               now=ctx.now(), regions=ctx.settings.known_regions)  # fmt: skip
    assert ctx.region_of(tenant.region) is None  # its media stays in the one store


def _admin_key(ctx: Context) -> str:
    from vault.setup import initialise

    key = initialise(ctx, now=ctx.now())
    assert key is not None
    return key


@pytest.mark.parametrize("residency", [True, False])
def test_a_principal_in_an_unconfigured_region_is_refused(
    make_ctx: Callable[..., Context], tmp_path: Path, residency: bool
) -> None:
    ctx = _local_regions(make_ctx, tmp_path) if residency else make_ctx(db="sqlite")
    owner = owner_of(ctx.keys, "someone@example.com")
    with ctx.db.transaction() as s, pytest.raises(UnknownRegionError):
        principals.add_principal(
            s, actor=Actor.operator(), name="p", role="engineer", owner=owner, tenants=[],
            all_tenants=True, now=ctx.now(), region="mars", regions=ctx.settings.region_names,
        )  # fmt: skip


def test_the_cli_refuses_an_unconfigured_region_with_exit_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLVAULT_")}
    env.update(_base(tmp_path), CALLVAULT_HOME_REGION=HOME,
               CALLVAULT_REGIONS=json.dumps({EEA: _region(tmp_path, EEA)}))  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(EXE), *args], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)  # fmt: skip

    assert run("init").returncode == 0
    assert (tmp_path / EEA / "keys" / "keyring.json").is_file()  # init made the region's keyring
    out = run("tenant", "add", "acme", "--region", "mars")
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and "mars" in out.stderr
    assert run("tenant", "add", "acme", "--region", EEA).returncode == 0
    bad = run("principal", "add", "p", "--role", "engineer", "--owner", "p@example.com",
              "--tenant", "acme", "--region", "mars")  # fmt: skip
    assert bad.returncode == 2, (bad.stdout, bad.stderr)
    good = run("principal", "add", "p", "--role", "engineer", "--owner", "p@example.com",
               "--tenant", "acme", "--region", EEA)  # fmt: skip
    assert good.returncode == 0, good.stderr


def test_readiness_probes_every_region(regions: Regions) -> None:
    with TestClient(create_app(regions.ctx.settings, ctx=regions.ctx)) as client:
        body = client.get("/readyz").json()
    assert body["checks"] == {
        "database": "ok", "store": "ok", "key_provider": "ok",
        f"store:{EEA}": "ok", f"key_provider:{EEA}": "ok",
    }  # fmt: skip
