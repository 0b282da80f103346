"""The registry: admin writes, staff read, everyone sees the public list (without the contract
or the key); the subprocessor role is bound to one entry and refused everywhere else."""

from __future__ import annotations

import json

import pyrage
import pytest

from tests.jobs.helpers import events
from tests.vault.subprocessors.conftest import OP, SCRIBE, World
from vault.errors import ConflictError, InvalidInputError
from vault.identity import principals
from vault.identity.owners import owner_of

PROBLEM = "https://callvault.dev/problems/"


def _body(name: str = "newscribe", **over: str) -> dict[str, str]:
    key = str(pyrage.x25519.Identity.generate().to_public())
    return {**SCRIBE, "name": name, "age_recipient": key, **over}


def test_an_admin_adds_an_entry_staff_read_it_and_the_change_is_audited(lite: World) -> None:
    r = lite.client.post("/v1/subprocessors", json=_body(), headers=lite.h("admin"))
    assert r.status_code == 201, r.text
    added = r.json()
    assert added["age_fingerprint"].startswith("SHA256:")
    listed = lite.client.get("/v1/subprocessors", headers=lite.h("eng"))
    assert listed.status_code == 200
    assert {s["name"] for s in listed.json()} == {"scribe", "otherscribe", "newscribe"}
    (event,) = [e for e in events(lite.ctx, "subprocessor.add") if e.target == added["id"]]
    details = json.loads(event.canonical)["details"]
    assert details["age_fingerprint"] == added["age_fingerprint"]
    assert "contract_ref" not in details


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (_body(age_recipient="age1notakey"), 422, "subprocessor-key-invalid"),
        (_body(age_recipient="ssh-ed25519 AAAA"), 422, "subprocessor-key-invalid"),
        (_body(purpose="marketing"), 422, "unknown-purpose"),
        (_body(name="scribe"), 409, "conflict"),  # names are never reused
        ({**_body(), "secret": "x"}, 422, "invalid-input"),
    ],
    ids=["bad-key", "ssh-key", "unknown-purpose", "same-name", "extra-field"],
)
def test_bad_entries_are_refused(lite: World, body: dict, status: int, code: str) -> None:
    r = lite.client.post("/v1/subprocessors", json=body, headers=lite.h("admin"))
    assert r.status_code == status and r.json()["type"] == PROBLEM + code, r.text


@pytest.mark.parametrize("who", ["eng", "dpo", "sp"])
def test_only_an_admin_writes_the_registry(lite: World, who: str) -> None:
    r = lite.client.post("/v1/subprocessors", json=_body(), headers=lite.h(who))
    assert r.status_code == 403
    r = lite.client.post("/v1/subprocessors/scribe/remove", json={"reason": "x"},
                         headers=lite.h(who))  # fmt: skip
    assert r.status_code == 403


def test_a_name_removed_stays_removed(lite: World) -> None:
    lite.client.post("/v1/subprocessors/otherscribe/remove", json={"reason": "ended"},
                     headers=lite.h("admin"))  # fmt: skip
    again = lite.client.post("/v1/subprocessors/otherscribe/remove", json={"reason": "ended"},
                             headers=lite.h("admin"))  # fmt: skip
    assert again.status_code == 409
    missing = lite.client.post("/v1/subprocessors/nobody/remove", json={"reason": "x"},
                               headers=lite.h("admin"))  # fmt: skip
    assert missing.status_code == 404


def test_the_public_list_shows_history_and_nothing_secret(lite: World) -> None:
    lite.client.post("/v1/subprocessors/otherscribe/remove", json={"reason": "contract ended"},
                     headers=lite.h("admin"))  # fmt: skip
    html = lite.client.get("/subprocessors")  # no key at all
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in html.headers["content-security-policy"]
    as_json = lite.client.get("/subprocessors.json").json()
    negotiated = lite.client.get("/subprocessors", headers={"Accept": "application/json"})
    assert negotiated.json() == as_json
    rows = {r["name"]: r for r in as_json}
    assert rows["otherscribe"]["removed_at"] is not None and rows["scribe"]["removed_at"] is None
    assert set(rows["scribe"]) == {"name", "purpose", "region", "added_at", "removed_at"}
    assert rows["otherscribe"]["removed_at"][:10] in html.text
    for text in (html.text, json.dumps(as_json)):
        assert "DPA-2026-017" not in text and "age1" not in text and "contract ended" not in text


def test_the_public_page_escapes_what_an_admin_wrote(lite: World) -> None:
    r = lite.client.post("/v1/subprocessors", json=_body(region="<script>x</script>"),
                         headers=lite.h("admin"))  # fmt: skip
    assert r.status_code == 201
    page = lite.client.get("/subprocessors").text
    assert "<script>" not in page and "&lt;script&gt;" in page


