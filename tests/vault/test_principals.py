"""Tenants, principals and API keys on SQLite and PostgreSQL: explicit scope, authentication
failures that all look alike, no key material in the database, audited role changes."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import SQLModel

from tests.support.clock import FakeClock
from vault import audit
from vault.authz import Actor
from vault.context import Context
from vault.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    PermissionDeniedError,
    UnknownPrincipalError,
    UnknownTenantError,
)
from vault.identity import authentication, principals
from vault.identity.owners import owner_of
from vault.identity.tenants import create_tenant, resolve_tenant, tenant_names
from vault.models import ApiKey, Role
from vault.tags import AuditAction

OP = Actor.operator()


@pytest.fixture
def tenants(ctx: Context, clock: FakeClock) -> list[str]:
    with ctx.db.transaction() as s:
        for name in ("acme", "globex"):
            create_tenant(s, actor=OP, name=name, region="eu", now=clock())
    return ["acme", "globex"]


def add(ctx: Context, clock: FakeClock, name: str = "alice", **kwargs: object) -> str:
    args: dict[str, object] = {
        "role": Role.engineer,
        "owner": "alice@example.com",
        "tenants": ["acme"],
        "all_tenants": False,
    }
    args.update(kwargs)
    args["owner"] = owner_of(ctx.keys, args["owner"])  # the provider call, before the transaction
    with ctx.db.transaction() as s:
        _, key = principals.add_principal(s, actor=OP, name=name, now=clock(), **args)  # type: ignore[arg-type]
    return key


def auth(ctx: Context, key: str | None, clock: FakeClock) -> Actor:
    with ctx.db.transaction() as s:
        return authentication.authenticate(s, api_key=key, now=clock())


def events(ctx: Context, action: AuditAction) -> list[dict]:
    with ctx.db.transaction() as s:
        rows = audit.list_events(s, limit=1000)
    return [json.loads(e.canonical) for e in rows if e.action == action]


# --- tenants -------------------------------------------------------------------------------------


def test_tenants(ctx: Context, clock: FakeClock, tenants: list[str]) -> None:
    with ctx.db.transaction() as s:
        acme = resolve_tenant(s, "acme")
        assert resolve_tenant(s, str(acme.id)).name == "acme"
        assert tenant_names(s, [acme.id]) == {acme.id: "acme"}
        with pytest.raises(UnknownTenantError):
            resolve_tenant(s, "initech")
        with pytest.raises(ConflictError):
            create_tenant(s, actor=OP, name="acme", region=None, now=clock())
    for bad in ("", "-x", "a b", "x" * 65, "ü"):
        with pytest.raises(InvalidInputError), ctx.db.transaction() as s:
            create_tenant(s, actor=OP, name=bad, region=None, now=clock())
    [created] = [e for e in events(ctx, AuditAction.tenant_create) if e["target"] == str(acme.id)]
    assert created["tenant_id"] == str(acme.id) and created["actor"] == "system:cli"
    assert audit_ok(ctx)


def audit_ok(ctx: Context) -> bool:
    with ctx.db.transaction() as s:
        return audit.verify(s).ok


# --- principals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "all_tenants"), [([], False), (["acme"], True)], ids=["neither", "both"]
)
def test_scope_must_be_explicit(
    ctx: Context, clock: FakeClock, tenants: list[str], scope: list[str], all_tenants: bool
) -> None:
    with pytest.raises(InvalidInputError, match="scope must be given explicitly"):
        add(ctx, clock, tenants=scope, all_tenants=all_tenants)


def test_add_principal_validation(ctx: Context, clock: FakeClock, tenants: list[str]) -> None:
    with pytest.raises(UnknownTenantError):
        add(ctx, clock, tenants=["initech"])
    with pytest.raises(InvalidInputError):
        add(ctx, clock, role="superuser")
    for owner in ("", "a b@example.com", "al ice", "x"):
        with pytest.raises(InvalidInputError):
            add(ctx, clock, owner=owner)
    add(ctx, clock, owner="svc:ingest-pipeline", name="ingest-1", role="ingest")
    add(ctx, clock)
    with pytest.raises(ConflictError):
        add(ctx, clock)


def test_owner_is_normalised(ctx: Context, clock: FakeClock, tenants: list[str]) -> None:
    # Four-eyes compares owners: case variants of one email must be one owner.
    key = add(ctx, clock, owner="  Alice@Example.COM ")
    actor = auth(ctx, key, clock)
    assert actor.owner == owner_of(ctx.keys, "alice@example.com").ref
    with ctx.db.reading() as s:
        assert principals.get_principal(s, "alice").owner == "alice@example.com"


def test_scoped_admin_cannot_escalate(ctx: Context, clock: FakeClock, tenants: list[str]) -> None:
    key = add(ctx, clock, name="acme-admin", role=Role.admin)
    admin = auth(ctx, key, clock)
    bob = owner_of(ctx.keys, "bob@example.com")
    for kwargs in ({"tenants": [], "all_tenants": True}, {"tenants": ["globex"]}):
        with pytest.raises(PermissionDeniedError), ctx.db.transaction() as s:
            principals.add_principal(
                s,
                actor=admin,
                name="bob",
                role=Role.engineer,
                owner=bob,
                now=clock(),
                **{"tenants": [], "all_tenants": False, **kwargs},  # type: ignore[arg-type]
            )
    engineer = auth(ctx, add(ctx, clock, name="eve"), clock)
    with pytest.raises(PermissionDeniedError), ctx.db.transaction() as s:
        principals.revoke_principal(s, actor=engineer, name="acme-admin", now=clock())


def test_key_authenticates(ctx: Context, clock: FakeClock, tenants: list[str]) -> None:
    key = add(ctx, clock, tenants=["acme", "globex", "acme"])
    assert key.startswith("cvk_") and len(key) == 4 + 43
    actor = auth(ctx, key, clock)
    assert (actor.name, actor.role, actor.owner, actor.all_tenants) == (
        "alice",
        Role.engineer,
        owner_of(ctx.keys, "alice@example.com").ref,
        False,
    )
    with ctx.db.transaction() as s:
        ids = {resolve_tenant(s, t).id for t in tenants}
        public = principals.to_public(s, principals.get_principal(s, "alice"))
    assert actor.tenant_ids == ids
    assert public.tenants == ["acme", "globex"] and public.role == Role.engineer
    [created] = events(ctx, AuditAction.principal_create)
    assert created["target"] == str(actor.id)
    assert created["details"]["role"] == "engineer"
    assert sorted(created["details"]["tenant_ids"]) == sorted(str(i) for i in ids)
    assert created["details"]["all_tenants"] is False


def test_rng_is_used(ctx: Context, clock: FakeClock, tenants: list[str]) -> None:
    key = add(ctx, clock, rng=lambda n: b"\x01" * n)
    assert key == "cvk_" + "AQEB" * 10 + "AQE"
    with pytest.raises(ConflictError):  # the same rng again cannot give a fresh prefix
        add(ctx, clock, name="bob", rng=lambda n: b"\x01" * n)


def test_every_failure_looks_the_same(ctx: Context, clock: FakeClock, tenants: list[str]) -> None:
    good = add(ctx, clock)
    expiring = add(ctx, clock, name="temp", expires_at=clock() + timedelta(hours=1))
    to_revoke = add(ctx, clock, name="leaver")
    with ctx.db.transaction() as s:
        principal = principals.get_principal(s, "alice")
        second = principals.issue_key(s, principal=principal, now=clock())
        s.exec(sa.update(ApiKey).where(ApiKey.prefix == second[4:16]).values(revoked_at=clock()))
        principals.revoke_principal(s, actor=OP, name="leaver", now=clock())
    clock.advance(hours=2)
    wrong_tail = good[:-1] + ("A" if good[-1] != "A" else "B")
    unknown_prefix = "cvk_" + "Z" * 43
    cases = {
        "missing": None,
        "empty": "",
        "garbage": "hello",
        "bearer": f"Bearer {good}",
        "padded": good + "=",
        "newline": good + "\n",
        "wrong": wrong_tail,
        "unknown": unknown_prefix,
        "revoked key": second,
        "expired": expiring,
        "revoked principal": to_revoke,
    }
    messages = set()
    for key in cases.values():
        with pytest.raises(AuthenticationError) as info:
            auth(ctx, key, clock)
        messages.add((type(info.value), str(info.value), repr(info.value.extra)))
    assert len(messages) == 1, messages
    assert auth(ctx, good, clock).name == "alice"


def test_key_never_stored(ctx: Context, clock: FakeClock, tenants: list[str]) -> None:
    key = add(ctx, clock)
    with ctx.db.transaction() as s:
        principal = principals.get_principal(s, "alice")
        key2 = principals.issue_key(s, principal=principal, now=clock())
        rows = s.exec(sa.select(ApiKey)).scalars().all()
    assert {r.key_hash for r in rows} == {
        hashlib.sha256(k.encode()).hexdigest() for k in (key, key2)
    }
    assert all(r.key_hash not in (key, key2) for r in rows)
    # Scan every table's every value: only the 12-character prefix may appear, never the key.
    secrets = [key, key2, key[16:], key2[16:]]
    with ctx.db.engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            for row in conn.execute(sa.select(table)):
                text = " ".join(str(v) for v in row)
                assert not any(secret in text for secret in secrets), table.name


def test_set_role_and_revoke_audited(ctx: Context, clock: FakeClock, tenants: list[str]) -> None:
    key = add(ctx, clock)
    with ctx.db.transaction() as s:
        principals.set_role(s, actor=OP, name="alice", role="approver", now=clock())
        principals.set_role(s, actor=OP, name="alice", role="approver", now=clock())  # no-op
    assert auth(ctx, key, clock).role == Role.approver
    [changed] = events(ctx, AuditAction.principal_set_role)
    assert changed["details"]["old_role"] == "engineer"
    assert changed["details"]["new_role"] == "approver"
    with ctx.db.transaction() as s:
        principal = principals.revoke_principal(s, actor=OP, name="alice", now=clock())
        principals.revoke_principal(s, actor=OP, name="alice", now=clock())  # idempotent
        keys = s.exec(sa.select(ApiKey).where(ApiKey.principal_id == principal.id)).scalars()
        assert all(k.revoked_at is not None for k in keys)
    [revoked] = events(ctx, AuditAction.principal_revoke)
    assert revoked["target"] == str(principal.id) and revoked["actor"] == "system:cli"
    with pytest.raises(AuthenticationError):
        auth(ctx, key, clock)
    with pytest.raises(ConflictError), ctx.db.transaction() as s:
        principals.set_role(s, actor=OP, name="alice", role="admin", now=clock())
    for fn in (principals.revoke_principal, principals.set_role):
        kwargs = {"role": "admin"} if fn is principals.set_role else {}
        with pytest.raises(UnknownPrincipalError), ctx.db.transaction() as s:
            fn(s, actor=OP, name="nobody", now=clock(), **kwargs)  # type: ignore[operator]
    with pytest.raises(InvalidInputError), ctx.db.transaction() as s:
        principals.set_role(s, actor=OP, name="alice", role="root", now=clock())
    assert audit_ok(ctx)


def test_bootstrap_admin_is_idempotent(ctx: Context, clock: FakeClock) -> None:
    owner = owner_of(ctx.keys, principals.BOOTSTRAP_OWNER)
    with ctx.db.transaction() as s:
        key = principals.bootstrap_admin(s, owner=owner, now=clock())
    assert key is not None
    with ctx.db.transaction() as s:
        assert principals.bootstrap_admin(s, owner=owner, now=clock()) is None
    admin = auth(ctx, key, clock)
    assert admin.role == Role.admin and admin.all_tenants and admin.name == "bootstrap-admin"
    [created] = events(ctx, AuditAction.principal_create)
    assert created["actor"] == "system:init" and created["details"]["bootstrap"] is True
    # The bootstrap admin can now do admin work through its own key.
    with ctx.db.transaction() as s:
        create_tenant(s, actor=admin, name="acme", region=None, now=clock())


def test_denial_key_is_short_and_safe() -> None:
    key = "cvk_" + "A" * 43
    assert authentication.denial_key(None) == "missing"
    assert authentication.denial_key("") == "missing"
    assert authentication.denial_key("x" * 10_000) == "malformed"
    assert authentication.denial_key(key) == "cvk_" + "A" * 12


_key_like = st.from_regex(r"cvk_[A-Za-z0-9_-]{43}", fullmatch=True)


@settings(
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(candidate=st.one_of(st.none(), st.text(), _key_like, st.text().map(lambda t: "cvk_" + t)))
def test_authenticate_only_ever_raises_authentication_error(
    ctx: Context, clock: FakeClock, tenants: list[str], candidate: str | None
) -> None:
    alice = owner_of(ctx.keys, "alice@example.com")
    with ctx.db.transaction() as s:  # a real principal, so lookups have something to find
        if not s.exec(sa.select(ApiKey)).first():
            principals.add_principal(
                s,
                actor=OP,
                name="alice",
                role=Role.engineer,
                owner=alice,
                tenants=["acme"],
                all_tenants=False,
                now=clock(),
            )
    with pytest.raises(AuthenticationError):
        auth(ctx, candidate, clock)
