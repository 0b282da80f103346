"""The register: objection, four-eyes approvals of the exact key, changes that reset approvals,
the emergency path and its after-review, and scope."""

from __future__ import annotations

from typing import Any

import pytest

from tests.vault.disclosures.conftest import Register
from tests.vault.privacy.conftest import Vault, problem
from vault.ops.measures import disclosures as disclosure_metrics


def test_an_improper_request_is_objected_and_nothing_is_ever_exported(
    vault: Vault, reg: Register, small_media: bytes
) -> None:
    d = reg.new([vault.ingest(small_media, call_id="call-1")])
    r = reg.act(d, "object", {"reason": "not signed by a judge; no valid legal process"})
    assert r.status_code == 200 and r.json()["status"] == "objected"
    problem(reg.approve("privacy-all", d), 409, "disclosure-state")
    problem(reg.act(d, "disclose"), 409, "disclosure-state")
    again = reg.act(d, "object", {"reason": "objecting twice is no new state"})
    problem(again, 409, "disclosure-state")
    assert reg.exports() == []
    (event,) = vault.events("disclosure.object")
    assert event["details"]["to"] == "objected"


def test_approval_needs_privacy_and_security_of_two_other_owners(
    vault: Vault, reg: Register, small_media: bytes
) -> None:
    d = reg.new([vault.ingest(small_media, call_id="call-1")])
    problem(reg.act(d, "disclose"), 409, "disclosure-state")  # nothing approved yet
    problem(reg.approve("privacy", d), 403, "forbidden")  # the requester
    reg.same_owner_as("privacy", "privacy-twin", "security")
    problem(reg.approve("privacy-twin", d), 403, "forbidden")  # the requester's owner
    problem(reg.approve("eng", d), 403, "forbidden")  # not an approving role
    first = reg.approve("privacy-all", d)
    assert first.status_code == 200 and first.json()["approvals_required"] == ["security"]
    reg.same_owner_as("privacy-all", "privacy-all-twin", "security")
    problem(reg.approve("privacy-all-twin", d), 403, "forbidden")  # same owner twice
    problem(reg.approve("privacy-globex", d), 404, "not-found")  # out of its scope
    second = reg.approve("security", d)
    assert second.status_code == 200 and second.json()["status"] == "approved"
    assert {a["role"] for a in second.json()["approvals"]} == {"privacy", "security"}


def test_the_same_role_twice_does_not_make_two_approvals(
    vault: Vault, reg: Register, small_media: bytes
) -> None:
    d = reg.new([vault.ingest(small_media, call_id="call-1")])
    assert reg.approve("security", d).status_code == 200
    problem(reg.approve("security2", d), 403, "forbidden")  # security is no longer missing


def test_an_approval_of_another_fingerprint_or_revision_is_refused(
    vault: Vault, reg: Register, small_media: bytes
) -> None:
    d = reg.new([vault.ingest(small_media, call_id="call-1")])
    other = "SHA256:" + "A" * 43
    problem(reg.approve("security", d, recipient_fingerprint=other), 409,
            "disclosure-recipient-mismatch")  # fmt: skip
    problem(reg.approve("security", d, revision=2), 409, "disclosure-revision-stale")
    r = reg.approve("security", d, verification="")
    assert r.status_code == 422  # how it was verified is required
    assert vault.events("disclosure.approval") == []


def _patch(vault: Vault, d: dict[str, Any], **body: Any) -> Any:
    return vault.client.patch(f"/v1/disclosures/{d['id']}", json=body, headers=vault.h("privacy"))


def test_any_change_resets_the_approvals_and_is_audited(
    vault: Vault, reg: Register, small_media: bytes, authority: Any
) -> None:
    rids = [vault.ingest(small_media, call_id=f"call-{i}") for i in range(2)]
    d = reg.approved(reg.new(rids[:1]))
    r = _patch(vault, d, recording_ids=[str(i) for i in rids], reason="the order was extended")
    assert r.status_code == 200, r.text
    changed = r.json()
    assert changed["status"] == "received" and changed["revision"] == 2
    assert changed["approvals"] == [] and changed["approvals_required"] == ["privacy", "security"]
    problem(reg.approve("security", d), 409, "disclosure-revision-stale")  # the old revision
    (event,) = vault.events("disclosure.amend")
    assert event["details"]["changed"] == ["scope"] and event["details"]["approvals_reset"]
    # A new recipient key changes the fingerprint approvers must confirm.
    from tests.vault.disclosures.conftest import Authority

    new_key = Authority(authority.key_file.parent / "..").recipient
    assert reg.approve("security", changed).status_code == 200
    r = _patch(vault, changed, recipient=new_key, reason="the authority rotated its key")
    assert r.json()["revision"] == 3 and r.json()["approvals"] == []
    assert r.json()["recipient_fingerprint"] != changed["recipient_fingerprint"]
    problem(_patch(vault, r.json(), recipient=new_key, reason="nothing new here at all"), 409,
            "disclosure-state")  # fmt: skip


