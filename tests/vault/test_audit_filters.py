"""Filtering the audit list (``reads.list_events`` and ``GET /v1/audit``) on SQLite and PostgreSQL.

Eight events with known actors, actions, tenants, targets and times are appended to a fresh
chain; each test asserts the exact seqs a filter returns. Filters narrow the caller's scope and
never widen it; anything a client can send that makes no sense is a 422 ``invalid-input``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vault import audit
from vault.app import create_app
from vault.audit import chain, reads
from vault.audit.reads import AuditFilter
from vault.authz import Actor
from vault.context import Context
from vault.errors import InvalidInputError
from vault.identity import principals
from vault.identity.owners import owner_of
from vault.identity.tenants import create_tenant
from vault.models import Role
from vault.setup import initialise
from vault.tags import AuditAction

A = AuditAction
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
P1, P2, SYSTEM = str(uuid.UUID(int=1)), str(uuid.UUID(int=2)), "system:cli"
TYPE = "https://callvault.dev/problems/"
MICROSECOND = timedelta(microseconds=1)

# name, action, actor, tenant, target, minutes after T0 (seqs follow this order).
EVENTS = (
    ("ingest", A.recording_ingest, P1, "a", "r1", 0),
    ("read-a-p2", A.recording_read, P2, "a", "r1", 1),
    ("read-b-p1", A.recording_read, P1, "b", "r2", 2),
    ("grant", A.grant_create, P2, "a", "grant", 3),
    ("read-a-p1", A.recording_read, P1, "a", "r1", 4),
    ("rotate", A.kek_rotate, SYSTEM, None, None, 5),
    ("read-b-p2", A.recording_read, P2, "b", "r2", 6),
    ("purpose-end", A.recording_purpose_end, P1, "a", "r1", 7),
)


@dataclass(frozen=True)
class Seeded:
    seqs: dict[str, int]
    ids: dict[str, uuid.UUID]  # "a", "b" (tenants), "r1", "r2" (recordings), "grant"

    def __call__(self, *names: str) -> list[int]:
        return [self.seqs[n] for n in names]


def seed(ctx: Context, tenant_a: uuid.UUID, tenant_b: uuid.UUID) -> Seeded:
    ids = {"a": tenant_a, "b": tenant_b, "r1": uuid.uuid4(), "r2": uuid.uuid4()}
    ids["grant"] = uuid.uuid4()
    seqs = {}
    with ctx.db.transaction() as s:
        for name, action, who, tenant, target, minute in EVENTS:
            ev = audit.record(
                s, action=action, actor=who, now=T0 + timedelta(minutes=minute),
                tenant_id=None if tenant is None else ids[tenant],
                target=None if target is None else str(ids[target]),
            )  # fmt: skip
            seqs[name] = ev.seq
    return Seeded(seqs=seqs, ids=ids)


def auditor(*tenants: uuid.UUID) -> Actor:
    """An auditor over every tenant, or (given tenants) limited to those."""
    return Actor(
        id=uuid.uuid4(), name="auditor", role=Role.auditor, owner="owner-ref",
        all_tenants=not tenants, tenant_ids=frozenset(tenants),
    )  # fmt: skip


def listed(
    ctx: Context, who: Actor, filters: AuditFilter | None = None, **paging: Any
) -> list[int]:
    paging.setdefault("limit", 1000)
    with ctx.db.reading() as s:
        rows = reads.list_events(s, actor=who, now=ctx.now(), filters=filters, **paging)
    return [r.seq for r in rows]


@pytest.fixture
def seeded(ctx: Context) -> Seeded:
    return seed(ctx, uuid.uuid4(), uuid.uuid4())


def at(minute: int, hours: int = 0) -> datetime:
    """T0 + ``minute``, written in a UTC offset of ``hours`` (the same instant)."""
    return (T0 + timedelta(minutes=minute)).astimezone(timezone(timedelta(hours=hours)))


# --- each filter, alone and combined -------------------------------------------------------------


def test_no_filter_keeps_the_old_behaviour(ctx: Context, seeded: Seeded) -> None:
    assert listed(ctx, auditor()) == seeded(*(e[0] for e in EVENTS))
    assert listed(ctx, auditor(), AuditFilter()) == seeded(*(e[0] for e in EVENTS))
    assert listed(ctx, auditor(), after_seq=seeded.seqs["rotate"], limit=1) == seeded("read-b-p2")


def test_recording_id_matches_events_targeting_the_recording(ctx: Context, seeded: Seeded) -> None:
    got = listed(ctx, auditor(), AuditFilter(recording_id=seeded.ids["r1"]))
    assert got == seeded("ingest", "read-a-p2", "read-a-p1", "purpose-end")
    assert listed(ctx, auditor(), AuditFilter(recording_id=uuid.uuid4())) == []


def test_actor_matches_the_actor_column_verbatim(ctx: Context, seeded: Seeded) -> None:
    got = listed(ctx, auditor(), AuditFilter(actor=P1))
    assert got == seeded("ingest", "read-b-p1", "read-a-p1", "purpose-end")
    assert listed(ctx, auditor(), AuditFilter(actor=SYSTEM)) == seeded("rotate")
    assert listed(ctx, auditor(), AuditFilter(actor=SYSTEM.upper())) == []  # no case folding


def test_action_matches_exactly(ctx: Context, seeded: Seeded) -> None:
    got = listed(ctx, auditor(), AuditFilter(action=A.recording_read))
    assert got == seeded("read-a-p2", "read-b-p1", "read-a-p1", "read-b-p2")
    # A string is accepted and normalised; "recording" is no prefix match.
    assert AuditFilter(action="kek.rotate").action is A.kek_rotate
    assert listed(ctx, auditor(), AuditFilter(action="kek.rotate")) == seeded("rotate")


def test_tenant_id(ctx: Context, seeded: Seeded) -> None:
    got = listed(ctx, auditor(), AuditFilter(tenant_id=seeded.ids["b"]))
    assert got == seeded("read-b-p1", "read-b-p2")


def test_time_range_is_inclusive_and_zone_independent(ctx: Context, seeded: Seeded) -> None:
    # The same instants written in +02:00 and -05:00: both ends are included.
    window = AuditFilter(ts_from=at(2, hours=2), ts_to=at(5, hours=-5))
    assert listed(ctx, auditor(), window) == seeded("read-b-p1", "grant", "read-a-p1", "rotate")
    assert listed(ctx, auditor(), AuditFilter(ts_from=at(6))) == seeded("read-b-p2", "purpose-end")
    assert listed(ctx, auditor(), AuditFilter(ts_to=at(0))) == seeded("ingest")
    one = at(3, hours=9)
    assert listed(ctx, auditor(), AuditFilter(ts_from=one, ts_to=one)) == seeded("grant")
    between = AuditFilter(ts_from=at(3) + MICROSECOND, ts_to=at(4) - MICROSECOND)
    assert listed(ctx, auditor(), between) == []


def test_filters_combine_with_and(ctx: Context, seeded: Seeded) -> None:
    r1 = seeded.ids["r1"]
    got = listed(ctx, auditor(), AuditFilter(recording_id=r1, actor=P1, action=A.recording_read))
    assert got == seeded("read-a-p1")
    got = listed(ctx, auditor(), AuditFilter(tenant_id=seeded.ids["a"], ts_from=at(3)))
    assert got == seeded("grant", "read-a-p1", "purpose-end")
    # Each field alone matches something; together nothing does.
    assert listed(ctx, auditor(), AuditFilter(tenant_id=seeded.ids["b"], recording_id=r1)) == []


# --- order and paging ----------------------------------------------------------------------------


def test_desc_with_limit_returns_the_newest(ctx: Context, seeded: Seeded) -> None:
    assert listed(ctx, auditor(), order="desc", limit=3) == seeded(
        "purpose-end", "read-b-p2", "rotate"
    )
    reads_only = AuditFilter(action=A.recording_read)
    assert listed(ctx, auditor(), reads_only, order="desc", limit=2) == seeded(
        "read-b-p2", "read-a-p1"
    )


def test_desc_pages_with_before_seq_cover_everything_once(ctx: Context, seeded: Seeded) -> None:
    pages, before = [], None
    while page := listed(ctx, auditor(), order="desc", limit=3, before_seq=before):
        pages.append(page)
        before = page[-1]
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [seq for p in pages for seq in p] == seeded(*(e[0] for e in reversed(EVENTS)))
    # before_seq and after_seq bound both ways; ascending within the bounds.
    got = listed(ctx, auditor(), after_seq=seeded.seqs["ingest"], before_seq=seeded.seqs["grant"])
    assert got == seeded("read-a-p2", "read-b-p1")


# --- scope ----------------------------------------------------------------------------------------


def test_a_scoped_auditor_filtering_on_another_tenant_sees_nothing(
    ctx: Context, seeded: Seeded
) -> None:
    scoped = auditor(seeded.ids["a"])
    assert listed(ctx, scoped, AuditFilter(tenant_id=seeded.ids["b"])) == []
    assert listed(ctx, scoped, AuditFilter(recording_id=seeded.ids["r2"])) == []
    assert listed(ctx, scoped, AuditFilter(actor=SYSTEM)) == []  # tenant-less: all-tenants only
    own = seeded("ingest", "read-a-p2", "grant", "read-a-p1", "purpose-end")
    assert listed(ctx, scoped) == own
    assert listed(ctx, scoped, AuditFilter(tenant_id=seeded.ids["a"])) == own
    assert listed(ctx, scoped, AuditFilter(actor=P1), order="desc", limit=2) == seeded(
        "purpose-end", "read-a-p1"
    )


def maybe(*values: Any) -> st.SearchStrategy[Any]:
    """None half the time, so that most draws leave most fields out and still match events."""
    return st.none() | st.sampled_from(values)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_any_filter_equals_filtering_the_full_list(ctx: Context, seeded: Seeded, draw: Any) -> None:
    """The SQL filter, scope and paging agree with the same rules applied in Python."""
    ids = seeded.ids
    # Mostly on an event's exact minute (0-7), in any offset: the inclusive ends get exercised.
    minute = st.none() | st.builds(at, st.integers(-1, 8), st.integers(-12, 12))
    ts_from, ts_to = draw.draw(minute), draw.draw(minute)
    if ts_from and ts_to and ts_from > ts_to:
        ts_from, ts_to = ts_to, ts_from
    filters = AuditFilter(
        recording_id=draw.draw(maybe(ids["r1"], ids["r2"], ids["grant"])),
        actor=draw.draw(maybe(P1, P2, SYSTEM)),
        action=draw.draw(maybe(A.recording_read, A.grant_create, A.hold_create)),
        tenant_id=draw.draw(maybe(ids["a"], ids["b"])),
        ts_from=ts_from, ts_to=ts_to,
    )  # fmt: skip
    scope = draw.draw(st.sampled_from([(), (ids["a"],), (ids["b"],), (ids["a"], ids["b"])]))
    paging = {
        "order": draw.draw(st.sampled_from(["asc", "desc"])),
        "limit": draw.draw(st.integers(1, 9)),
        "after_seq": draw.draw(st.just(0) | st.integers(0, 9)),
        "before_seq": draw.draw(st.none() | st.integers(1, 10)),
    }
    with ctx.db.reading() as s:
        every = audit.list_events(s, limit=1000)
    want = [
        e.seq for e in every
        if (not scope or e.tenant_id in scope)
        and (filters.recording_id is None or e.target == str(filters.recording_id))
        and (filters.actor is None or e.actor == filters.actor)
        and (filters.action is None or e.action == filters.action)
        and (filters.tenant_id is None or e.tenant_id == filters.tenant_id)
        and (ts_from is None or e.ts >= ts_from) and (ts_to is None or e.ts <= ts_to)
        and e.seq > paging["after_seq"]
        and (paging["before_seq"] is None or e.seq < paging["before_seq"])
    ]  # fmt: skip
    if paging["order"] == "desc":
        want.reverse()
    assert listed(ctx, auditor(*scope), filters, **paging) == want[: paging["limit"]]


# --- what the filter refuses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"action": "recording.delete"}, "unknown action 'recording.delete'"),
        ({"action": "RECORDING.READ"}, "unknown action"),
        ({"ts_from": at(5), "ts_to": at(4)}, "from must not be after to"),
        ({"ts_from": datetime(2026, 11, 25, 12, 0)}, "ts_from: must carry a time zone"),
        ({"ts_to": datetime(2026, 11, 25, 12, 0)}, "ts_to: must carry a time zone"),
        ({"actor": "x" * 65}, "actor longer than 64 characters"),
        ({"actor": "p\x00"}, "actor must not contain control characters"),
    ],
)
def test_filter_refuses_what_makes_no_sense(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(")):
        AuditFilter(**fields)


@pytest.mark.parametrize(
    ("paging", "message"),
    [({"order": "sideways"}, "order must be one of asc, desc"),
     ({"before_seq": 0}, "before_seq must be >= 1")],
)  # fmt: skip
def test_list_refuses_bad_paging(ctx: Context, paging: dict[str, Any], message: str) -> None:
    with ctx.db.reading() as s, pytest.raises(InvalidInputError, match=message):
        chain.list_events(s, **paging)


# --- over HTTP -----------------------------------------------------------------------------------


@dataclass
class Api:
    client: TestClient
    keys: dict[str, str]
    data: Seeded
    base: int  # the chain's head before the seeded events (setup writes events too)

    def get(self, who: str, **params: Any) -> Any:
        auth = {"Authorization": f"Bearer {self.keys[who]}"}
        return self.client.get("/v1/audit", params=params, headers=auth)

    def seqs(self, who: str, **params: Any) -> list[int]:
        r = self.get(who, **params)
        assert r.status_code == 200, r.text
        return [e["seq"] for e in r.json()]


@pytest.fixture
def api(ctx: Context) -> Iterator[Api]:
    initialise(ctx, now=ctx.now())
    op, keys = Actor.operator(), {}
    # Pseudonyms come from the key provider: never inside a transaction.
    owners = {n: owner_of(ctx.keys, f"auditor-{n}@example.com") for n in ("all", "acme")}
    with ctx.db.transaction() as s:
        tenants = [create_tenant(s, actor=op, name=n, region=None, now=ctx.now()) for n in
                   ("acme", "globex")]  # fmt: skip
        for name, scope in (("all", []), ("acme", ["acme"])):
            _, keys[name] = principals.add_principal(
                s, actor=op, name=f"auditor-{name}", role=Role.auditor,
                owner=owners[name], tenants=scope,
                all_tenants=not scope, now=ctx.now(),
            )  # fmt: skip
    with ctx.db.reading() as s:
        base = audit.head(s)[0]
    data = seed(ctx, tenants[0].id, tenants[1].id)
    with TestClient(create_app(ctx.settings, ctx=ctx)) as client:
        yield Api(client=client, keys=keys, data=data, base=base)


def test_query_params_filter(api: Api) -> None:
    d, ids = api.data, api.data.ids
    got = api.seqs("all", recording_id=str(ids["r1"]), actor=P1, action="recording.read")
    assert got == d("read-a-p1")
    got = api.seqs("all", tenant_id=str(ids["b"]), after_seq=api.base)
    assert got == d("read-b-p1", "read-b-p2")
    window = {"from": "2026-11-25T14:02:00+02:00", "to": "2026-11-25T07:05:00-05:00"}
    assert api.seqs("all", **window) == d("read-b-p1", "grant", "read-a-p1", "rotate")
    assert api.seqs("all", order="desc", limit=2) == d("purpose-end", "read-b-p2")
    got = api.seqs("all", order="desc", limit=2, before_seq=d.seqs["read-b-p2"])
    assert got == d("rotate", "read-a-p1")


def test_scoped_auditor_asking_for_another_tenant_gets_an_empty_list(api: Api) -> None:
    d, ids = api.data, api.data.ids
    assert api.seqs("acme", tenant_id=str(ids["b"])) == []
    assert api.seqs("acme", recording_id=str(ids["r2"])) == []
    got = api.seqs("acme", tenant_id=str(ids["a"]), after_seq=api.base)
    assert got == d("ingest", "read-a-p2", "grant", "read-a-p1", "purpose-end")


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"action": "recording.delete"}, "unknown action 'recording.delete'"),
        ({"action": ""}, "query.action"),
        ({"from": "2026-11-25T12:05:00Z", "to": "2026-11-25T12:04:00Z"}, "from must not be after"),
        ({"from": "2026-11-25T12:00:00"}, "query.from: Value error, must carry a time zone"),
        ({"to": "2026-11-25T12:00:00"}, "query.to: Value error, must carry a time zone"),
        ({"from": "9999-12-31T23:59:59-01:00"}, "query.from"),
        ({"from": "yesterday"}, "query.from"),
        ({"order": "sideways"}, "query.order"),
        ({"actor": "x" * 65}, "query.actor"),
        ({"actor": "p\x01"}, "query.actor"),
        ({"recording_id": "r1"}, "query.recording_id"),
        ({"tenant_id": "acme"}, "query.tenant_id"),
        ({"before_seq": 0}, "query.before_seq"),
    ],
)
def test_bad_query_is_a_422_problem(api: Api, params: dict[str, Any], detail: str) -> None:
    r = api.get("all", **params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == TYPE + "invalid-input"
    assert detail in r.json()["detail"]
