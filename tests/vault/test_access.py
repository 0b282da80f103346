"""Access requests, four-eyes reviews, grants, revocation and break-glass: the services and the
HTTP API, on both backends (SQLite + local directory, PostgreSQL + SeaweedFS)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlmodel import col, select

from tests.support.clock import FakeClock
from vault import audit
from vault.access import breakglass, grants, queries
from vault.access import requests as access
from vault.app import create_app
from vault.authz import Actor
from vault.context import Context
from vault.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    UnknownPurposeError,
    VaultError,
)
from vault.identity import authentication, principals
from vault.identity.owners import owner_of
from vault.identity.tenants import create_tenant
from vault.models import (
    AccessRequest,
    AuditEvent,
    Grant,
    Recording,
    RecordingPurpose,
    RecordingStatus,
    Review,
    ReviewDecision,
    Role,
    Tenant,
)
from vault.recordings import metadata as recordings
from vault.setup import initialise

TTL = timedelta(hours=24)
REASON = "Customer reports one-way audio on this call"
TICKET = "OPS-1234"


# --- a small world: tenants, principals, recordings -----------------------------------------------


def make_tenant(ctx: Context, name: str) -> Tenant:
    with ctx.db.transaction() as s:
        return create_tenant(
            s, actor=Actor.operator(), name=name, region=None, now=ctx.now()
        )


def make_principal(
    ctx: Context,
    name: str,
    role: str,
    *,
    owner: str | None = None,
    tenants: Sequence[str] = (),
    all_tenants: bool = False,
) -> tuple[Actor, str]:
    """A real principal (grants and reviews reference the table) and its API key."""
    owner_id = owner_of(ctx.keys, owner or f"{name}@example.com")
    with ctx.db.transaction() as s:
        p, key = principals.add_principal(
            s, actor=Actor.operator(), name=name, role=role, owner=owner_id,
            tenants=list(tenants), all_tenants=all_tenants, now=ctx.now(),
        )  # fmt: skip
        tenant_ids = authentication.principal_tenant_ids(s, p.id)
    actor = Actor(
        id=p.id, name=p.name, role=Role(role), owner=p.owner_ref, all_tenants=p.all_tenants,
        tenant_ids=tenant_ids,
    )  # fmt: skip
    return actor, key


def make_recording(
    ctx: Context,
    tenant: Tenant,
    purposes: Sequence[str] = ("troubleshooting",),
    status: RecordingStatus = RecordingStatus.stored,
) -> uuid.UUID:
    """A recording row straight in the DB: access rules need no media."""
    now = ctx.now()
    rid = uuid.uuid4()
    with ctx.db.transaction() as s:
        s.add(
            Recording(
                id=rid, tenant_id=tenant.id, status=status, content_type="video/mp4",
                object_key=f"{tenant.id}/{rid}", recorded_at=now, ingested_at=now, updated_at=now,
            )
        )  # fmt: skip
        s.flush()
        for p in purposes:
            s.add(
                RecordingPurpose(
                    recording_id=rid, purpose=p, expires_at=now + ctx.policy.purpose(p).retention
                )
            )
    return rid


def end_purpose(ctx: Context, rid: uuid.UUID, purpose: str) -> None:
    with ctx.db.transaction() as s:
        recordings.end_purpose(
            s, actor=Actor.operator(), recording_id=rid, purpose=purpose, reason=None,
            now=ctx.now(),
        )  # fmt: skip


def events(ctx: Context, action: str) -> list[AuditEvent]:
    with ctx.db.session() as s:
        stmt = select(AuditEvent).where(AuditEvent.action == action)
        return list(s.exec(stmt.order_by(col(AuditEvent.seq))).all())


@dataclass
class World:
    ctx: Context
    clock: FakeClock
    acme: Tenant
    globex: Tenant
    who: dict[str, Actor] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)

    def run(self, fn: Callable[..., Any], /, **kw: Any) -> Any:
        """One service call in its own transaction, at the clock's time. A request found expired
        is committed before the error propagates, as the API does."""
        with self.ctx.db.session() as s:
            try:
                out = fn(s, now=self.clock(), **kw)
            except access.RequestExpiredError:
                s.commit()
                raise
            s.commit()
            return out

    def request(
        self, who: str, ids: Sequence[uuid.UUID], purpose: str = "troubleshooting", **kw: Any
    ) -> AccessRequest:
        args: dict[str, Any] = dict(
            reason=REASON, ticket=TICKET, duration_minutes=60, request_ttl=TTL
        )
        args.update(kw)
        return self.run(
            access.create_request, actor=self.who[who], policy=self.ctx.policy,
            recording_ids=list(ids), purpose=purpose, **args,
        )  # fmt: skip

    def review(
        self, who: str, request_id: uuid.UUID, decision: str = "approve", comment: str = "ok"
    ) -> AccessRequest:
        return self.run(
            access.review, actor=self.who[who], policy=self.ctx.policy, request_id=request_id,
            decision=ReviewDecision(decision), comment=comment,
        )  # fmt: skip

    def break_glass(
        self, who: str, ids: Sequence[uuid.UUID], purpose: str = "troubleshooting", **kw: Any
    ) -> Grant:
        args: dict[str, Any] = dict(incident_ref="INC-7", reason=REASON, duration_minutes=30)
        args.update(kw)
        return self.run(
            breakglass.break_glass, actor=self.who[who], policy=self.ctx.policy,
            recording_ids=list(ids), purpose=purpose, **args,
        )  # fmt: skip

    def read(self, who: str, rid: uuid.UUID, grant_id: uuid.UUID | None = None) -> Grant:
        with self.ctx.db.session() as s:
            grant, _ = grants.authorize_read(
                s, actor=self.who[who], recording_id=rid, grant_id=grant_id, now=self.clock()
            )
            return grant

    def public(self, request_id: uuid.UUID) -> Any:
        with self.ctx.db.session() as s:
            req = s.get(AccessRequest, request_id)
            assert req is not None
            return queries.to_public_request(s, req, self.clock())

    def grant(self, grant_id: uuid.UUID) -> Grant:
        with self.ctx.db.session() as s:
            g = s.get(Grant, grant_id)
            assert g is not None
            return g


PRINCIPALS: list[tuple[str, str, str | None, list[str] | None]] = [
    # name, role, owner (None: name@example.com), tenants (None: all)
    ("eng", "engineer", None, ["acme"]),
    ("eng2", "engineer", None, ["acme"]),
    ("eng-all", "engineer", None, None),
    ("appr", "approver", None, ["acme"]),
    ("appr-twin", "approver", "appr@example.com", ["acme"]),  # the same person as appr
    ("eng-as-appr", "approver", "eng@example.com", ["acme"]),  # the requester's other key
    ("appr-globex", "approver", None, ["globex"]),
    ("appr-all", "approver", None, None),
    ("sec1", "security", None, None),
    ("sec1b", "security", "sec1@example.com", None),  # sec1's second key
    ("sec2", "security", None, None),
    ("sec3", "security", None, ["acme"]),
    ("privacy", "privacy", None, None),
    ("admin2", "admin", None, None),
]


def build_world(ctx: Context, clock: FakeClock) -> World:
    w = World(
        ctx=ctx, clock=clock, acme=make_tenant(ctx, "acme"), globex=make_tenant(ctx, "globex")
    )
    for name, role, owner, tenants in PRINCIPALS:
        w.who[name], w.keys[name] = make_principal(
            ctx, name, role, owner=owner, tenants=tenants or (), all_tenants=tenants is None
        )
    return w


@pytest.fixture
def w(ctx: Context, clock: FakeClock) -> World:
    return build_world(ctx, clock)


def raises(exc: type[VaultError], fn: Callable[..., Any], *a: Any, **kw: Any) -> VaultError:
    with pytest.raises(exc) as info:
        fn(*a, **kw)
    return info.value


# --- requests and approval ------------------------------------------------------------------------


def test_request_approve_read(w: World) -> None:
    r1, r2 = make_recording(w.ctx, w.acme), make_recording(w.ctx, w.acme)
    req = w.request("eng", [r1, r2])
    pub = w.public(req.id)
    assert pub.status == "pending" and pub.approvals == 0 and pub.approvals_required == 1
    assert sorted(pub.recording_ids) == sorted([r1, r2])
    assert pub.expires_at == w.clock() + TTL

    done = w.review("appr", req.id, comment="looks legitimate")
    assert done.status == "approved" and done.grant_id is not None
    grant = w.grant(done.grant_id)
    # The grant names its owner by pseudonym only (the e-mail stays on the principal row).
    eng = owner_of(w.ctx.keys, "eng@example.com").ref
    assert grant.principal_id == w.who["eng"].id and grant.owner == eng
    assert grant.not_before == w.clock() and grant.expires_at == w.clock() + timedelta(hours=1)
    assert w.public(req.id).approvals == 1
    for rid in (r1, r2):
        assert w.read("eng", rid).id == grant.id
    for other in ("eng2", "appr", "sec1"):
        raises(PermissionDeniedError, w.read, other, r1)

    req_ev, approve_ev, create_ev = (
        events(w.ctx, a)[-1] for a in ("access.request", "access.approve", "grant.create")
    )
    assert req_ev.seq < approve_ev.seq < create_ev.seq
    assert req_ev.target == str(req.id) and req_ev.tenant_id == w.acme.id
    details = audit.to_public(req_ev).details
    assert details["ticket"] == TICKET and details["reason"] == REASON
    assert sorted(details["recording_ids"]) == sorted(map(str, [r1, r2]))
    assert create_ev.grant_id == grant.id and approve_ev.actor == str(w.who["appr"].id)
    with w.ctx.db.session() as s:
        assert audit.verify(s).ok


@pytest.mark.parametrize(
    ("kw", "error", "text"),
    [
        ({"purpose": "marketing"}, UnknownPurposeError, "unknown purpose"),
        ({"duration_minutes": 0}, InvalidInputError, "duration_minutes"),
        ({"duration_minutes": -5}, InvalidInputError, "duration_minutes"),
        ({"duration_minutes": 241}, InvalidInputError, "<= 240"),
        ({"duration_minutes": float("nan")}, InvalidInputError, "duration_minutes"),
        ({"duration_minutes": True}, InvalidInputError, "number"),
        ({"reason": ""}, InvalidInputError, "reason"),
        ({"reason": "debug it"}, InvalidInputError, "reason"),
        ({"reason": "a" * 40}, InvalidInputError, "reason"),
        ({"reason": "ab " * 20}, InvalidInputError, "reason"),
        ({"reason": "bad\x00reason text here"}, InvalidInputError, "control"),
        ({"ticket": ""}, InvalidInputError, "ticket"),
        ({"ticket": "n/a"}, InvalidInputError, "ticket"),
        ({"ticket": "1234"}, InvalidInputError, "ticket"),
        ({"ticket": "http://tracker.example/1"}, InvalidInputError, "ticket"),
        ({"ids": "empty"}, InvalidInputError, "1 to 100"),
        ({"ids": "many"}, InvalidInputError, "1 to 100"),
        ({"ids": "dup"}, InvalidInputError, "repeat"),
        ({"who": "appr"}, PermissionDeniedError, "lacks"),
        ({"who": "privacy"}, PermissionDeniedError, "lacks"),
    ],
)
def test_request_validation(w: World, kw: dict[str, Any], error: type, text: str) -> None:
    rid = make_recording(w.ctx, w.acme)
    kw = dict(kw)  # parametrize shares the dict between backends
    spec = kw.pop("ids", None)
    ids = {"empty": [], "many": [uuid.uuid4() for _ in range(101)], "dup": [rid, rid]}.get(
        spec, [rid]
    )
    who = kw.pop("who", "eng")
    exc = raises(error, w.request, who, ids, **kw)
    assert text in str(exc)
    assert w.run(queries.list_requests, actor=w.who["appr-all"], status=None) == []


def test_good_tickets_and_reasons(w: World) -> None:
    rid = make_recording(w.ctx, w.acme)
    for ticket in ("INC-1", "ops_team-99", "https://tracker.example.com/browse/OPS-1?x=1"):
        assert w.request("eng", [rid], ticket=ticket, duration_minutes=240).status == "pending"


def test_request_other_tenant_is_like_missing(w: World) -> None:
    theirs, missing = make_recording(w.ctx, w.globex), uuid.uuid4()
    mine = make_recording(w.ctx, w.acme)
    a = raises(NotFoundError, w.request, "eng", [mine, theirs])
    b = raises(NotFoundError, w.request, "eng", [mine, missing])
    assert str(a).replace(str(theirs), "ID") == str(b).replace(str(missing), "ID")


def test_request_needs_stored_recording_and_active_purpose(w: World) -> None:
    rid = make_recording(w.ctx, w.acme, purposes=("troubleshooting", "fraud"))
    assert "not collected" in str(raises(InvalidInputError, w.request, "eng", [rid], "security"))
    end_purpose(w.ctx, rid, "fraud")
    assert "no longer active" in str(raises(ConflictError, w.request, "eng", [rid], "fraud"))
    for status in (RecordingStatus.failed, RecordingStatus.disposed, RecordingStatus.pending):
        bad = make_recording(w.ctx, w.acme, status=status)
        assert status.value in str(raises(ConflictError, w.request, "eng", [bad]))


# --- four-eyes attacks ----------------------------------------------------------------------------


def test_self_approval_by_the_same_principal(w: World) -> None:
    rid = make_recording(w.ctx, w.acme)
    req = w.request("sec1", [rid])  # security may request too
    assert "self-approval" in str(raises(PermissionDeniedError, w.review, "sec1", req.id))
    assert "self-approval" in str(raises(PermissionDeniedError, w.review, "sec1b", req.id))
    assert w.public(req.id).status == "pending" and w.public(req.id).approvals == 0


def test_self_approval_by_another_principal_of_the_same_owner(w: World) -> None:
    rid = make_recording(w.ctx, w.acme)
    req = w.request("eng", [rid])
    raises(PermissionDeniedError, w.review, "eng-as-appr", req.id)
    raises(PermissionDeniedError, w.review, "eng-as-appr", req.id, "deny")
    assert w.public(req.id).status == "pending"


def test_two_approvals_need_two_distinct_owners(w: World) -> None:
    rid = make_recording(w.ctx, w.acme, purposes=("security",))
    req = w.request("eng", [rid], "security")
    assert w.public(req.id).approvals_required == 2
    assert w.review("sec1", req.id).status == "pending"
    # sec1b is sec1's second key: the same owner must not count twice.
    assert "owner" in str(raises(ConflictError, w.review, "sec1b", req.id))
    assert w.public(req.id).approvals == 1 and w.public(req.id).status == "pending"
    raises(PermissionDeniedError, w.read, "eng", rid)
    done = w.review("sec2", req.id)
    assert done.status == "approved" and w.public(req.id).approvals == 2
    assert w.read("eng", rid).id == done.grant_id
    raises(ConflictError, w.review, "sec3", req.id)  # decided already


def test_reviewer_without_the_purposes_approver_role(w: World) -> None:
    rid = make_recording(w.ctx, w.acme, purposes=("fraud", "transcription"))
    fraud = w.request("eng", [rid], "fraud")  # approver_roles = ["security"]
    assert "approver roles" in str(raises(PermissionDeniedError, w.review, "appr", fraud.id))
    transcription = w.request("eng", [rid], "transcription")  # approver_roles = ["approver"]
    raises(PermissionDeniedError, w.review, "sec2", transcription.id)
    raises(PermissionDeniedError, w.run, access.review, actor=w.who["eng2"],
           policy=w.ctx.policy, request_id=fraud.id, decision="approve", comment="")  # fmt: skip
    assert w.review("sec2", fraud.id).status == "approved"
    assert w.review("appr", transcription.id).status == "approved"


def test_reviewer_without_scope_over_one_recordings_tenant(w: World) -> None:
    ra, rg = make_recording(w.ctx, w.acme), make_recording(w.ctx, w.globex)
    req = w.request("eng-all", [ra, rg])
    assert "scope" in str(raises(PermissionDeniedError, w.review, "appr", req.id))
    raises(PermissionDeniedError, w.review, "sec3", req.id)
    raises(PermissionDeniedError, w.review, "appr-globex", req.id, "deny")
    only_acme = w.request("eng", [ra])
    raises(NotFoundError, w.review, "appr-globex", only_acme.id)  # invisible to them
    assert w.review("appr-all", req.id).status == "approved"


def test_approving_an_expired_request(w: World) -> None:
    req = w.request("eng", [make_recording(w.ctx, w.acme)])
    w.clock.advance(TTL + timedelta(seconds=1))
    assert w.public(req.id).status == "expired"  # before any sweep
    err = raises(access.RequestExpiredError, w.review, "appr", req.id)
    assert isinstance(err, ConflictError)
    with w.ctx.db.session() as s:
        assert s.get(AccessRequest, req.id).status == "expired"  # type: ignore[union-attr]
    assert [e.target for e in events(w.ctx, "access.expire")] == [str(req.id)]
    raises(ConflictError, w.review, "appr-all", req.id)
    assert events(w.ctx, "grant.create") == []


def test_deny_then_no_approval(w: World) -> None:
    req = w.request("eng", [make_recording(w.ctx, w.acme)])
    done = w.review("appr", req.id, "deny", comment="no ticket context")
    assert done.status == "denied" and done.decided_at == w.clock() and done.grant_id is None
    raises(ConflictError, w.review, "appr-all", req.id)
    assert len(events(w.ctx, "access.deny")) == 1


def test_purpose_ended_before_approval(w: World) -> None:
    rid = make_recording(w.ctx, w.acme)
    req = w.request("eng", [rid])
    end_purpose(w.ctx, rid, "troubleshooting")
    raises(ConflictError, w.review, "appr", req.id)
    assert w.public(req.id).status == "pending" and events(w.ctx, "access.approve") == []
    assert w.review("appr", req.id, "deny").status == "denied"  # denying stays possible


def test_grant_dies_with_the_purpose(w: World) -> None:
    rid = make_recording(w.ctx, w.acme)
    grant_id = w.review("appr", w.request("eng", [rid]).id).grant_id
    assert w.read("eng", rid, grant_id).id == grant_id
    end_purpose(w.ctx, rid, "troubleshooting")
    raises(PermissionDeniedError, w.read, "eng", rid, grant_id)


# --- revocation and expiry ------------------------------------------------------------------------


def test_revoked_and_expired_grants_refuse_reads(w: World) -> None:
    rid = make_recording(w.ctx, w.acme)
    first = w.review("appr", w.request("eng", [rid]).id)
    assert w.read("eng", rid).id == first.grant_id
    w.run(access.revoke_grant, actor=w.who["eng"], grant_id=first.grant_id, reason="done")
    raises(PermissionDeniedError, w.read, "eng", rid)
    raises(PermissionDeniedError, w.read, "eng", rid, first.grant_id)
    with w.ctx.db.session() as s:
        assert not grants.still_valid(s, grant_id=first.grant_id, recording_id=rid, now=w.clock())
    assert w.public(first.id).status == "revoked"
    raises(ConflictError, w.run, access.revoke_grant, actor=w.who["eng"], grant_id=first.grant_id)

    second = w.review("appr", w.request("eng", [rid], duration_minutes=15).id)
    assert w.read("eng", rid).id == second.grant_id
    w.clock.advance(minutes=15)
    raises(PermissionDeniedError, w.read, "eng", rid)
    raises(ConflictError, w.run, access.revoke_grant, actor=w.who["appr"], grant_id=second.grant_id)


def test_who_may_revoke(w: World) -> None:
    rid = make_recording(w.ctx, w.acme)

    def fresh() -> uuid.UUID:
        return w.review("appr", w.request("eng", [rid]).id).grant_id  # type: ignore[return-value]

    def revoke(who: str, gid: uuid.UUID) -> Grant:
        return w.run(access.revoke_grant, actor=w.who[who], grant_id=gid)

    gid = fresh()
    raises(PermissionDeniedError, revoke, "eng2", gid)  # another engineer, same tenant
    raises(PermissionDeniedError, revoke, "privacy", gid)  # no grant:revoke at all
    raises(NotFoundError, revoke, "appr-globex", gid)  # no scope: cannot even see it
    raises(NotFoundError, revoke, "eng", uuid.uuid4())
    for who in ("eng", "appr", "sec3"):
        gid = fresh()
        assert revoke(who, gid).revoked_by == w.who[who].id
    ev = events(w.ctx, "grant.revoke")[-1]
    assert ev.grant_id == gid and ev.actor == str(w.who["sec3"].id)


def test_revoke_request(w: World) -> None:
    rid = make_recording(w.ctx, w.acme)

    def revoke(who: str, req_id: uuid.UUID) -> AccessRequest:
        return w.run(access.revoke_request, actor=w.who[who], request_id=req_id, reason="oops")

    pending = w.request("eng", [rid])
    assert revoke("eng", pending.id).status == "revoked"  # withdrawn
    raises(ConflictError, w.review, "appr", pending.id)
    raises(ConflictError, revoke, "eng", pending.id)

    approved = w.review("appr", w.request("eng", [rid]).id)
    raises(PermissionDeniedError, revoke, "eng2", approved.id)
    assert revoke("appr-all", approved.id).status == "revoked"
    assert w.grant(approved.grant_id).revoked_at == w.clock()  # type: ignore[arg-type]
    raises(PermissionDeniedError, w.read, "eng", rid)

    denied = w.review("appr", w.request("eng", [rid]).id, "deny")
    raises(ConflictError, revoke, "eng", denied.id)


def test_expire_job(w: World) -> None:
    rid = make_recording(w.ctx, w.acme)
    lapsing = w.request("eng", [rid])
    granted = w.review("appr", w.request("eng", [rid], duration_minutes=30).id)
    revoked = w.review("appr", w.request("eng", [rid], duration_minutes=30).id)
    w.run(access.revoke_grant, actor=w.who["eng"], grant_id=revoked.grant_id)
    assert w.run(access.expire) == 0
    w.clock.advance(minutes=30)
    assert w.run(access.expire) == 1  # the live grant; a revoked one needs no expiry mark
    assert w.grant(granted.grant_id).expired_at == w.clock()  # type: ignore[arg-type]
    w.clock.advance(TTL)
    assert w.run(access.expire) == 1
    assert w.public(lapsing.id).status == "expired" and w.run(access.expire) == 0
    assert [e.target for e in events(w.ctx, "access.expire")] == [str(lapsing.id)]
    assert [e.grant_id for e in events(w.ctx, "grant.expire")] == [granted.grant_id]
    assert events(w.ctx, "access.expire")[0].actor == access.EXPIRE_ACTOR


# --- listings -------------------------------------------------------------------------------------


def test_list_requests_visibility(w: World) -> None:
    ra, rg = make_recording(w.ctx, w.acme), make_recording(w.ctx, w.globex)
    mine = w.request("eng", [ra])
    both = w.request("eng-all", [ra, rg])
    theirs = w.request("eng-all", [rg])

    def ids(who: str, status: str | None = None) -> set[uuid.UUID]:
        return {r.id for r in w.run(queries.list_requests, actor=w.who[who], status=status)}

    assert ids("eng") == {mine.id}
    assert ids("eng2") == set()
    assert ids("appr") == {mine.id}  # not the one spanning globex
    assert ids("appr-globex") == {theirs.id}
    assert ids("appr-all") == ids("sec1") == {mine.id, both.id, theirs.id}
    raises(PermissionDeniedError, ids, "privacy")
    raises(InvalidInputError, ids, "eng", "bogus")
    w.review("appr", mine.id)
    assert ids("eng", "approved") == {mine.id} and ids("eng", "pending") == set()
    w.clock.advance(TTL)
    assert ids("appr-all", "expired") == {both.id, theirs.id}
    assert ids("appr-all", "pending") == set()


def test_list_grants(w: World) -> None:
    ra, rg = make_recording(w.ctx, w.acme), make_recording(w.ctx, w.globex)
    g_eng = w.review("appr", w.request("eng", [ra], duration_minutes=30).id).grant_id
    g_glob = w.review("appr-globex", w.request("eng-all", [rg]).id).grant_id

    def ids(who: str, **kw: Any) -> set[uuid.UUID]:
        kw = {"active": None, "needs_review": None, **kw}
        return {g.id for g in w.run(queries.list_grants, actor=w.who[who], **kw)}

    assert ids("eng") == {g_eng} and ids("eng2") == set()
    assert ids("sec2") == {g_eng, g_glob} and ids("sec3") == {g_eng}
    w.clock.advance(minutes=30)
    assert ids("sec2", active=True) == {g_glob} and ids("sec2", active=False) == {g_eng}
    assert ids("sec2", needs_review=True) == set()


# --- break-glass ----------------------------------------------------------------------------------


def test_break_glass_flow(w: World) -> None:
    rid = make_recording(w.ctx, w.acme)
    grant = w.break_glass("sec1", [rid], incident_ref="https://pager.example.com/i/42")
    assert grant.kind == "break_glass" and grant.needs_review and grant.reviewed_at is None
    assert grant.expires_at == w.clock() + timedelta(minutes=30)
    assert w.read("sec1", rid).id == grant.id
    # One unreviewed break-glass grant at a time, per person.
    assert "unreviewed" in str(raises(ConflictError, w.break_glass, "sec1", [rid]))
    raises(ConflictError, w.break_glass, "sec1b", [rid])
    assert w.break_glass("sec2", [rid]).id != grant.id  # someone else may

    def review(who: str, gid: uuid.UUID, comment: str = "justified: incident INC-7") -> Grant:
        return w.run(breakglass.review_break_glass, actor=w.who[who], grant_id=gid, comment=comment)

    raises(PermissionDeniedError, review, "sec1", grant.id)
    raises(PermissionDeniedError, review, "sec1b", grant.id)  # same owner, other key
    raises(PermissionDeniedError, review, "appr-all", grant.id)  # not security
    raises(InvalidInputError, review, "sec2", grant.id, "  ")
    done = review("sec2", grant.id)
    assert done.reviewed_at == w.clock() and done.reviewed_by == w.who["sec2"].id
    raises(ConflictError, review, "sec3", grant.id)
    assert w.break_glass("sec1", [rid]).kind == "break_glass"  # reviewed: a new one is allowed
    ev = events(w.ctx, "grant.break_glass")[0]
    assert ev.grant_id == grant.id and audit.to_public(ev).details["incident_ref"].endswith("/42")
    assert [e.grant_id for e in events(w.ctx, "grant.break_glass.review")] == [grant.id]


def test_break_glass_limits(w: World) -> None:
    ra, rg = make_recording(w.ctx, w.acme), make_recording(w.ctx, w.globex)
    assert "60" in str(raises(InvalidInputError, w.break_glass, "sec1", [ra], duration_minutes=61))
    raises(InvalidInputError, w.break_glass, "sec1", [ra], duration_minutes=0)
    raises(InvalidInputError, w.break_glass, "sec1", [ra], incident_ref="")
    raises(InvalidInputError, w.break_glass, "sec1", [ra], reason="because")
    raises(PermissionDeniedError, w.break_glass, "eng", [ra])
    raises(PermissionDeniedError, w.break_glass, "admin2", [ra])
    raises(NotFoundError, w.break_glass, "sec3", [ra, rg])  # no scope over globex
    end_purpose(w.ctx, ra, "troubleshooting")
    raises(ConflictError, w.break_glass, "sec1", [ra])
    raises(UnknownPurposeError, w.break_glass, "sec1", [ra], "marketing")
    with w.ctx.db.session() as s:
        assert s.exec(select(Grant)).all() == []


def test_break_glass_overdue_review(w: World) -> None:
    rid = make_recording(w.ctx, w.acme)
    grant = w.break_glass("sec1", [rid], duration_minutes=60)

    def listed(who: str) -> list[Any]:
        return w.run(queries.list_grants, actor=w.who[who], active=None, needs_review=True)

    [pub] = listed("sec2")
    assert pub.id == grant.id and pub.needs_review and not pub.review_overdue
    assert listed("eng") == []
    w.clock.advance(hours=24)
    assert w.run(access.expire) == 1  # the grant lapsed; the review is not overdue yet
    w.clock.advance(seconds=1)
    assert listed("sec1")[0].review_overdue and not listed("sec1")[0].active
    assert w.run(access.expire) == 1
    assert w.run(access.expire) == 0  # flagged once
    assert [e.grant_id for e in events(w.ctx, "grant.break_glass.overdue")] == [grant.id]
    # Still unreviewed, so still blocking: the review is owed even after expiry.
    raises(ConflictError, w.break_glass, "sec1", [rid])
    w.run(breakglass.review_break_glass, actor=w.who["sec2"], grant_id=grant.id, comment="late ok")
    assert listed("sec2") == []
    assert audit.to_public(events(w.ctx, "grant.break_glass.review")[0]).details["overdue"] is True


def test_break_glass_grant_can_be_revoked(w: World) -> None:
    rid = make_recording(w.ctx, w.acme)
    grant = w.break_glass("sec1", [rid])
    raises(PermissionDeniedError, w.run, access.revoke_grant, actor=w.who["eng"], grant_id=grant.id)
    w.run(access.revoke_grant, actor=w.who["appr"], grant_id=grant.id, reason="contained")
    raises(PermissionDeniedError, w.read, "sec1", rid)
    # Revocation does not close the after-review.
    raises(ConflictError, w.break_glass, "sec1", [rid])


# --- concurrency ----------------------------------------------------------------------------------


def _race(calls: list[Callable[[], Any]]) -> list[Any]:
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except VaultError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_concurrent_reviews_issue_one_grant(w: World) -> None:
    rid = make_recording(w.ctx, w.acme, purposes=("troubleshooting", "security"))
    one = w.request("eng", [rid])
    results = _race([lambda: w.review("appr", one.id), lambda: w.review("appr-all", one.id)])
    assert sorted(type(r).__name__ for r in results) == ["AccessRequest", "ConflictError"]
    two = w.request("eng", [rid], "security")
    results = _race([lambda: w.review("sec1", two.id), lambda: w.review("sec2", two.id)])
    assert all(isinstance(r, AccessRequest) for r in results)
    assert w.public(two.id).status == "approved" and w.public(two.id).approvals == 2
    with w.ctx.db.session() as s:
        assert len(s.exec(select(Grant).where(Grant.request_id == two.id)).all()) == 1


def test_concurrent_break_glass_one_wins(w: World) -> None:
    rid = make_recording(w.ctx, w.acme)
    results = _race([lambda: w.break_glass("sec1", [rid]), lambda: w.break_glass("sec1b", [rid])])
    assert sorted(type(r).__name__ for r in results) == ["ConflictError", "Grant"]


# --- HTTP API -------------------------------------------------------------------------------------


@dataclass
class Api:
    client: TestClient
    world: World

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.world.keys[who]}"}

    def post(self, path: str, who: str, body: Any = None) -> Any:
        return self.client.post(path, json=body, headers=self.h(who))

    def get(self, path: str, who: str, **params: Any) -> Any:
        return self.client.get(path, params=params, headers=self.h(who))


@pytest.fixture
def api(ctx: Context, clock: FakeClock) -> Iterator[Api]:
    initialise(ctx, now=ctx.now())
    world = build_world(ctx, clock)
    with TestClient(create_app(ctx.settings, ctx=ctx)) as client:
        yield Api(client=client, world=world)


def _body(rids: Sequence[uuid.UUID], **kw: Any) -> dict[str, Any]:
    body = {"recording_ids": [str(r) for r in rids], "purpose": "troubleshooting",
            "reason": REASON, "ticket": TICKET, "duration_minutes": 60}  # fmt: skip
    return {**body, **kw}


def _problem(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == f"https://callvault.dev/problems/{code}"


def test_api_request_approve_revoke(api: Api) -> None:
    rid = make_recording(api.world.ctx, api.world.acme)
    r = api.post("/v1/access-requests", "eng", _body([rid]))
    assert r.status_code == 201, r.text
    req = r.json()
    assert req["status"] == "pending" and req["recording_ids"] == [str(rid)]
    assert [x["id"] for x in api.get("/v1/access-requests", "eng").json()] == [req["id"]]
    listed = api.get("/v1/access-requests", "appr", status="pending").json()
    assert [x["id"] for x in listed] == [req["id"]]

    _problem(api.post(f"/v1/access-requests/{req['id']}/approve", "eng"), 403, "forbidden")
    _problem(api.post(f"/v1/access-requests/{req['id']}/approve", "eng-as-appr"), 403, "forbidden")
    r = api.post(f"/v1/access-requests/{req['id']}/approve", "appr", {"comment": "fine"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved" and r.json()["approvals"] == 1
    gid = r.json()["grant_id"]
    [grant] = api.get("/v1/grants", "eng", active="true").json()
    assert grant["id"] == gid and grant["active"] and grant["kind"] == "request"
    assert api.get("/v1/grants", "appr").json() == []  # not theirs, not security

    _problem(api.post(f"/v1/grants/{gid}/revoke", "eng2"), 403, "forbidden")
    r = api.post(f"/v1/grants/{gid}/revoke", "eng", {"reason": "finished"})
    assert r.status_code == 200 and r.json()["revoked_at"] and not r.json()["active"]
    _problem(api.post(f"/v1/grants/{gid}/revoke", "eng"), 409, "conflict")
    assert api.get("/v1/grants", "eng", active="true").json() == []
    assert api.get("/v1/access-requests", "eng").json()[0]["status"] == "revoked"

    other = api.post("/v1/access-requests", "eng", _body([rid])).json()
    r = api.post(f"/v1/access-requests/{other['id']}/revoke", "eng")
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    denied = api.post("/v1/access-requests", "eng", _body([rid])).json()
    r = api.post(f"/v1/access-requests/{denied['id']}/deny", "appr", {"comment": "no"})
    assert r.status_code == 200 and r.json()["status"] == "denied"


def test_api_errors(api: Api) -> None:
    w = api.world
    rid, theirs = make_recording(w.ctx, w.acme), make_recording(w.ctx, w.globex)
    _problem(api.post("/v1/access-requests", "appr", _body([rid])), 403, "forbidden")
    _problem(api.post("/v1/access-requests", "eng", _body([theirs])), 404, "not-found")
    _problem(
        api.post("/v1/access-requests", "eng", _body([rid], purpose="x")), 422, "unknown-purpose"
    )
    _problem(
        api.post("/v1/access-requests", "eng", _body([rid], duration_minutes=999)),
        422, "invalid-input",
    )  # fmt: skip
    _problem(api.post("/v1/access-requests", "eng", {"purpose": "fraud"}), 422, "invalid-input")
    _problem(api.post(f"/v1/access-requests/{uuid.uuid4()}/approve", "appr"), 404, "not-found")
    _problem(api.get("/v1/access-requests", "eng", status="nope"), 422, "invalid-input")
    _problem(api.get("/v1/access-requests", "privacy"), 403, "forbidden")
    _problem(api.get("/v1/grants", "privacy"), 403, "forbidden")
    assert events(w.ctx, "permission.denied")  # role denials are audited

    req = api.post("/v1/access-requests", "eng", _body([rid])).json()
    w.clock.advance(TTL)
    _problem(api.post(f"/v1/access-requests/{req['id']}/approve", "appr"), 409, "conflict")
    with w.ctx.db.session() as s:  # the expiry was committed with the refusal
        assert s.get(AccessRequest, uuid.UUID(req["id"])).status == "expired"  # type: ignore[union-attr]
    listed = api.get("/v1/access-requests", "eng", status="expired").json()
    assert [x["id"] for x in listed] == [req["id"]]


def test_api_break_glass(api: Api) -> None:
    rid = make_recording(api.world.ctx, api.world.acme)
    body = {"recording_ids": [str(rid)], "purpose": "troubleshooting", "incident_ref": "INC-9",
            "reason": "Active account takeover in progress", "duration_minutes": 45}  # fmt: skip
    _problem(api.post("/v1/break-glass", "eng", body), 403, "forbidden")
    _problem(api.post("/v1/break-glass", "sec1", {**body, "duration_minutes": 61}), 422,
             "invalid-input")  # fmt: skip
    r = api.post("/v1/break-glass", "sec1", body)
    assert r.status_code == 201, r.text
    grant = r.json()
    assert grant["kind"] == "break_glass" and grant["needs_review"] and grant["active"]
    assert grant["incident_ref"] == "INC-9"
    _problem(api.post("/v1/break-glass", "sec1", body), 409, "conflict")
    pending = api.get("/v1/grants", "sec2", needs_review="true").json()
    assert [g["id"] for g in pending] == [grant["id"]]
    _problem(api.post(f"/v1/grants/{grant['id']}/review", "sec1b", {"comment": "mine"}), 403,
             "forbidden")  # fmt: skip
    _problem(api.post(f"/v1/grants/{grant['id']}/review", "appr", {"comment": "x"}), 403,
             "forbidden")  # fmt: skip
    r = api.post(f"/v1/grants/{grant['id']}/review", "sec2", {"comment": "justified"})
    assert r.status_code == 200 and r.json()["reviewed_at"] and not r.json()["needs_review"]
    assert api.get("/v1/grants", "sec2", needs_review="true").json() == []
    with api.world.ctx.db.session() as s:
        assert audit.verify(s).ok


# --- owner identity: pseudonyms outside the principal row --------------------------------------


def _database_text(ctx: Context) -> str:
    """Every value of every table, as text: what a dump or a backup of the database holds."""
    with ctx.db.session() as s:
        bind = s.connection()
        tables = sa.inspect(bind).get_table_names()
        rows = [bind.execute(sa.text(f'SELECT * FROM "{t}"')).all() for t in tables]
    return "\n".join(repr(tuple(r)) for table in rows for r in table)


def test_access_tables_and_audit_chain_hold_owner_pseudonyms_and_clearing_forgets_the_email(
    w: World,
) -> None:
    """The audit chain cannot be erased and the access tables outlive people: they hold the
    owner's keyed pseudonym only. Clearing the e-mail on the principal row removes it from the
    whole database, and four-eyes still recognises the person by pseudonym."""
    rid = make_recording(w.ctx, w.acme, purposes=("security",))
    req = w.request("eng", [rid], "security")
    w.review("sec1", req.id)
    w.review("sec2", req.id)
    w.break_glass("sec1", [rid], "security")
    with w.ctx.db.transaction() as s:
        principals.set_role(s, actor=Actor.operator(), name="eng2", role="approver", now=w.clock())
        principals.revoke_principal(s, actor=Actor.operator(), name="eng2", now=w.clock())
    with w.ctx.db.session() as s:
        chain = "\n".join(e.canonical for e in s.exec(select(AuditEvent)).all())
        access_rows = [
            *s.exec(select(AccessRequest.requester_owner)).all(),
            *s.exec(select(Review.reviewer_owner)).all(),
            *s.exec(select(Grant.owner)).all(),
        ]
    refs = {n: owner_of(w.ctx.keys, f"{n}@example.com").ref for n in ("eng", "sec1", "sec2")}
    assert set(access_rows) == set(refs.values())
    for name, _, owner, _ in PRINCIPALS:
        email = owner or f"{name}@example.com"
        assert email not in chain, f"{email} is in the audit chain"
        if name not in {r.value for r in Role}:  # "privacy" is also a role, rightly there
            assert f'"{name}"' not in chain, f"principal name {name} is in the audit chain"
    assert refs["eng"] in chain  # principal.create names the owner by pseudonym

    with w.ctx.db.transaction() as s:
        for name in ("eng", "eng-as-appr"):  # both keys of eng@example.com
            principals.clear_owner(s, actor=Actor.operator(), name=name, now=w.clock())
        principals.clear_owner(s, actor=Actor.operator(), name="eng", now=w.clock())  # no-op
    assert "eng@example.com" not in _database_text(w.ctx)
    [cleared, _] = events(w.ctx, "principal.clear_owner")
    assert audit.to_public(cleared).details == {"owner_ref": refs["eng"]}
    # The person is still one owner for four-eyes: their other key cannot approve.
    req2 = w.request("eng", [rid], "security")
    raises(PermissionDeniedError, w.review, "eng-as-appr", req2.id)
    # Nor can a principal created later for the same e-mail, in any case.
    twin, _ = make_principal(
        w.ctx, "eng-new", "security", owner="ENG@Example.com", all_tenants=True
    )
    w.who["eng-new"] = twin
    raises(PermissionDeniedError, w.review, "eng-new", req2.id)
    with w.ctx.db.session() as s:
        assert audit.verify(s).ok
