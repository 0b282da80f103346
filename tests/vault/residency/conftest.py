"""Two regions for the data-residency tests: "us" (home) and "eea".

Each region is a real SeaweedFS server (``weed`` and ``weed_eea``, session fixtures) with a
fresh Object Lock bucket, and a real Transit mount in the one OpenBao (``transit`` and
``transit-eea``). The settings are written as an operator would (``CALLVAULT_REGIONS``); only the
Transit key prefix is replaced by a fresh one per test, so that KEK versions never leak between
tests sharing the server.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import minio
import pytest

from crypto.keys.transit import TransitKeyProvider
from tests.conftest import Bao
from tests.support.clock import FakeClock
from tests.support.postgres import temp_database
from tests.support.txguard import guard
from tests.support.weed import WeedServer
from tests.vault.conftest import new_bucket_name
from vault.access import grants
from vault.authz import Actor
from vault.config import Settings
from vault.context import Context, build_context
from vault.identity import authentication, principals
from vault.identity.owners import owner_of
from vault.identity.tenants import create_tenant
from vault.keys import Keys
from vault.models import Recording, Tenant
from vault.recordings.ingest import ingest as do_ingest
from vault.setup import initialise
from vault.tenants.policy import Authorisations, TransferPermission, apply_authorisations

HOME, EEA = "us", "eea"


@dataclass
class Regions:
    ctx: Context
    clock: FakeClock
    admin_key: str
    buckets: dict[str, tuple[minio.Minio, str]]  # region -> (client, bucket)
    transit: dict[str, TransitKeyProvider]  # region -> a provider on that region's mount

    def objects(self, region: str) -> list[str]:
        """Every object version's key in the region's bucket, looked at behind the store's back."""
        client, bucket = self.buckets[region]
        return sorted(
            o.object_name
            for o in client.list_objects(bucket, recursive=True, include_version=True)
            if o.object_name is not None
        )

    def tenant(self, name: str, region: str | None) -> Tenant:
        with self.ctx.db.transaction() as s:
            return create_tenant(
                s, actor=Actor.operator(), name=name, region=region, now=self.ctx.now(),
                regions=self.ctx.settings.known_regions,
            )  # fmt: skip

    def principal(
        self, name: str, *, tenant: Tenant, region: str | None, role: str = "engineer"
    ) -> tuple[Actor, str]:
        owner = owner_of(self.ctx.keys, f"{name}@example.com")
        with self.ctx.db.transaction() as s:
            _, key = principals.add_principal(
                s, actor=Actor.operator(), name=name, role=role, owner=owner,
                tenants=[tenant.name], all_tenants=False, now=self.ctx.now(), region=region,
                regions=self.ctx.settings.region_names,
            )  # fmt: skip
        with self.ctx.db.session() as s:
            return authentication.authenticate(s, api_key=key, now=self.ctx.now()), key

    def ingest(self, tenant: Tenant, data: bytes, **kw: Any) -> Recording:
        return do_ingest(
            self.ctx, actor=Actor.operator(), tenant=tenant.name, purposes=["troubleshooting"],
            call_id=kw.pop("call_id", f"call-{uuid.uuid4().hex[:8]}"), recorded_at=None,
            content_type="application/octet-stream", chunks=[data], **kw,
        )  # fmt: skip

    def grant(self, actor: Actor, rid: uuid.UUID) -> uuid.UUID:
        now = self.clock()
        with self.ctx.db.transaction() as s:
            g = grants.issue_grant(
                s, principal_id=actor.id, owner=actor.owner, purpose="troubleshooting",
                recording_ids=[rid], not_before=now, expires_at=now + timedelta(hours=1),
            )  # fmt: skip
            return g.id

    def authorise_transfers(self, tenant: Tenant, *destinations: str) -> None:
        """As an approved authorisations change leaves them (the four-eyes flow has its own
        tests in tests/vault/tenants)."""
        allowed = Authorisations(
            transfers=[
                TransferPermission(destination=d, mechanism="SCC 2021/914 module 2",
                                   instruction_ref=f"DPA-{d}-7")
                for d in destinations
            ]
        )  # fmt: skip
        with self.ctx.db.transaction() as s:
            apply_authorisations(
                s, tenant_id=tenant.id, change_id=uuid.uuid4(), authorisations=allowed,
                now=self.ctx.now(),
            )  # fmt: skip

    def row(self, rid: uuid.UUID) -> Recording:
        with self.ctx.db.session() as s:
            rec = s.get(Recording, rid)
            assert rec is not None
            return rec


def _bucket(server: WeedServer) -> tuple[minio.Minio, str]:
    client, name = server.client(), new_bucket_name()
    client.make_bucket(name, object_lock=True)
    return client, name


@pytest.fixture
def make_regions(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    weed: WeedServer,
    weed_eea: WeedServer,
    bao: Bao,
    transit_eea: str,
) -> Iterator[Callable[..., Regions]]:
    """Build an initialised two-region vault on SQLite or PostgreSQL."""
    stack = contextlib.ExitStack()

    def make(*, db: str = "sqlite") -> Regions:
        base = Path(tempfile.mkdtemp(dir=tmp_path))
        if db == "sqlite":
            db_url = f"sqlite:///{base / 'callvault.db'}"
        else:
            db_url = stack.enter_context(temp_database(request.getfixturevalue("pg_url")))
        home, eea = _bucket(weed), _bucket(weed_eea)
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=db_url,
            blob_store=f"s3://{home[1]}",
            s3_endpoint=weed.endpoint,
            s3_access_key=weed.access_key,
            s3_secret_key=weed.secret_key,
            key_provider=f"transit:{bao.url}",
            transit_token=bao.token,
            home_region=HOME,
            regions={
                EEA: {
                    "blob_store": f"s3://{eea[1]}", "s3_endpoint": weed_eea.endpoint,
                    "s3_access_key": weed_eea.access_key, "s3_secret_key": weed_eea.secret_key,
                    "key_provider": f"transit:{bao.url}", "transit_token": bao.token,
                    "transit_mount": transit_eea,
                }
            },
            auth_cache_seconds=0.0,
        )  # fmt: skip
        clock = FakeClock()
        ctx = build_context(settings, clock=clock, create_keys=True)
        stack.callback(ctx.close)
        prefix = "r" + uuid.uuid4().hex[:12]
        transit = {
            HOME: TransitKeyProvider(bao.url, bao.token, "transit", key_prefix=prefix),
            EEA: TransitKeyProvider(bao.url, bao.token, transit_eea, key_prefix=prefix),
        }
        ctx.keys, ctx.regional_keys[EEA] = Keys(transit[HOME]), Keys(transit[EEA])
        admin = initialise(ctx, now=clock())
        assert admin is not None
        violations = guard(ctx)
        stack.callback(_no_violations, violations)
        return Regions(ctx, clock, admin, {HOME: home, EEA: eea}, transit)

    yield make
    stack.close()


def _no_violations(violations: list[str]) -> None:
    assert not violations, "\n\n".join(violations)


@pytest.fixture
def regions(make_regions: Callable[..., Regions]) -> Regions:
    return make_regions()