def test_emergency_needs_one_approver_then_an_after_review_overdue_after_24h(
    vault: Vault, reg: Register, small_media: bytes
) -> None:
    d = reg.new([vault.ingest(small_media, call_id="call-1")], emergency=True)
    assert d["approvals_required"] == ["any"]
    r = reg.approve("security", d)
    assert r.json()["status"] == "approved" and r.json()["review_due_at"] is not None
    assert reg.act(d, "disclose").status_code == 201  # at once
    vault.clock.advance(hours=24, seconds=1)
    late = reg.get(d).json()
    assert late["review_overdue"] is True
    with vault.ctx.db.session() as s:
        samples = {n: v for n, _, v in disclosure_metrics(s, now=vault.clock(), policy=None)}
    assert samples["callvault_disclosure_review_overdue"] == 1
    report = vault.client.get(
        "/v1/reports/evidence", headers=vault.h("privacy"),
        params={"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "tenant": "acme"},
    )  # fmt: skip
    assert report.status_code == 200, report.text
    section = __import__("json").loads(report.json()["statement"])["disclosures"]
    assert section["review_overdue"] == 1 and section["emergency"] == 1
    reason = {"reason": "reviewed: the threat to life was documented"}
    problem(reg.act(d, "review", reason, who="privacy"), 403, "forbidden")  # the requester
    problem(reg.act(d, "review", reason, who="security"), 403, "forbidden")  # the approver
    done = reg.act(d, "review", reason, who="security2")
    assert done.status_code == 200 and done.json()["review_overdue"] is False
    (event,) = vault.events("disclosure.review")
    assert event["details"]["overdue"] is True


def test_another_tenants_recordings_are_out_of_scope(
    vault: Vault, reg: Register, small_media: bytes
) -> None:
    mine = vault.ingest(small_media, call_id="shared-call")
    theirs = vault.ingest(small_media, call_id="shared-call", tenant="globex")
    problem(reg.create(recording_ids=[str(theirs)]), 404, "not-found")
    problem(reg.create(tenant="globex", call_ids=["shared-call"]), 403, "forbidden")
    problem(reg.create(who="privacy-all", recording_ids=[str(mine), str(theirs)]), 422,
            "disclosure-scope-invalid")  # fmt: skip
    r = reg.create(tenant="acme", call_ids=["shared-call"])
    assert r.status_code == 201 and r.json()["recording_ids"] == [str(mine)]
    problem(reg.get(r.json(), who="privacy-globex"), 404, "not-found")
    listed = vault.client.get("/v1/disclosures", headers=vault.h("privacy-globex")).json()
    assert listed == []
    assert "shared-call" not in vault.audit_text()
    problem(reg.create(tenant="acme", call_ids=["no-such-call"]), 422, "disclosure-scope-invalid")


def test_a_recording_disposed_of_cannot_be_disclosed(
    vault: Vault, reg: Register, small_media: bytes
) -> None:
    from vault.authz import Actor
    from vault.recordings import metadata as recordings
    from vault.retention import disposal

    rid = vault.ingest(small_media, call_id="call-1")
    d = reg.approved(reg.new([rid]))
    with vault.ctx.db.transaction() as s:
        for purpose in ("troubleshooting", "security"):
            recordings.end_purpose(s, actor=Actor.operator(), recording_id=rid, purpose=purpose,
                                   reason=None, now=vault.clock())  # fmt: skip
    assert disposal.dispose(vault.ctx, now=vault.clock()).disposed == 1
    problem(reg.act(d, "disclose"), 422, "disclosure-scope-invalid")
    problem(reg.create(recording_ids=[str(rid)]), 422, "disclosure-scope-invalid")
    assert reg.exports() == []


def test_a_restricted_recording_may_be_disclosed_and_is_flagged(
    vault: Vault, reg: Register, small_media: bytes
) -> None:
    rid = vault.ingest(small_media, call_id="call-1")
    assert vault.restrict(rid).status_code == 201
    d = reg.new([rid])
    assert d["restricted_recording_ids"] == [str(rid)]
    (event,) = vault.events("disclosure.receive")
    assert event["details"]["restricted_recording_ids"] == [str(rid)]
    assert reg.act(reg.approved(d), "disclose").status_code == 201


@pytest.mark.parametrize(
    ("recipient", "code"),
    [
        ("age1notakey", "disclosure-recipient-invalid"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIbogus", "disclosure-recipient-invalid"),
        ("", "invalid-input"),  # the schema's bounds answer first
        ("x" * 300, "invalid-input"),
    ],
    ids=["bad-age", "ssh-key", "empty", "long"],
)
def test_a_recipient_that_is_no_age_key_is_refused_and_registers_nothing(
    vault: Vault, reg: Register, small_media: bytes, recipient: str, code: str
) -> None:
    rid = vault.ingest(small_media, call_id="call-r")
    problem(reg.create(recording_ids=[str(rid)], recipient=recipient), 422, code)
    assert vault.client.get("/v1/disclosures", headers=vault.h("privacy")).json() == []
