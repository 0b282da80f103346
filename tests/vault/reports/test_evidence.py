"""The evidence report end to end on both backends: figures from real services and jobs, the scope
rules over HTTP, the signature and its verifier, and key rotation for recertification."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi.testclient import TestClient

from tests.support.clock import FakeClock
from tests.vault.test_access import World as AccessWorld
from tests.vault.test_access import build_world, make_principal
from tests.vault.test_recordings import CALL_ID, events
from tests.vault.test_retention import ingest, kek_cycle
from vault.app import create_app
from vault.audit import heads, signing
from vault.authz import Actor
from vault.context import Context
from vault.errors import AuthenticationError, PermissionDeniedError
from vault.identity import authentication, principals
from vault.recordings import playback
from vault.reports import evidence, render_html, service
from vault.retention import erasure
from vault.setup import initialise

DAY = timedelta(days=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Nothing a report may carry: an owner's e-mail (every test owner is @example.com) or a call id.
PRIVATE = re.compile(rf"@example\.com|{re.escape(CALL_ID)}")


@pytest.fixture
def rctx(make_ctx: Callable[..., Context], backend: tuple[str, str], clock: FakeClock) -> Context:
    db, store = backend
    return make_ctx(db=db, store=store, clock=clock, max_key_age_days=30)


@dataclass
class World(AccessWorld):
    """test_access's world (tenants acme and globex, its principals), forty days on."""

    t0: datetime = EPOCH
    erasures: dict[str, uuid.UUID] = field(default_factory=dict)
    read_bytes: int = 0

    def report(self, who: str = "dpo-acme", tenant: str | None = "acme") -> dict[str, str]:
        return service.issue(
            self.ctx, actor=self.who[who], tenant=tenant, start=self.t0 - DAY,
            end=self.clock() + DAY, now=self.clock(), fmt="json",
        )[1]  # fmt: skip


def build(ctx: Context, clock: FakeClock) -> World:
    """Forty days of one tenant's privacy history, and a little of another tenant's."""
    initialise(ctx, now=clock())
    base = build_world(ctx, clock)
    w = World(ctx, clock, base.acme, base.globex, base.who, base.keys, t0=clock())
    for name, role in [("dpo-acme", "privacy"), ("aud-acme", "auditor")]:
        w.who[name], w.keys[name] = make_principal(ctx, name, role, tenants=["acme"])
    read, held, other = ingest(ctx, w.acme), ingest(ctx, w.acme), ingest(ctx, w.globex)

    w.review("appr", w.request("eng", [held.id]).id, "deny")
    clock.advance(minutes=30)
    approved = w.review("appr", w.request("eng", [read.id]).id)
    plan = playback.open_read(
        ctx, actor=w.who["eng"], recording_id=read.id, grant_id=approved.grant_id,
        range_header=None, now=clock(),
    )  # fmt: skip
    w.read_bytes = len(b"".join(playback.PlaintextStream(ctx, plan)))
    w.break_glass("sec1", [held.id])

    def erase(rid: uuid.UUID) -> uuid.UUID:
        return w.run(
            erasure.create_request, actor=w.who["privacy"], policy=ctx.policy,
            reason="subject asked", recording_ids=[rid],
        ).id  # fmt: skip

    w.erasures["met"] = erase(read.id)
    w.erasures["globex"] = erase(other.id)
    erasure.process(ctx, now=clock())
    clock.advance(days=7)
    assert kek_cycle(ctx, clock(), force=True)
    erasure.process(ctx, now=clock())
    w.erasures["overdue"] = erase(held.id)  # never processed: due after 30 days
    clock.advance(days=31)
    heads.write_head(ctx, now=clock())
    return w


@pytest.fixture
def world(rctx: Context, clock: FakeClock) -> World:
    return build(rctx, clock)


@pytest.fixture
def sqlite_world(make_ctx: Callable[..., Context], clock: FakeClock) -> World:
    """For what is about the signed text, not the data: one backend is enough."""
    return build(make_ctx(clock=clock, max_key_age_days=30), clock)


def _doc(w: World, signed: dict[str, str]) -> dict[str, Any]:
    return evidence.verify(w.ctx.keys.signing_public_key(), json.dumps(signed))


