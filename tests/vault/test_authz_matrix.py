"""The authorization matrix: every role x action x grant state, against an explicit oracle.

Each case builds its own fresh principals, recording and grant state on one SQLite vault shared by
the module (hundreds of cases in a few seconds); a representative subset runs on PostgreSQL.
Time is driven by a FakeClock: the "expired" state advances it past the request TTL and the
grant's end.

Who is who in a case:
- the *actor* has the role under test, is scoped to tenant acme, and has an owner of its own;
- the *subject* holds the state's request/grant: the actor itself when its role can request
  (engineer, security) — so reviewing it is self-approval and reading it is legitimate — else a
  fresh engineer. Break-glass grants are held by a security subject (the actor, when security);
  "other tenant" states belong to a globex engineer, approved by a globex approver.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.clock import FakeClock
from tests.support.postgres import temp_database
from vault import audit, authz
from vault.access import breakglass, grants
from vault.access import requests as access
from vault.authz import Actor
from vault.config import Settings
from vault.context import Context, build_context
from vault.db import migrate
from vault.errors import ConflictError, NotFoundError, PermissionDeniedError
from vault.identity.tenants import create_tenant
from vault.models import (
    Grant,
    Principal,
    PrincipalTenant,
    Recording,
    RecordingPurpose,
    RecordingStatus,
    ReviewDecision,
    Role,
    Tenant,
)
from vault.recordings import metadata as recordings

R = Role
ROLES = list(Role)
ACTIONS = ["request", "approve", "deny", "revoke", "break_glass", "review_break_glass", "read"]
STATES = ["none", "pending", "approved", "expired", "revoked", "other_tenant", "purpose_ended",
          "break_glass"]  # fmt: skip
OK, FORBIDDEN, NOT_FOUND, CONFLICT = "ok", "forbidden", "not_found", "conflict"
PURPOSE = "troubleshooting"  # approvals = 1, approver_roles = [approver, security]
TTL = timedelta(hours=1)
GRANT_MINUTES = 30
REASON = "Investigating dropped audio reported by the customer"


# --- the oracle -----------------------------------------------------------------------------------


def holds_state(role: Role, state: str) -> bool:
    """Whether the actor itself is the subject of the state's request/grant."""
    if state == "other_tenant":
        return False
    if state == "break_glass":
        return role == R.security
    return role in (R.engineer, R.security)


def expected(role: Role, action: str, state: str) -> str:
    holder = holds_state(role, state)
    if action == "request":
        if role not in (R.engineer, R.security):
            return FORBIDDEN
        return {"other_tenant": NOT_FOUND, "purpose_ended": CONFLICT}.get(state, OK)
    if action in ("approve", "deny"):
        if role not in (R.approver, R.security):
            return FORBIDDEN
        if state in ("none", "break_glass", "other_tenant"):
            return NOT_FOUND  # no such request, or none visible in the actor's scope
        if holder:
            return FORBIDDEN  # self-approval, whatever the state
        if state == "pending":
            return OK
        if state == "purpose_ended":
            return CONFLICT if action == "approve" else OK  # denying stays possible
        return CONFLICT  # approved, expired, revoked: no longer pending
    if action == "revoke":
        if role not in (R.engineer, R.approver, R.security):
            return FORBIDDEN
        if state in ("none", "other_tenant"):
            return NOT_FOUND
        if role == R.engineer and not holder:
            return FORBIDDEN  # someone else's grant
        return CONFLICT if state in ("expired", "revoked") else OK
    if action == "break_glass":
        if role != R.security:
            return FORBIDDEN
        return {"other_tenant": NOT_FOUND, "purpose_ended": CONFLICT,
                "break_glass": CONFLICT}.get(state, OK)  # fmt: skip
    if action == "review_break_glass":
        if role != R.security:
            return FORBIDDEN
        if state in ("none", "pending", "other_tenant"):
            return NOT_FOUND
        if state != "break_glass":
            return CONFLICT  # a request grant: nothing to review
        return FORBIDDEN if holder else OK  # never by the holder's owner
    assert action == "read"
    if state == "other_tenant":
        return NOT_FOUND
    return OK if holder and state in ("approved", "break_glass") else FORBIDDEN


