"""Per-tenant policy on both backends: tighten only (the refusal names the field), four-eyes by
owner, a dry run with the proposal, a shortening that reaches stored recordings only 24 h after
approval while new ingests get it at once, and authorisations stored and shown."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from tests.support.api import Api, principal_key
from tests.support.clock import FakeClock
from tests.vault.test_retention import ingest, row, run_jobs
from vault.errors import PurposeDisabledError
from vault.models import RecordingPurpose, RecordingStatus, Tenant
from vault.policy import PolicyError, load_policy
from vault.policy_restrictions import TenantRestrictions, effective, tightens

S = RecordingStatus


def acme(api: Api) -> Tenant:
    with api.ctx.db.session() as s:
        return s.exec(select(Tenant).where(Tenant.name == "acme")).one()


def propose(api: Api, body: dict[str, Any], who: str = "admin") -> Any:
    return api.client.put(
        "/v1/tenants/acme/policy", json={"reason": "customer instruction", **body},
        headers=api.h(who),
    )  # fmt: skip


def approve(api: Api, change_id: str, who: str = "dpo", what: str = "policy") -> Any:
    return api.client.post(
        f"/v1/tenants/acme/{what}/approve", json={"change_id": change_id}, headers=api.h(who)
    )


def expiry(api: Api, rid: Any) -> Any:
    with api.ctx.db.session() as s:
        return s.exec(select(RecordingPurpose).where(RecordingPurpose.recording_id == rid)).one()


LOOSER = [
    ({"purposes": {"troubleshooting": {"retention_days": 31}}},
     "purposes.troubleshooting.retention_days"),
    ({"purposes": {"fraud": {"approvals": 0}}}, "purposes.fraud.approvals"),
    ({"purposes": {"marketing": {"retention_days": 3}}}, "purposes.marketing"),
    ({"purposes": {"troubleshooting": {"approver_roles": ["engineer"]}}},
     "purposes.troubleshooting.approver_roles"),
    ({"purposes": {"troubleshooting": {"retention_days": 0.5}}},
     "purposes.troubleshooting.retention_days"),
    ({"erasure_deadline_days": 31}, "erasure_deadline_days"),
    ({"erasure_deadline_days": 8}, "erasure_deadline_days"),  # not > kek_rotation_days + 1
    ({"purposes": {"fraud": {"max_access_minutes": 5}}}, "purposes.fraud.max_access_minutes"),
]  # fmt: skip


def test_a_tenant_override_that_loosens_the_policy_is_refused_with_the_field(api: Api) -> None:
    for body, field in LOOSER:  # one API for all the cases: each is one request
        r = propose(api, body)
        assert r.status_code == 422, r.text
        problem = r.json()
        assert r.headers["content-type"] == "application/problem+json"
        assert problem["field"] == field, problem
        assert problem["type"].rsplit("/", 1)[1] in ("tenant-policy-loosens", "invalid-input")
    assert api.client.get("/v1/tenants/acme/changes", headers=api.h("dpo")).json() == []
    r = propose(api, {"purposes": {"fraud": {"approvals": 1, "retention_days": 1000}}})
    assert r.json()["type"].endswith("/tenant-policy-loosens")
    assert "must be <= 90" in r.json()["detail"]


def test_an_approved_shorter_retention_reaches_stored_recordings_only_after_24_hours(
    api: Api, clock: FakeClock
) -> None:
    ctx = api.ctx
    stored = ingest(ctx, acme(api))  # troubleshooting: 30 days globally
    clock.advance(days=10)
    r = propose(api, {"purposes": {"troubleshooting": {"retention_days": 5}}})
    assert r.status_code == 202, r.text
    change = r.json()
    assert change["dry_run"]["recordings_shortened"] == 1
    assert change["dry_run"]["purposes_shortened"] == {"troubleshooting": 1}
    # Proposed is not approved: nothing has changed yet.
    assert expiry(api, stored.id).expires_at == stored.ingested_at + timedelta(days=30)

    # The proposer's own person, through a privacy key, cannot approve.
    assert approve(api, change["id"], who="admin-as-dpo").status_code == 403
    approved_at = clock()
    assert approve(api, change["id"]).status_code == 200
    assert expiry(api, stored.id).expires_at == approved_at + timedelta(hours=24)
    fresh = ingest(ctx, acme(api))  # new ingests get the shorter retention at once
    assert expiry(api, fresh.id).expires_at == approved_at + timedelta(days=5)

    clock.advance(hours=23, minutes=59)
    run_jobs(ctx, clock())
    assert row(ctx, stored.id).status == S.stored  # not before the 24 h
    clock.advance(minutes=2)
    run_jobs(ctx, clock())
    assert row(ctx, stored.id).status == S.disposed
    assert row(ctx, fresh.id).status == S.stored
    clock.advance(days=4)
    run_jobs(ctx, clock())
    assert row(ctx, fresh.id).status == S.disposed

    view = api.client.get("/v1/tenants/acme/policy", headers=api.h("dpo")).json()
    assert view["restrictions"] == {"purposes": {"troubleshooting": {"retention_days": 5.0}}}
    assert view["effective"]["purposes"]["troubleshooting"]["retention_days"] == 5.0
    assert view["effective"]["purposes"]["fraud"]["retention_days"] == 90.0  # untouched


def test_disabled_purposes_and_more_approvals_apply_to_ingest_and_access(
    api: Api, clock: FakeClock
) -> None:
    ctx, c, h = api.ctx, api.client, api.h
    rec = ingest(ctx, acme(api), purposes=("troubleshooting", "fraud"))
    body = {
        "purposes": {"transcription": {"disabled": True}, "troubleshooting": {"approvals": 2}},
        "erasure_deadline_days": 20,
    }
    change = propose(api, body).json()
    assert approve(api, change["id"]).status_code == 200

    refused = c.post(
        "/v1/recordings?tenant=acme&purposes=transcription", content=b"body",
        headers={**h("ingest"), "Content-Type": "video/webm"},
    )  # fmt: skip
    assert refused.status_code == 422 and refused.json()["type"].endswith("/purpose-disabled")
    req = c.post(
        "/v1/access-requests",
        json={"recording_ids": [str(rec.id)], "purpose": "troubleshooting",
              "reason": "debug the dropped call", "ticket": "ABC-1", "duration_minutes": 30},
        headers=h("eng"),
    )  # fmt: skip
    assert req.status_code == 201, req.text
    assert req.json()["approvals_required"] == 2
    erasure = c.post(
        "/v1/erasure-requests", json={"recording_ids": [str(rec.id)]}, headers=h("dpo")
    )
    assert erasure.status_code == 202, erasure.text
    due = (clock() + timedelta(days=20)).isoformat().replace("+00:00", "Z")
    assert erasure.json()["due_at"] == due


def test_authorisations_need_four_eyes_and_are_shown(api: Api) -> None:
    c, h = api.client, api.h
    body = {
        "reason": "signed DPA annex 3",
        "subprocessors": [{"subprocessor": "transcribe-co", "opted_in": True,
                           "instruction_ref": "DPA-2026-07 annex 3"}],
        "transfers": [{"destination": "CH", "mechanism": "adequacy",
                       "instruction_ref": "DPA-2026-07 §9"}],
    }  # fmt: skip
    missing = c.put(
        "/v1/tenants/acme/authorisations",
        json={**body, "transfers": [{"destination": "US", "mechanism": "SCC"}]},
        headers=h("admin"),
    )
    assert missing.status_code == 422 and missing.json()["field"] == "transfers.0.instruction_ref"
    change = c.put("/v1/tenants/acme/authorisations", json=body, headers=h("admin")).json()
    shown = c.get("/v1/tenants/acme/policy", headers=h("dpo")).json()
    assert shown["authorisations"] == {}  # not before approval
    assert approve(api, change["id"], who="admin-as-dpo", what="authorisations").status_code == 403
    assert approve(api, change["id"], what="authorisations").status_code == 200
    shown = c.get("/v1/tenants/acme/policy", headers=h("dpo")).json()
    assert shown["authorisations"]["subprocessors"][0]["instruction_ref"] == "DPA-2026-07 annex 3"
    assert shown["authorisations"]["transfers"][0]["destination"] == "CH"


def test_two_tenants_restrictions_compose_to_the_strictest_of_each_rule() -> None:
    """A request over recordings of two tenants gets the shortest retention, the most
    approvals, the common approver roles and neither's disabled purposes."""
    policy = load_policy()
    one = TenantRestrictions.model_validate(
        {"purposes": {"troubleshooting": {"retention_days": 10, "approvals": 2}},
         "erasure_deadline_days": 20}
    )  # fmt: skip
    two = TenantRestrictions.model_validate(
        {"purposes": {"troubleshooting": {"retention_days": 20, "approver_roles": ["security"]},
                      "fraud": {"disabled": True}}}
    )  # fmt: skip
    for r in (one, two):
        tightens(policy, r)
    both = effective(policy, one, two)
    rules = both.purpose("troubleshooting")
    assert (rules.retention_days, rules.approvals, rules.approver_roles) == (10, 2, ["security"])
    assert both.erasure_deadline_days == 20
    with pytest.raises(PurposeDisabledError):
        both.purpose("fraud")
    assert policy.purpose("fraud").retention_days == 90  # the global policy is untouched