def test_report_figures_overdue_erasure_and_nothing_private(world: World) -> None:
    w = world
    signed = w.report()
    doc = _doc(w, signed)
    assert doc["type"] == signing.EVIDENCE_REPORT and doc["version"] == 1
    assert doc["scope"] == {"tenant": str(w.acme.id), "all_tenants": False}

    by_id = {e["request_id"]: e for e in doc["erasure"]["requests"]}
    assert set(by_id) == {str(w.erasures["met"]), str(w.erasures["overdue"])}  # not globex's
    overdue, met = by_id[str(w.erasures["overdue"])], by_id[str(w.erasures["met"])]
    assert overdue["deadline"] == "overdue" and overdue["completed_at"] is None
    assert met["deadline"] == "met" and met["completed_at"] and met["kek_retired_at"]
    assert doc["erasure"]["by_deadline"] == {"met": 1, "overdue": 1}

    assert doc["reads"] == [
        {"purpose": "troubleshooting", "reads": 1, "principals": 1, "bytes": w.read_bytes}
    ]
    access = doc["access_requests"]
    assert access["by_status"] == {"approved": 1, "denied": 1}
    assert access["time_to_decision"]["max_seconds"] == 0  # reviewed at once, on a frozen clock
    assert doc["break_glass"]["count"] == 1 and doc["break_glass"]["review_overdue"] == 1
    assert doc["disposals"] == {"erasure": 1}  # globex's erasure is not in acme's report
    assert doc["integrity_alarms"]["count"] == 0

    log = doc["audit_log"]
    assert log["verified"] is True and log["first_bad_seq"] is None
    head = log["covering_tree_head"]
    assert head is not None and head["tree_size"] > log["last_event"]["leaf_index"]
    signed_head = heads.parse_statement(
        head["statement"], head["signature"], w.ctx.keys.signing_public_key()
    )
    assert isinstance(signed_head, dict) and signed_head["tree_size"] == head["tree_size"]

    rc = doc["recertification"]
    listed = {p["principal_id"] for p in rc["principals"]}
    assert str(w.who["dpo-acme"].id) in listed and str(w.who["sec1"].id) in listed
    assert all(p["key_age_days"] >= 38 and p["key_past_max_age"] for p in rc["principals"])
    assert set(rc["keys_past_max_age"]) == listed and rc["max_key_age_days"] == 30
    eng = next(p for p in rc["principals"] if p["principal_id"] == str(w.who["eng"].id))
    assert eng["role"] == "engineer" and eng["scope"] == ["acme"]
    assert eng["last_use"] == doc["break_glass"]["uses"][0]["used_at"]  # its read, at t0+30m
    assert set(eng) == {"principal_id", "owner_ref", "role", "scope", "key_age_days",
                        "key_past_max_age", "last_use"}  # no name, no e-mail  # fmt: skip

    html = render_html.render(doc, sha256=evidence.statement_sha256(signed))
    for text in (signed["statement"], html):
        assert not PRIVATE.search(text)
    assert "OVERDUE" in html


def test_rotate_key_refuses_the_old_key_and_resets_its_age(world: World) -> None:
    w = world
    old = w.keys["eng"]
    key = w.run(principals.rotate_key, actor=Actor.operator(), name="eng", rng=w.ctx.rng)
    with w.ctx.db.session() as s:
        with pytest.raises(AuthenticationError):
            authentication.authenticate(s, api_key=old, now=w.clock())
        assert authentication.authenticate(s, api_key=key, now=w.clock()).id == w.who["eng"].id
        assert principals.oldest_key_created(s, now=w.clock())[w.who["eng"].id] == w.clock()
    rc = _doc(w, w.report())["recertification"]
    eng = next(p for p in rc["principals"] if p["principal_id"] == str(w.who["eng"].id))
    assert eng["key_age_days"] == 0 and not eng["key_past_max_age"]
    assert str(w.who["eng"].id) not in rc["keys_past_max_age"]
    assert str(w.who["appr"].id) in rc["keys_past_max_age"]
    # A scoped admin cannot hand out an all-tenant principal's key.
    acme_admin = dataclasses_replace(Actor.operator(), system=False, all_tenants=False,
                                     tenant_ids=frozenset({w.acme.id}))  # fmt: skip
    with pytest.raises(PermissionDeniedError):
        w.run(principals.rotate_key, actor=acme_admin, name="sec1")