# Hand-written cells, so a mistake in the oracle's rules cannot silently agree with the service.
SPOT = {
    (R.admin, "read", "approved"): FORBIDDEN,  # nobody reads without a grant, admin included
    (R.engineer, "read", "approved"): OK,
    (R.engineer, "read", "expired"): FORBIDDEN,
    (R.engineer, "read", "revoked"): FORBIDDEN,
    (R.engineer, "read", "purpose_ended"): FORBIDDEN,
    (R.security, "read", "break_glass"): OK,
    (R.approver, "read", "approved"): FORBIDDEN,
    (R.approver, "approve", "pending"): OK,
    (R.security, "approve", "pending"): FORBIDDEN,  # its own request
    (R.approver, "approve", "expired"): CONFLICT,
    (R.approver, "approve", "other_tenant"): NOT_FOUND,
    (R.engineer, "approve", "pending"): FORBIDDEN,
    (R.engineer, "revoke", "approved"): OK,
    (R.engineer, "revoke", "break_glass"): FORBIDDEN,
    (R.approver, "revoke", "break_glass"): OK,
    (R.auditor, "revoke", "approved"): FORBIDDEN,
    (R.security, "break_glass", "break_glass"): CONFLICT,  # one unreviewed at a time
    (R.security, "break_glass", "none"): OK,
    (R.engineer, "break_glass", "none"): FORBIDDEN,
    (R.security, "review_break_glass", "break_glass"): FORBIDDEN,  # its own
    (R.engineer, "request", "other_tenant"): NOT_FOUND,
    (R.privacy, "request", "none"): FORBIDDEN,
    # A sub-processor's key redeems its own hand-offs and nothing else.
    (R.subprocessor, "read", "approved"): FORBIDDEN,
    (R.subprocessor, "request", "none"): FORBIDDEN,
    (R.subprocessor, "approve", "pending"): FORBIDDEN,
    (R.subprocessor, "revoke", "approved"): FORBIDDEN,
    (R.subprocessor, "break_glass", "none"): FORBIDDEN,
}


def test_oracle_spot_checks() -> None:
    for (role, action, state), outcome in SPOT.items():
        assert expected(role, action, state) == outcome, (role, action, state)


# --- the environment ------------------------------------------------------------------------------


@dataclass
class Env:
    ctx: Context
    clock: FakeClock
    acme: Tenant
    globex: Tenant
    counter: Iterator[int] = field(default_factory=itertools.count)

    def tenant(self, name: str) -> Tenant:
        return self.acme if name == "acme" else self.globex

    def setup(self, roles: list[tuple[Role, str]], tenant: str) -> tuple[list[Actor], uuid.UUID]:
        """Fresh principals (role, tenant) and one stored recording, in one transaction."""
        now, n = self.clock(), next(self.counter)
        actors: list[Actor] = []
        with self.ctx.db.transaction() as s:
            for i, (role, where) in enumerate(roles):
                t = self.tenant(where)
                p = Principal(name=f"p{n}-{i}", role=role, owner=f"p{n}-{i}@example.com",
                              owner_ref=f"ref-p{n}-{i}", created_at=now)  # fmt: skip
                s.add(p)
                s.flush()
                s.add(PrincipalTenant(principal_id=p.id, tenant_id=t.id))
                actors.append(Actor(id=p.id, name=p.name, role=role, owner=p.owner_ref,
                                    tenant_ids=frozenset({t.id})))  # fmt: skip
            t = self.tenant(tenant)
            rid = uuid.uuid4()
            s.add(Recording(id=rid, tenant_id=t.id, status=RecordingStatus.stored,
                            content_type="video/mp4", object_key=f"{t.id}/{rid}",
                            recorded_at=now, ingested_at=now, updated_at=now))  # fmt: skip
            s.flush()
            s.add(
                RecordingPurpose(
                    recording_id=rid,
                    purpose=PURPOSE,
                    expires_at=now + self.ctx.policy.purpose(PURPOSE).retention,
                )
            )
        return actors, rid

    def run(self, fn: Callable[..., Any], /, **kw: Any) -> Any:
        with self.ctx.db.session() as s:
            try:
                out = fn(s, now=self.clock(), **kw)
            except access.RequestExpiredError:
                s.commit()  # as the API does
                raise
            s.commit()
            return out

    def request(self, actor: Actor, rid: uuid.UUID) -> uuid.UUID:
        req = self.run(
            access.create_request, actor=actor, policy=self.ctx.policy, recording_ids=[rid],
            purpose=PURPOSE, reason=REASON, ticket="OPS-1", duration_minutes=GRANT_MINUTES,
            request_ttl=TTL,
        )  # fmt: skip
        return req.id

    def review(self, actor: Actor, request_id: uuid.UUID, decision: str) -> Any:
        return self.run(
            access.review, actor=actor, policy=self.ctx.policy, request_id=request_id,
            decision=ReviewDecision(decision), comment="reviewed",
        )  # fmt: skip

    def granted(self, subject: Actor, approver: Actor, rid: uuid.UUID) -> uuid.UUID:
        return self.review(approver, self.request(subject, rid), "approve").grant_id