BODIES = {
    "/v1/subprocessors": _body(),
    "/v1/access-requests": {"recording_ids": [], "purpose": "transcription", "ticket": "T-1",
                            "reason": "Checking the transcript quality", "duration_minutes": 30},
    "/v1/subject-access": {"tenant": "acme", "call_ids": ["call-1"]},
}  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/recordings?tenant=acme"),
        ("get", "/v1/subprocessors"),
        ("post", "/v1/subprocessors"),
        ("get", "/v1/audit"),
        ("get", "/metrics"),
        ("get", "/v1/grants"),
        ("post", "/v1/access-requests"),
        ("post", "/v1/subject-access"),
        ("get", "/v1/tenants/acme/policy"),
    ],
)
def test_the_subprocessor_role_is_refused_everywhere_else(
    lite: World, method: str, path: str
) -> None:
    body = BODIES.get(path, {})
    if path == "/v1/access-requests":
        body = {**body, "recording_ids": [str(lite.rid)]}
    kwargs = {"json": body} if method == "post" else {}
    r = getattr(lite.client, method)(path, headers=lite.h("sp"), **kwargs)
    assert r.status_code == 403 and r.json()["type"] == PROBLEM + "forbidden", r.text


def test_staff_cannot_use_the_handoff_endpoints(lite: World) -> None:
    lite.run_job()
    (item,) = lite.handoffs()
    for who in ("admin", "eng", "dpo"):
        assert lite.client.get("/v1/handoffs", headers=lite.h(who)).status_code == 403
        r = lite.client.post(f"/v1/handoffs/{item['id']}/claim", headers=lite.h(who))
        assert r.status_code == 403


def test_a_subprocessor_principal_is_bound_to_one_listed_entry(lite: World) -> None:
    owner = owner_of(lite.ctx.keys, "bot@scribe.example")
    with lite.ctx.db.transaction() as s, pytest.raises(InvalidInputError, match="bound"):
        principals.add_principal(s, actor=OP, name="unbound", role="subprocessor", owner=owner,
                                 tenants=[], all_tenants=True, now=lite.clock())  # fmt: skip
    with lite.ctx.db.transaction() as s, pytest.raises(ConflictError, match="at creation"):
        principals.set_role(s, actor=OP, name="scribe-bot", role="engineer", now=lite.clock())
    with lite.ctx.db.transaction() as s, pytest.raises(ConflictError, match="at creation"):
        principals.set_role(s, actor=OP, name="eng", role="subprocessor", now=lite.clock())


def test_the_cli_binds_a_subprocessor_principal_to_a_listed_entry(lite: World) -> None:
    from typer.testing import CliRunner

    from tests.jobs.helpers import cli_env
    from vault.cli import app

    runner, env = CliRunner(), cli_env(lite.ctx.settings)
    base = ["principal", "add", "bot2", "--owner", "ops@scribe.example"]
    ok = runner.invoke(app, [*base, "--role", "subprocessor", "--subprocessor", "scribe"], env=env)
    assert ok.exit_code == 0, ok.output
    key = ok.output.strip().splitlines()[-1]
    assert lite.client.get("/v1/handoffs", headers={"Authorization": f"Bearer {key}"}).json() == []
    for extra in (["--role", "engineer", "--subprocessor", "scribe", "--tenant", "acme"],
                  ["--role", "subprocessor", "--subprocessor", "scribe", "--all-tenants"],
                  ["--role", "subprocessor", "--all-tenants"],
                  ["--role", "subprocessor", "--subprocessor", "nobody"]):  # fmt: skip
        refused = runner.invoke(app, [*base[:2], "bot3", *base[3:], *extra], env=env)
        assert refused.exit_code == 2, (extra, refused.output)


def test_the_openapi_document_shows_the_public_list_without_a_key(lite: World) -> None:
    paths = lite.client.get("/openapi.json").json()["paths"]
    for path in ("/subprocessors", "/subprocessors.json"):
        assert "security" not in paths[path]["get"]
    assert paths["/v1/handoffs"]["get"]["security"] == [{"bearerAuth": []}]
    body = paths["/v1/handoffs/{handoff_id}/transcript"]["post"]["requestBody"]
    assert set(body["content"]) == {"application/octet-stream"}


def test_a_name_with_a_control_character_is_invalid_input_not_an_error(lite: World) -> None:
    r = lite.client.post("/v1/subprocessors/a%00b/remove", json={"reason": "x"},
                         headers=lite.h("admin"))  # fmt: skip
    assert r.status_code == 422 and r.json()["type"] == PROBLEM + "invalid-input"
