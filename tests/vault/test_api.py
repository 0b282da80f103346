"""HTTP API v1 in-process (TestClient) on both backends: auth, bad input, isolation, problems."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlmodel import func, select

from tests.support.api import principal_key
from vault import audit
from vault.app import create_app
from vault.context import Context
from vault.models import AuditEvent, Recording, Tenant
from vault.setup import initialise

PROBLEM = "application/problem+json"
TYPE = "https://callvault.dev/problems/"


@dataclass
class Api:
    client: TestClient
    ctx: Context
    admin: str
    keys: dict[str, str]

    def h(self, who: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}", **extra}



@pytest.fixture
def api(ctx: Context) -> Iterator[Api]:
    admin = initialise(ctx, now=ctx.now())
    assert admin and admin.startswith("cvk_")
    app = create_app(ctx.settings, ctx=ctx)
    with TestClient(app) as client:
        for name in ("acme", "globex"):
            r = client.post(
                "/v1/tenants", json={"name": name}, headers={"Authorization": f"Bearer {admin}"}
            )
            assert r.status_code == 201, r.text
        keys = {
            "ingest-acme": principal_key(ctx, "ingest-acme", "ingest", ["acme"]),
            "ingest-globex": principal_key(ctx, "ingest-globex", "ingest", ["globex"]),
            "eng-acme": principal_key(ctx, "eng-acme", "engineer", ["acme"]),
            "privacy": principal_key(ctx, "privacy", "privacy", []),
            "auditor": principal_key(ctx, "auditor", "auditor", []),
            "monitor": principal_key(ctx, "monitor", "monitor", []),
        }
        yield Api(client=client, ctx=ctx, admin=admin, keys=keys)


def _ingest(
    api: Api,
    body: bytes,
    *,
    who: str = "ingest-acme",
    tenant: str = "acme",
    purposes: str = "troubleshooting",
    ctype: str = "video/mp4",
    **headers: str,
):  # type: ignore[no-untyped-def]
    return api.client.post(
        "/v1/recordings", params={"tenant": tenant, "purposes": purposes, "call_id": "call-42"},
        content=body, headers=api.h(who, **{"Content-Type": ctype, **headers}),
    )  # fmt: skip


def _counts(ctx: Context) -> tuple[int, int]:
    with ctx.db.session() as s:
        rows = s.exec(select(func.count()).select_from(Recording)).one()
    objects = 0
    root = ctx.settings.blob_dir
    if root is not None:
        objects = sum(1 for p in root.rglob("*") if p.is_file())
    else:
        client = ctx.store.client  # type: ignore[attr-defined]
        objects = sum(
            1 for _ in client.list_objects(ctx.store.bucket, recursive=True, include_version=True)
        )  # type: ignore[attr-defined]
    return rows, objects


def test_ingest_and_metadata(api: Api) -> None:
    body = os.urandom(200_000) + b"MARKER-PLAINTEXT"
    r = _ingest(api, body, **{"X-Content-SHA256": hashlib.sha256(body).hexdigest()})
    assert r.status_code == 201, r.text
    rec = r.json()
    assert rec["status"] == "stored" and rec["size"] == len(body)
    assert rec["sha256"] == hashlib.sha256(body).hexdigest()
    assert rec["content_type"] == "video/mp4" and rec["tenant"] == "acme"
    assert [p["purpose"] for p in rec["purposes"]] == ["troubleshooting"]
    got = api.client.get(f"/v1/recordings/{rec['id']}", headers=api.h("eng-acme"))
    assert got.status_code == 200 and got.json()["id"] == rec["id"]
    page = api.client.get("/v1/recordings", params={"tenant": "acme"}, headers=api.h("eng-acme"))
    assert [i["id"] for i in page.json()["items"]] == [rec["id"]]


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("content_type", 415, "unsupported-media-type"),
        ("unknown_tenant", 403, "forbidden"),
        ("unknown_tenant_admin_scope", 422, "unknown-tenant"),
        ("unknown_purpose", 422, "unknown-purpose"),
        ("no_purposes", 422, "invalid-input"),
        ("bad_sha", 422, "checksum-mismatch"),
        ("malformed_sha", 422, "invalid-input"),
        ("empty_body", 400, "empty-body"),
        ("missing_key", 401, "unauthenticated"),
        ("invalid_key", 401, "unauthenticated"),
        ("other_tenant", 403, "forbidden"),
        ("wrong_role", 403, "forbidden"),
    ],
)
def test_bad_ingest_stores_nothing(api: Api, case: str, status: int, code: str) -> None:
    body = b"some media bytes" * 1000
    if case == "unknown_tenant_admin_scope":
        api.keys["ingest-all"] = principal_key(api.ctx, "ingest-all", "ingest", [])
    kwargs: dict[str, object] = {
        "content_type": {"ctype": "text/html"},
        "unknown_tenant": {"tenant": "nope"},
        "unknown_tenant_admin_scope": {"tenant": "nope", "who": "ingest-all"},
        "unknown_purpose": {"purposes": "marketing"},
        "no_purposes": {"purposes": ""},
        "bad_sha": {"X-Content-SHA256": "0" * 64},
        "malformed_sha": {"X-Content-SHA256": "xyz"},
        "other_tenant": {"tenant": "globex"},
        "wrong_role": {"who": "eng-acme"},
    }.get(case, {})  # type: ignore[assignment]
    if case == "empty_body":
        body = b""
    if case in ("missing_key", "invalid_key"):
        headers = {"Content-Type": "video/mp4"}
        if case == "invalid_key":
            headers["Authorization"] = "Bearer cvk_" + "A" * 43
        r = api.client.post("/v1/recordings", params={"tenant": "acme", "purposes": "fraud"},
                            content=body, headers=headers)  # fmt: skip
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    else:
        r = _ingest(api, body, **kwargs)  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"] == TYPE + code
    assert _counts(api.ctx) == (0, 0)


def test_tenant_isolation(api: Api) -> None:
    rid = _ingest(api, b"x" * 5000, who="ingest-globex", tenant="globex").json()["id"]
    absent = str(uuid.uuid4())
    missing = api.client.get(f"/v1/recordings/{absent}", headers=api.h("eng-acme"))
    other = api.client.get(f"/v1/recordings/{rid}", headers=api.h("eng-acme"))
    # Another tenant's recording is indistinguishable from a missing one.
    assert other.status_code == missing.status_code == 404
    assert other.text.replace(rid, "ID") == missing.text.replace(absent, "ID")
    page = api.client.get("/v1/recordings", params={"tenant": "globex"}, headers=api.h("eng-acme"))
    assert page.status_code == 200 and page.json()["items"] == []
    listed = api.client.get("/v1/recordings", headers=api.h("eng-acme")).json()["items"]
    assert rid not in [i["id"] for i in listed]


def _denials(api: Api) -> list[dict[str, object]]:
    with api.ctx.db.session() as s:
        rows = s.exec(select(AuditEvent).where(AuditEvent.action == "permission.denied")).all()
        return [audit.to_public(r).model_dump(mode="json") for r in rows]


@pytest.mark.parametrize("tenant", ["acme", "no-such-tenant"])
def test_a_write_to_a_tenant_outside_scope_is_refused_and_audited(api: Api, tenant: str) -> None:
    """An ingest key of globex posting to acme (or to a tenant that does not exist, which it
    must not be able to tell apart) gets 403, and the denial is on the chain like a role denial,
    about the named tenant when it exists, else about the caller's own tenant."""
    before = len(_denials(api))
    r = _ingest(api, b"z" * 100, who="ingest-globex", tenant=tenant)
    assert r.status_code == 403 and r.json()["type"] == TYPE + "forbidden"
    assert _counts(api.ctx) == (0, 0)
    (denial,) = _denials(api)[before:]
    assert denial["details"]["permission"] == "recording:ingest"  # type: ignore[index]
    assert denial["details"]["reason"] == "tenant-scope"  # type: ignore[index]
    with api.ctx.db.session() as s:
        tenants = {t.name: str(t.id) for t in s.exec(select(Tenant)).all()}
    assert denial["tenant_id"] == tenants["acme" if tenant == "acme" else "globex"]
    assert "no-such-tenant" not in str(denial)