def test_an_approval_takes_exactly_the_change_it_names_within_its_scope(api: Api) -> None:
    ctx, c, h = api.ctx, api.client, api.h
    api.keys["globex-admin"] = principal_key(ctx, "globex-admin", "admin", ["globex"])
    api.keys["globex-dpo"] = principal_key(ctx, "globex-dpo", "privacy", ["globex"])
    tighter = {"purposes": {"fraud": {"retention_days": 30}}}
    # Another tenant's admin cannot propose for acme, nor its privacy officer approve.
    assert propose(api, tighter, who="globex-admin").status_code == 403
    first = propose(api, tighter).json()
    assert approve(api, first["id"], who="globex-dpo").status_code == 403
    # A newer proposal supersedes the first: approving what one saw earlier is a conflict.
    second = propose(api, {"purposes": {"fraud": {"retention_days": 60}}}).json()
    stale = approve(api, first["id"])
    assert stale.status_code == 409 and "superseded" in stale.json()["detail"]
    # A change id of another tenant, or of another kind, is not found under this path.
    other = c.put(
        "/v1/tenants/globex/policy", json={"reason": "instruction", **tighter},
        headers=h("admin"),
    ).json()  # fmt: skip
    assert approve(api, other["id"]).status_code == 404
    assert approve(api, second["id"], what="offboard").status_code == 404
    assert approve(api, second["id"]).status_code == 200
    assert approve(api, second["id"]).status_code == 409  # approved once only
    view = c.get("/v1/tenants/acme/policy", headers=h("dpo")).json()
    assert view["restrictions"] == {"purposes": {"fraud": {"retention_days": 60.0}}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("offboarding_days = 61\n", "offboarding_days: must be <= 60"),
        ("offboarding_days = 7\n", "offboarding_days: must be > kek_rotation_days (7) (got 7)"),
    ],
)
def test_offboarding_days_keeps_the_notices_promise(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=re.escape(message)):
        load_policy(path)
    assert load_policy().offboarding_days == 60
