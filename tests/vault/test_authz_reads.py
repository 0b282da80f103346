"""The authorization matrix for reads: every role, scoped to acme or over all tenants, against every
list and get of the API, on SQLite and PostgreSQL, with acme's and globex's data side by side.

What a principal gets for a resource outside its scope (README, "Scope"): a read by id answers
404 exactly like a missing one (and the attempt is audited as a denial); a list is filtered; the
audit log's verification and legacy checkpoints, which cover every tenant, answer 403
``all-tenants-required`` to a scoped principal. A role without the permission gets 403
``forbidden`` whatever the scope.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.clock import FakeClock
from tests.support.postgres import temp_database
from tests.vault.test_fuzz_api import AGE_RECIPIENT
from vault import audit
from vault.access import requests as access
from vault.app import create_app
from vault.authz import Actor
from vault.config import Settings
from vault.context import Context, build_context
from vault.db import migrate
from vault.identity import principals
from vault.identity.owners import Owner, owner_of
from vault.identity.tenants import create_tenant
from vault.models import ReviewDecision, Role, SubprocessorCreate
from vault.recordings.ingest import ingest
from vault.retention import erasure, holds
from vault.setup import initialise
from vault.subprocessors import registry

R = Role
TYPE = "https://callvault.dev/problems/"
TENANTS = ("acme", "globex")
REASON = "Investigating dropped audio reported by the customer"

# Which roles hold which read (the role table, written out by hand).
# monitor scrapes /metrics and nothing else; a sub-processor redeems its hand-offs only
METADATA = set(R) - {R.monitor, R.subprocessor}
REQUESTS = {R.engineer, R.approver, R.security}
REVIEWERS = {R.approver, R.security}  # see every request in scope, not only their own
GRANTS = {R.engineer, R.approver, R.security}
ALL_GRANTS = {R.security}
HOLDS = {R.security, R.privacy}
ERASURE = {R.privacy}
AUDIT = {R.security, R.auditor}


@dataclass
class World:
    client: TestClient
    ctx: Context
    keys: dict[tuple[Role, str], str]  # (role, "acme" | "all") -> API key
    ids: dict[str, dict[str, str]] = field(default_factory=dict)  # tenant -> kind -> id
    tenant_ids: dict[str, str] = field(default_factory=dict)

    def get(self, role: Role, scope: str, path: str, **params: Any) -> Any:
        key = self.keys[(role, scope)]
        return self.client.get(path, params=params, headers={"Authorization": f"Bearer {key}"})


def _principal(
    ctx: Context, s: Any, name: str, role: Role, tenants: list[str], owner: Owner
) -> str:
    if role is R.subprocessor:  # bound to a registry entry, never to tenants
        _, key = registry.add_principal(s, actor=Actor.operator(), name=name, owner=owner,
                                        subprocessor="scribe", now=ctx.now())  # fmt: skip
        return key
    _, key = principals.add_principal(
        s, actor=Actor.operator(), name=name, role=role, owner=owner,
        tenants=tenants, all_tenants=not tenants, now=ctx.now(),
    )  # fmt: skip
    return key


def _populate(ctx: Context, world: World) -> None:
    """Per tenant: a recording under a granted request, a hold, an erasure request."""
    op = Actor.operator()
    for name in TENANTS:
        roles = (R.engineer, R.approver)
        people_owners = {r: owner_of(ctx.keys, f"{name}-{r}@example.com") for r in roles}
        with ctx.db.transaction() as s:
            tenant = create_tenant(s, actor=op, name=name, region=None, now=ctx.now())
            people = {}
            for role in roles:
                p, _ = principals.add_principal(
                    s, actor=op, name=f"{name}-{role}", role=role,
                    owner=people_owners[role], tenants=[name], all_tenants=False,
                    now=ctx.now(),
                )  # fmt: skip
                people[role] = Actor(id=p.id, name=p.name, role=role, owner=p.owner_ref,
                                     tenant_ids=frozenset({tenant.id}))  # fmt: skip
        world.tenant_ids[name] = str(tenant.id)
        rec, gone = (
            ingest(ctx, actor=op, tenant=name, purposes=["troubleshooting"], call_id=f"c-{i}",
                   recorded_at=None, content_type="video/mp4", chunks=[b"media" * 10])
            for i in range(2)
        )  # fmt: skip
        with ctx.db.transaction() as s:
            req = access.create_request(
                s, actor=people[R.engineer], policy=ctx.policy, recording_ids=[rec.id],
                purpose="troubleshooting", reason=REASON, ticket="OPS-1", duration_minutes=30,
                request_ttl=ctx.policy.purpose("troubleshooting").max_access, now=ctx.now(),
            )  # fmt: skip
        with ctx.db.transaction() as s:
            approved = access.review(
                s, actor=people[R.approver], policy=ctx.policy, request_id=req.id,
                decision=ReviewDecision.approve, comment="ok", now=ctx.now(),
            )  # fmt: skip
            hold = holds.create_hold(
                s, actor=op, store=ctx.store, case_ref="CASE-1", reason="litigation",
                recording_ids=[rec.id], now=ctx.now(),
            )  # fmt: skip
            wipe = erasure.create_request(
                s, actor=op, policy=ctx.policy, recording_ids=[gone.id], reason="subject asked",
                now=ctx.now(),
            )  # fmt: skip
        world.ids[name] = {
            "recording": str(rec.id), "erasable": str(gone.id), "request": str(req.id),
            "grant": str(approved.grant_id), "hold": str(hold.id), "erasure": str(wipe.id),
        }  # fmt: skip


def _world(ctx: Context) -> Iterator[World]:
    initialise(ctx, now=ctx.now())
    with TestClient(create_app(ctx.settings, ctx=ctx)) as client:
        world = World(client=client, ctx=ctx, keys={})
        _populate(ctx, world)
        names = [n for r in R for n in (f"r-{r}-acme", f"r-{r}-all")]
        owner = {n: owner_of(ctx.keys, f"{n}@example.com") for n in names}
        with ctx.db.transaction() as s:
            registry.add_subprocessor(
                s, actor=Actor.operator(), policy=ctx.policy, now=ctx.now(),
                body=SubprocessorCreate(name="scribe", purpose="transcription", region="eu",
                                        contract_ref="DPA-1", age_recipient=AGE_RECIPIENT),
            )  # fmt: skip
            for role in R:
                acme, every = f"r-{role}-acme", f"r-{role}-all"
                world.keys[(role, "acme")] = _principal(ctx, s, acme, role, ["acme"], owner[acme])
                world.keys[(role, "all")] = _principal(ctx, s, every, role, [], owner[every])
        yield world


def _context(tmp: Path, url: str) -> Context:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=url, blob_store=f"file:{tmp / 'data' / 'blobs'}",
        key_provider=f"local:{tmp / 'keys'}",
    )  # fmt: skip
    ctx = build_context(settings, clock=FakeClock(), create_keys=True)
    migrate(ctx.db.engine)
    ctx.store.ensure_bucket()
    return ctx


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp(f"reads-{request.param}")
    if request.param == "sqlite":
        ctx = _context(tmp, f"sqlite:///{tmp / 'data' / 'callvault.db'}")
        yield from _world(ctx)
        ctx.close()
        return
    with temp_database(request.getfixturevalue("pg_url")) as url:
        ctx = _context(tmp, url)
        yield from _world(ctx)
        ctx.close()


ROLE_SCOPES = [pytest.param(r, s, id=f"{r}-{s}") for r in R for s in ("acme", "all")]


def _problem(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == TYPE + code


def _seen(world: World, scope: str, kind: str) -> set[str]:
    return {world.ids[t][kind] for t in (TENANTS if scope == "all" else ("acme",))}


@pytest.mark.parametrize(("role", "scope"), ROLE_SCOPES)
def test_recordings_list_and_get(world: World, role: Role, scope: str) -> None:
    listed = world.get(role, scope, "/v1/recordings", limit=100)
    if role not in METADATA:
        _problem(listed, 403, "forbidden")
        return
    assert listed.status_code == 200, listed.text
    got = {item["id"] for item in listed.json()["items"]}
    assert got == _seen(world, scope, "recording") | _seen(world, scope, "erasable")
    for tenant in TENANTS:
        r = world.get(role, scope, f"/v1/recordings/{world.ids[tenant]['recording']}")
        if scope == "all" or tenant == "acme":
            assert r.status_code == 200, r.text
        else:  # out of scope: the very answer a missing id gets
            _problem(r, 404, "not-found")
            missing = world.get(role, scope, f"/v1/recordings/{uuid.uuid4()}")
            assert r.json()["title"] == missing.json()["title"]
    # Filtering by another tenant's name is a filtered (empty) page, never an error.
    other = world.get(role, scope, "/v1/recordings", tenant="globex")
    assert other.status_code == 200
    assert len(other.json()["items"]) == (2 if scope == "all" else 0)


@pytest.mark.parametrize(("role", "scope"), ROLE_SCOPES)
def test_requests_and_grants_lists(world: World, role: Role, scope: str) -> None:
    r = world.get(role, scope, "/v1/access-requests")
    if role not in REQUESTS:
        _problem(r, 403, "forbidden")
    else:
        assert r.status_code == 200, r.text
        # Reviewers see every request in scope; a requester only its own (none, here).
        want = _seen(world, scope, "request") if role in REVIEWERS else set()
        assert {x["id"] for x in r.json()} == want
    g = world.get(role, scope, "/v1/grants")
    if role not in GRANTS:
        _problem(g, 403, "forbidden")
    else:
        assert g.status_code == 200, g.text
        want = _seen(world, scope, "grant") if role in ALL_GRANTS else set()
        assert {x["id"] for x in g.json()} == want


@pytest.mark.parametrize(("role", "scope"), ROLE_SCOPES)
def test_holds_and_erasure_requests(world: World, role: Role, scope: str) -> None:
    listed = world.get(role, scope, "/v1/legal-holds")
    if role not in HOLDS:
        _problem(listed, 403, "forbidden")
    else:
        assert {h["id"] for h in listed.json()} == _seen(world, scope, "hold")
    for tenant in TENANTS:
        hold = world.get(role, scope, f"/v1/legal-holds/{world.ids[tenant]['hold']}")
        wipe = world.get(role, scope, f"/v1/erasure-requests/{world.ids[tenant]['erasure']}")
        for r, allowed in ((hold, HOLDS), (wipe, ERASURE)):
            if role not in allowed:
                _problem(r, 403, "forbidden")
            elif scope == "all" or tenant == "acme":
                assert r.status_code == 200, r.text
            else:
                _problem(r, 404, "not-found")


@pytest.mark.parametrize(("role", "scope"), ROLE_SCOPES)
def test_audit_reads(world: World, role: Role, scope: str) -> None:
    events = world.get(role, scope, "/v1/audit", limit=1000)
    verify = world.get(role, scope, "/v1/audit/verify")
    checkpoints = world.get(role, scope, "/v1/audit/checkpoints")
    if role not in AUDIT:
        for r in (events, verify, checkpoints):
            _problem(r, 403, "forbidden")
        return
    assert events.status_code == 200, events.text
    tenants = {e["tenant_id"] for e in events.json()}
    if scope == "all":
        assert {world.tenant_ids["acme"], world.tenant_ids["globex"], None} <= tenants
        assert verify.status_code == 200 and verify.json()["ok"]
        assert checkpoints.status_code == 200
        return
    # Scoped: acme's events and nothing else, not even the tenant-less ones.
    assert tenants == {world.tenant_ids["acme"]}
    assert all(world.ids["globex"]["recording"] not in json.dumps(e) for e in events.json())
    # Signed tree heads are for every auditor (a tenant verifies its events against them);
    # verifying the whole log in the database needs a principal over all tenants.
    assert checkpoints.status_code == 200, checkpoints.text
    _problem(verify, 403, "all-tenants-required")
    legacy = world.get(role, scope, "/v1/audit/checkpoints/legacy")
    _problem(legacy, 403, "all-tenants-required")


def test_a_read_outside_scope_is_audited_as_a_denial(world: World) -> None:
    """Audited one by one up to the burst, then counted into an aggregate event (the module's
    other tests have used the burst up by now): either way the attempt is on the chain."""
    target = world.ids["globex"]["hold"]
    _problem(world.get(R.privacy, "acme", f"/v1/legal-holds/{target}"), 404, "not-found")
    audit.flush_denials(world.ctx.db, world.ctx.denials, now=world.ctx.now(), force=True)
    seen = world.get(R.auditor, "all", "/v1/audit", limit=1000).json()
    about = [
        e for e in seen
        if e["action"] in ("permission.denied", "permission.denied.aggregate")
        and e["details"]["permission"] == "hold:manage"
        and e["details"]["reason"] == "tenant-scope"
    ]  # fmt: skip
    assert about, "the out-of-scope read was not audited"
    assert any(e["target"] == target for e in about if e["action"] == "permission.denied") or any(
        e["details"]["count"] >= 1 for e in about if e["action"].endswith("aggregate")
    )