def test_nobody_reads_content_by_role(api: Api) -> None:
    rid = _ingest(api, b"y" * 5000).json()["id"]
    for who in [None, *api.keys]:
        headers = api.h(who) if who else {"Authorization": f"Bearer {api.admin}"}
        r = api.client.get(f"/v1/recordings/{rid}/content", headers=headers)
        assert r.status_code in (403, 404), (who, r.status_code)
        assert r.headers["content-type"] == PROBLEM


def test_end_purpose(api: Api) -> None:
    rid = _ingest(api, b"z" * 5000, purposes="troubleshooting,fraud").json()["id"]
    r = api.client.delete(f"/v1/recordings/{rid}/purposes/fraud", headers=api.h("privacy"))
    assert r.status_code == 200, r.text
    fraud = next(p for p in r.json()["purposes"] if p["purpose"] == "fraud")
    assert fraud["active"] is False and fraud["ended_at"]
    again = api.client.delete(f"/v1/recordings/{rid}/purposes/fraud", headers=api.h("privacy"))
    assert again.status_code == 409 and again.json()["type"] == TYPE + "conflict"
    denied = api.client.delete(
        f"/v1/recordings/{rid}/purposes/troubleshooting", headers=api.h("eng-acme")
    )
    assert denied.status_code == 403


