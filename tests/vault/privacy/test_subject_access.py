"""Subject access, end to end on both databases: what exists about some calls, who accessed it,
what erasure did, what cannot be linked any more, and nothing of it in the audit chain."""

from __future__ import annotations

import json
import uuid

import pytest
from typer.testing import CliRunner

from tests.jobs.helpers import cli_env
from tests.vault.privacy.conftest import Vault, problem
from vault.authz import Actor
from vault.cli import app
from vault.privacy.subject_access import UNLINKABLE
from vault.recordings import metadata as recordings
from vault.retention import disposal, erasure

LIVE, GONE, PENDING_ERASURE = "call-live-4711", "call-gone-0815", "call-erase-2024"


def _ask(v: Vault, call_ids: list[str], who: str = "privacy", tenant: str = "acme") -> dict:
    r = v.post(who, "/v1/subject-access", {"tenant": tenant, "call_ids": call_ids})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def calls(vault: Vault, media: bytes) -> dict[str, uuid.UUID]:
    """A live recording that was requested, approved and read; one disposed by retention; one
    under a pending erasure request; and another tenant's recording under the same call id."""
    ctx = vault.ctx
    live = vault.ingest(media, call_id=LIVE)
    req = vault.request(live).json()
    approved = vault.post("approver", f"/v1/access-requests/{req['id']}/approve", {})
    assert approved.status_code == 200, approved.text
    read = vault.client.get(
        f"/v1/recordings/{live}/content", headers={**vault.h("eng"), "Range": "bytes=0-99"}
    )
    assert read.status_code == 206
    gone = vault.ingest(media, call_id=GONE)
    with ctx.db.transaction() as s:
        for purpose in ("troubleshooting", "security"):
            recordings.end_purpose(
                s, actor=Actor.operator(), recording_id=gone, purpose=purpose,
                reason=None, now=ctx.now(),
            )  # fmt: skip
    assert disposal.dispose(ctx, now=ctx.now()).disposed == 1
    erase = vault.ingest(media, call_id=PENDING_ERASURE)
    with ctx.db.transaction() as s:
        erasure.create_request(
            s, actor=vault.actors["privacy"], policy=ctx.policy, tenant="acme",
            call_id=PENDING_ERASURE, reason="data subject deletion request", now=ctx.now(),
        )  # fmt: skip
    other = vault.ingest(media, call_id=LIVE, tenant="globex")
    return {"live": live, "gone": gone, "erase": erase, "other": other, "grant": approved}


def test_the_answer_shows_live_recordings_and_who_accessed_them(vault: Vault, calls: dict) -> None:
    answer = _ask(vault, [LIVE])
    assert answer["type"] == "callvault.subject-access" and answer["version"] == 1
    (rec,) = answer["recordings"]  # the other tenant's recording with the same call id is not
    assert rec["id"] == str(calls["live"]) and rec["call_id"] == LIVE
    assert {p["purpose"] for p in rec["purposes"]} == {"troubleshooting", "security"}
    assert all(p["expires_at"] and p["active"] for p in rec["purposes"])
    assert rec["holds"] == [] and rec["derivatives"] == [] and rec["restricted"] is False
    (access,) = rec["accesses"]
    assert access["principal_id"] == str(vault.actors["eng"].id)  # pseudonymous, no e-mail
    assert access["purpose"] == "troubleshooting" and access["ticket"] == "OPS-42"
    (one_read,) = access["reads"]
    assert one_read["range"] == [0, 100] and one_read["principal_id"] == access["principal_id"]
    assert "@" not in str(answer)  # no owner e-mail anywhere
    assert answer["call_ids_without_live_recordings"] == []


def test_a_disposed_recording_is_reported_as_unlinkable_and_no_call_id_is_audited(
    vault: Vault, calls: dict
) -> None:
    answer = _ask(vault, [GONE, LIVE, PENDING_ERASURE])
    found = {r["id"]: r["call_id"] for r in answer["recordings"]}
    assert found == {str(calls["live"]): LIVE, str(calls["erase"]): PENDING_ERASURE}
    assert answer["call_ids_without_live_recordings"] == [GONE]
    assert answer["unlinkable"] == UNLINKABLE
    # The pending erasure request still names its recording, with its deadline.
    (pending,) = answer["erasure_requests"]
    assert pending["status"] == "pending" and pending["due_at"]
    # Audited with an opaque id and counts: no call id in this event, nor anywhere in the chain.
    (event,) = vault.events("privacy.subject_access")
    assert event["details"] == {
        "request_id": answer["request_id"], "call_ids": 3, "recordings": 2, "derivatives": 0,
        "erasure_requests": 1, "disclosures": 0, "handoffs": 0,
    }  # fmt: skip
    assert event["target"] == answer["request_id"]
    text = vault.audit_text()
    assert not any(c in text for c in (GONE, LIVE, PENDING_ERASURE))


def test_another_tenants_calls_follow_the_scope_rules(vault: Vault, calls: dict) -> None:
    # A tenant named outside the caller's scope is a 403 (and a denial in the audit).
    r = vault.post("privacy", "/v1/subject-access", {"tenant": "globex", "call_ids": [LIVE]})
    problem(r, 403, "forbidden")
    # Within its own tenant the other tenant's recording never shows, whatever the call id.
    answer = _ask(vault, [LIVE], who="privacy-globex", tenant="globex")
    assert [x["id"] for x in answer["recordings"]] == [str(calls["other"])]
    assert answer["recordings"][0]["accesses"] == []


def test_bad_requests_are_problems(vault: Vault) -> None:
    def ask(body: dict, who: str = "privacy") -> object:
        return vault.post(who, "/v1/subject-access", body)

    problem(ask({"tenant": "acme", "call_ids": []}), 422, "invalid-input")
    problem(ask({"tenant": "acme", "call_ids": ["a", "a"]}), 422, "invalid-input")
    problem(ask({"tenant": "acme", "call_ids": ["x" * 300]}), 422, "invalid-input")
    problem(
        ask({"tenant": "acme", "call_ids": [f"c{i}" for i in range(101)]}), 422, "invalid-input"
    )
    problem(ask({"tenant": "acme"}), 422, "invalid-input")
    problem(ask({"tenant": "acme", "call_ids": ["c"], "extra": 1}), 422, "invalid-input")
    problem(ask({"tenant": "nope", "call_ids": ["c"]}), 403, "forbidden")  # scoped: as foreign
    problem(ask({"tenant": "nope", "call_ids": ["c"]}, "privacy-all"), 422, "unknown-tenant")
    problem(ask({"tenant": "acme", "call_ids": ["c"]}, "eng"), 403, "forbidden")
    assert vault.events("privacy.subject_access") == []


def test_the_cli_prints_the_answer_and_fails_in_one_line(vault: Vault, calls: dict) -> None:
    env = cli_env(vault.ctx.settings)
    args = ["subject-access", "--tenant", "acme", "--call-id", LIVE, "--call-id", GONE]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert [r["id"] for r in doc["recordings"]] == [str(calls["live"])]
    assert doc["call_ids_without_live_recordings"] == [GONE]
    bad = CliRunner().invoke(app, ["subject-access", "--tenant", "nope", "--call-id", "c"], env=env)
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1
    assert "unknown tenant" in bad.output