def make_env(ctx: Context, clock: FakeClock) -> Env:
    with ctx.db.transaction() as s:
        op = Actor.operator()
        acme, globex = (
            create_tenant(s, actor=op, name=n, region=None, now=clock())
            for n in ("acme", "globex")
        )
    return Env(ctx=ctx, clock=clock, acme=acme, globex=globex)


def _context(tmp: Path, database_url: str, clock: FakeClock) -> Context:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        blob_store=f"file:{tmp / 'data' / 'blobs'}",
        key_provider=f"local:{tmp / 'keys'}",
    )
    ctx = build_context(settings, clock=clock, create_keys=True)
    migrate(ctx.db.engine)
    return ctx


@pytest.fixture(scope="module")
def sqlite_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    # make_ctx is function-scoped; the matrix shares one vault per module to stay fast.
    tmp, clock = tmp_path_factory.mktemp("matrix"), FakeClock()
    ctx = _context(tmp, f"sqlite:///{tmp / 'data' / 'callvault.db'}", clock)
    yield make_env(ctx, clock)
    ctx.close()


@pytest.fixture(scope="module")
def pg_env(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp, clock = tmp_path_factory.mktemp("matrix-pg"), FakeClock()
    with temp_database(pg_url) as url:
        ctx = _context(tmp, url, clock)
        yield make_env(ctx, clock)
        ctx.close()


# --- building a state and acting on it ------------------------------------------------------------


@dataclass
class State:
    rid: uuid.UUID
    request_id: uuid.UUID | None = None
    grant_id: uuid.UUID | None = None


def build(env: Env, role: Role, state: str) -> tuple[Actor, State]:
    tenant = "globex" if state == "other_tenant" else "acme"
    if holds_state(role, state):
        subject_role = None
    else:
        subject_role = R.security if state == "break_glass" else R.engineer
    wanted = [(role, "acme"), (R.approver, tenant)]
    if subject_role is not None:
        wanted.append((subject_role, tenant))
    people, rid = env.setup(wanted, tenant)
    actor, approver = people[0], people[1]
    subject = people[2] if subject_role is not None else actor
    st = State(rid=rid)
    if state == "pending":
        st.request_id = env.request(subject, rid)
    elif state == "approved":
        st.grant_id = env.granted(subject, approver, rid)
    elif state in ("expired", "other_tenant", "purpose_ended"):
        # A pending request (for approve/deny) and a live grant (for revoke and read).
        st.request_id = env.request(subject, rid)
        st.grant_id = env.granted(subject, approver, rid)
        if state == "expired":
            env.clock.advance(max(TTL, timedelta(minutes=GRANT_MINUTES)) + timedelta(seconds=1))
        elif state == "purpose_ended":
            env.run(recordings.end_purpose, actor=Actor.operator(), recording_id=rid,
                    purpose=PURPOSE, reason="ended early")  # fmt: skip
    elif state == "revoked":
        st.grant_id = env.granted(subject, approver, rid)
        env.run(access.revoke_grant, actor=subject, grant_id=st.grant_id, reason="done")
    elif state == "break_glass":
        st.grant_id = env.run(
            breakglass.break_glass, actor=subject, policy=env.ctx.policy, recording_ids=[rid],
            purpose=PURPOSE, incident_ref="INC-1", reason=REASON, duration_minutes=30,
        ).id  # fmt: skip
    if st.request_id is None and st.grant_id is not None:
        st.request_id = _request_of(env, st.grant_id)
    return actor, st


def _request_of(env: Env, grant_id: uuid.UUID) -> uuid.UUID | None:
    with env.ctx.db.session() as s:
        grant = s.get(Grant, grant_id)
        return None if grant is None else grant.request_id


def act(env: Env, actor: Actor, action: str, st: State) -> None:
    missing = uuid.uuid4()
    if action == "request":
        env.request(actor, st.rid)
    elif action in ("approve", "deny"):
        env.review(actor, st.request_id or missing, action)
    elif action == "revoke":
        if st.grant_id is None and st.request_id is not None:
            env.run(access.revoke_request, actor=actor, request_id=st.request_id)
        else:
            env.run(access.revoke_grant, actor=actor, grant_id=st.grant_id or missing)
    elif action == "break_glass":
        env.run(
            breakglass.break_glass, actor=actor, policy=env.ctx.policy, recording_ids=[st.rid],
            purpose=PURPOSE, incident_ref="INC-2", reason=REASON, duration_minutes=15,
        )  # fmt: skip
    elif action == "review_break_glass":
        env.run(breakglass.review_break_glass, actor=actor, grant_id=st.grant_id or missing,
                comment="after-review done")  # fmt: skip
    else:
        with env.ctx.db.session() as s:
            grants.authorize_read(s, actor=actor, recording_id=st.rid, grant_id=None,
                                  now=env.clock())  # fmt: skip


def outcome(env: Env, role: Role, action: str, state: str) -> str:
    actor, st = build(env, role, state)
    try:
        act(env, actor, action, st)
    except PermissionDeniedError:
        return FORBIDDEN
    except NotFoundError:
        return NOT_FOUND
    except ConflictError:
        return CONFLICT
    return OK


CASES = [
    pytest.param(role, action, state, id=f"{role}-{action}-{state}")
    for role, action, state in itertools.product(ROLES, ACTIONS, STATES)
]


@pytest.mark.parametrize(("role", "action", "state"), CASES)
def test_matrix(sqlite_env: Env, role: Role, action: str, state: str) -> None:
    assert outcome(sqlite_env, role, action, state) == expected(role, action, state)


PG_CASES = [
    (R.approver, "approve", "pending"),
    (R.security, "approve", "pending"),
    (R.approver, "approve", "expired"),
    (R.approver, "approve", "other_tenant"),
    (R.approver, "approve", "purpose_ended"),
    (R.engineer, "read", "approved"),
    (R.admin, "read", "approved"),
    (R.engineer, "read", "expired"),
    (R.engineer, "read", "revoked"),
    (R.engineer, "request", "other_tenant"),
    (R.engineer, "revoke", "break_glass"),
    (R.security, "break_glass", "break_glass"),
    (R.security, "review_break_glass", "break_glass"),
    (R.subprocessor, "read", "approved"),
    (R.subprocessor, "approve", "pending"),
]


@pytest.mark.parametrize(("role", "action", "state"), PG_CASES,
                         ids=[f"{r}-{a}-{s}" for r, a, s in PG_CASES])  # fmt: skip
def test_matrix_postgres(pg_env: Env, role: Role, action: str, state: str) -> None:
    assert outcome(pg_env, role, action, state) == expected(role, action, state)


def test_only_a_principal_bound_to_the_subprocessor_redeems_its_handoff() -> None:
    """handoff:redeem, for every role: the hand-off's holder is its sub-processor."""
    mine, other = uuid.uuid4(), uuid.uuid4()
    handoff = authz.objects([], uuid.uuid4(), holder_id=mine)
    for role in ROLES:
        for bound in (None, mine, other):
            actor = Actor(id=uuid.uuid4(), name="a", role=role, owner="o", all_tenants=True,
                          subprocessor_id=bound)  # fmt: skip
            denial = authz.decide(actor, authz.P.handoff_redeem, handoff)
            allowed = role is R.subprocessor and bound == mine
            assert (denial is None) == allowed, (role, bound)
            if role is R.subprocessor and not allowed:
                assert denial is not None and denial.not_found  # answered like a missing one
    assert authz.decide(Actor.operator(), authz.P.handoff_redeem, handoff) is not None
    # Issuing is the worker's alone: no role holds it.
    assert all(authz.P.handoff_issue not in perms for perms in authz.ROLE_PERMISSIONS.values())


def test_matrix_left_an_intact_audit_chain(sqlite_env: Env) -> None:
    with sqlite_env.ctx.db.session() as s:
        result = audit.verify(s)
    assert result.ok and result.checked > 0, result