def test_audit_endpoints_and_no_call_ids(api: Api) -> None:
    _ingest(api, b"w" * 5000)
    api.client.get("/v1/recordings", headers={"Authorization": "Bearer cvk_nonsense"})
    events = api.client.get("/v1/audit", headers=api.h("auditor"))
    assert events.status_code == 200
    actions = [e["action"] for e in events.json()]
    assert "recording.ingest" in actions and "auth.denied" in actions
    assert "call-42" not in events.text  # audit rows outlive erasure: no call ids
    verify = api.client.get("/v1/audit/verify", headers=api.h("auditor"))
    assert verify.json()["ok"] is True
    assert api.client.get("/v1/audit", headers=api.h("eng-acme")).status_code == 403


def test_unauthenticated_flood_is_aggregated(api: Api) -> None:
    with api.ctx.db.session() as s:
        before = s.exec(select(func.count()).select_from(AuditEvent)).one()
    flood = {"Authorization": "Bearer cvk_flooder"}
    statuses = [api.client.get("/v1/recordings", headers=flood).status_code for _ in range(200)]
    # Unauthenticated until the address's failure limit, then throttled (429, Retry-After).
    limit = api.ctx.settings.auth_failure_limit
    assert statuses[:limit] == [401] * limit and set(statuses[limit:]) == {429}
    with api.ctx.db.session() as s:
        after = s.exec(select(func.count()).select_from(AuditEvent)).one()
    assert after - before <= api.ctx.settings.auth_denial_burst + 2


def test_problem_json_everywhere(api: Api) -> None:
    for r in (
        api.client.get("/v1/nothing-here"),
        api.client.put("/healthz"),
        api.client.get("/v1/recordings/not-a-uuid", headers=api.h("eng-acme")),
        api.client.get("/v1/recordings", params={"limit": 0}, headers=api.h("eng-acme")),
        api.client.get("/v1/recordings", params={"cursor": "!!"}, headers=api.h("eng-acme")),
        api.client.post(
            "/v1/tenants", json={"name": "../x"}, headers={"Authorization": f"Bearer {api.admin}"}
        ),
    ):
        assert 400 <= r.status_code < 500, r.text
        assert r.headers["content-type"] == PROBLEM
        assert r.json()["type"].startswith(TYPE)


def test_health(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    ready = api.client.get("/readyz")
    assert ready.status_code == 200 and set(ready.json()["checks"].values()) == {"ok"}
    metrics = api.client.get("/metrics", headers=api.h("monitor"))
    assert "callvault_http_requests_total" in metrics.text


def test_audit_chain_verifies_after_api_use(api: Api) -> None:
    _ingest(api, b"v" * 5000)
    with api.ctx.db.session() as s:
        assert audit.verify(s).ok