def dataclasses_replace(actor: Actor, **kw: Any) -> Actor:
    import dataclasses

    return dataclasses.replace(actor, **kw)


def test_signature_type_and_key_are_checked(sqlite_world: World) -> None:
    w = sqlite_world
    signed = w.report(who="privacy", tenant=None)
    public = w.ctx.keys.signing_public_key()
    assert evidence.verify(public, json.dumps(signed))["scope"]["all_tenants"] is True
    flipped = signed["statement"].replace('"holds":{"open_at_end":', '"holds":{"open_at_end":1')
    assert flipped != signed["statement"]
    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    cases = {
        "flipped": {**signed, "statement": flipped},
        "wrong-type": dict(zip(("statement", "signature"), _tree_head(w), strict=True)),
        "extra-field": {**signed, "public_key": public.hex()},
    }
    for name, bad in cases.items():
        with pytest.raises(signing.SignedDocumentError) as info:
            evidence.verify(public, json.dumps(bad))
        assert name != "wrong-type" or "type is 'callvault.audit-tree-head'" in info.value.reason
    with pytest.raises(signing.SignedDocumentError):
        evidence.verify(other, json.dumps(signed))


def _tree_head(w: World) -> tuple[str, str]:
    with w.ctx.db.session() as s:
        (head,) = heads.list_heads(s, limit=1)
    assert head.signature is not None
    return head.statement, head.signature


# --- HTTP: the scope rules ------------------------------------------------------------------------


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.ctx.settings, ctx=world.ctx)) as c:
        yield c


def test_api_scope_formats_and_bad_periods(world: World, client: TestClient) -> None:
    w = world
    period = {"from": (w.t0 - DAY).isoformat(), "to": (w.clock() + DAY).isoformat()}

    def get(who: str, **params: Any) -> Any:
        return client.get(
            "/v1/reports/evidence", params={**period, **params},
            headers={"Authorization": f"Bearer {w.keys[who]}"},
        )  # fmt: skip

    ok = get("dpo-acme", tenant="acme")
    assert ok.status_code == 200, ok.text
    assert _doc(w, ok.json())["scope"]["tenant"] == str(w.acme.id)
    assert get("aud-acme", tenant=str(w.acme.id)).status_code == 200
    for who, params, status, code in [
        ("dpo-acme", {"tenant": "globex"}, 403, "forbidden"),
        ("dpo-acme", {"tenant": "no-such-tenant"}, 403, "forbidden"),
        ("dpo-acme", {}, 403, "all-tenants-required"),
        ("eng", {"tenant": "acme"}, 403, "forbidden"),
        ("privacy", {"tenant": "no-such-tenant"}, 422, "unknown-tenant"),
        ("privacy", {"from": period["to"], "to": period["from"]}, 422, "report-period-invalid"),
        ("privacy", {"format": "docx"}, 422, "invalid-input"),
    ]:
        r = get(who, **params)
        assert r.status_code == status, (who, params, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("/" + code), r.json()
    page = get("privacy", format="html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert page.headers["cache-control"] == "no-store"
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page.text, re.I)
    assert "https://" not in page.text and "http://" not in page.text
    assert not PRIVATE.search(page.text)
    assert "<svg" in page.text and "Access recertification" in page.text
    pdf = get("dpo-acme", tenant="acme", format="pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-") and "attachment" in pdf.headers["content-disposition"]
    # Every report issued is audited: who, the period and the statement's hash; nothing private.
    issued = events(w.ctx, "report.evidence")
    assert [e.actor for e in issued][:2] == [str(w.who["dpo-acme"].id), str(w.who["aud-acme"].id)]
    tenant_of = {e.actor: e.tenant_id for e in issued}
    assert tenant_of[str(w.who["dpo-acme"].id)] == w.acme.id  # its scope: acme
    assert tenant_of[str(w.who["privacy"].id)] is None  # every tenant
    assert not any(PRIVATE.search(e.canonical) for e in issued)
