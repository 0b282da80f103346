"""Hardening of the API edge: bad input is a 4xx problem that stores nothing, and abuse is bounded.

Each case here answered 500 (or was accepted) before: control characters in free text, datetimes
and integers out of range, booleans taken for numbers, a Content-Type carrying markup, an open
``/metrics``, unbounded bodies and unlimited failed authentications.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import func, select

from tests.support.api import Api, principal_key
from vault.app import create_app
from vault.context import Context
from vault.models import Recording
from vault.setup import initialise

PROBLEM = "application/problem+json"
TYPE = "https://callvault.dev/problems/"
NUL, BELL, DEL = "\x00", "\x07", "\x7f"


@pytest.fixture
def api(make_ctx: Callable[..., Context], backend: tuple[str, str]) -> Iterator[Api]:
    ctx = make_ctx(db=backend[0], store=backend[1], max_ingest_bytes=50_000,
                   auth_failure_limit=5, trusted_proxies=["10.0.0.0/8"])  # fmt: skip
    admin = initialise(ctx, now=ctx.now())
    with TestClient(create_app(ctx.settings, ctx=ctx)) as client:
        as_admin = {"Authorization": f"Bearer {admin}"}
        client.post("/v1/tenants", json={"name": "acme"}, headers=as_admin)
        keys = {
            "ingest": principal_key(ctx, "ingest", "ingest", ["acme"]),
            "eng": principal_key(ctx, "eng", "engineer", ["acme"]),
            "privacy": principal_key(ctx, "privacy", "privacy", []),
            "auditor": principal_key(ctx, "auditor", "auditor", []),
            "monitor": principal_key(ctx, "monitor", "monitor", []),
        }
        yield Api(client=client, ctx=ctx, keys=keys)


def _problem(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"] == TYPE + code


def _recordings(ctx: Context) -> int:
    with ctx.db.session() as s:
        return int(s.exec(select(func.count()).select_from(Recording)).one())


def _ingest(api: Api, body: bytes = b"media" * 100, ctype: str = "video/mp4", **params: str) -> Any:
    query = {"tenant": "acme", "purposes": "troubleshooting", **params}
    headers = {**api.h("ingest"), "Content-Type": ctype}
    return api.client.post("/v1/recordings", params=query, content=body, headers=headers)


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [NUL, BELL, DEL, "\x85"])
def test_control_characters_in_ingest_fields_are_refused(api: Api, bad: str) -> None:
    for field in ("call_id", "tenant", "purposes"):
        value = {"tenant": "acme", "purposes": "troubleshooting", "call_id": "c-1"}[field]
        _problem(_ingest(api, **{field: value + bad}), 422, "invalid-input")
    assert _recordings(api.ctx) == 0


@pytest.mark.parametrize("field", ["call_id", "tenant", "purpose", "status", "cursor"])
def test_control_characters_in_list_filters_are_refused(api: Api, field: str) -> None:
    r = api.client.get("/v1/recordings", params={field: f"x{NUL}y"}, headers=api.h("eng"))
    _problem(r, 422, "invalid-input")


@pytest.mark.parametrize("field", ["case_ref", "reason", "call_id", "tenant"])
def test_control_characters_in_holds_and_erasure_are_refused(api: Api, field: str) -> None:
    hold = {"case_ref": "CASE-1", "reason": "litigation", "tenant": "acme", field: f"a{NUL}b"}
    _problem(api.client.post("/v1/legal-holds", json=hold, headers=api.h("privacy")),
             422, "invalid-input")  # fmt: skip
    if field in ("call_id", "tenant"):
        wipe = {"tenant": "acme", "call_id": "c-1", field: f"a{NUL}b"}
        _problem(api.client.post("/v1/erasure-requests", json=wipe, headers=api.h("privacy")),
                 422, "invalid-input")  # fmt: skip


@pytest.mark.parametrize(
    "when", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "2026-01-01T00:00:00"]
)
def test_datetimes_out_of_range_or_naive_are_refused(api: Api, when: str) -> None:
    _problem(_ingest(api, recorded_at=when), 422, "invalid-input")
    hold = {"case_ref": "CASE-1", "reason": "r", "tenant": "acme", "recorded_from": when}
    _problem(api.client.post("/v1/legal-holds", json=hold, headers=api.h("privacy")),
             422, "invalid-input")  # fmt: skip
    assert _recordings(api.ctx) == 0


@pytest.mark.parametrize("value", ["9223372036854775808", "1e20", "-1"])
def test_integers_beyond_their_column_are_refused(api: Api, value: str) -> None:
    for path, name in (("/v1/audit", "after_seq"), ("/v1/audit/checkpoints", "after_id")):
        r = api.client.get(path, params={name: value}, headers=api.h("auditor"))
        _problem(r, 422, "invalid-input")


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_not_a_duration(api: Api, value: bool) -> None:
    rid = _ingest(api).json()["id"]
    body = {"recording_ids": [rid], "purpose": "troubleshooting", "ticket": "OPS-1",
            "reason": "one-way audio on the call", "duration_minutes": value}  # fmt: skip
    _problem(api.client.post("/v1/access-requests", json=body, headers=api.h("eng")),
             422, "invalid-input")  # fmt: skip


@pytest.mark.parametrize(
    "ctype",
    ['video/mp4; codecs="<script>alert(1)</script>"', "video/mp4; charset=utf-8",
     "video/mp4; codecs=a;b", "video/mp4\r\nX-Injected: 1", "text/html", "video/"],
)  # fmt: skip
def test_content_type_outside_the_grammar_is_refused(api: Api, ctype: str) -> None:
    try:
        r = _ingest(api, ctype=ctype)
    except Exception as exc:  # the HTTP client itself may refuse a header with a newline
        assert "\r\n" in ctype, exc
        return
    _problem(r, 415, "unsupported-media-type")
    assert _recordings(api.ctx) == 0


def test_content_type_is_stored_normalised(api: Api) -> None:
    r = _ingest(api, ctype='Video/MP4 ;CODECS = "avc1.42E01E, mp4a.40.2"')
    assert r.status_code == 201, r.text
    assert r.json()["content_type"] == 'video/mp4; codecs="avc1.42E01E, mp4a.40.2"'


# --- abuse limits ---------------------------------------------------------------------------------


def test_metrics_need_the_metrics_permission(api: Api) -> None:
    _problem(api.client.get("/metrics"), 401, "unauthenticated")
    _problem(api.client.get("/metrics", headers=api.h("eng")), 403, "forbidden")
    r = api.client.get("/metrics", headers=api.h("monitor"))
    assert r.status_code == 200 and "callvault_http_requests_total" in r.text
    # The monitor role reads metrics and nothing else.
    _problem(api.client.get("/v1/recordings", headers=api.h("monitor")), 403, "forbidden")


def test_a_body_over_the_maximum_is_refused_before_anything_is_stored(api: Api) -> None:
    _problem(_ingest(api, body=b"x" * 50_001), 413, "payload-too-large")
    # Without a Content-Length (chunked), the stream is cut at the limit and cleaned up.
    chunks = iter([b"x" * 30_000, b"y" * 30_000])
    r = api.client.post(
        "/v1/recordings", params={"tenant": "acme", "purposes": "troubleshooting"},
        content=chunks, headers={**api.h("ingest"), "Content-Type": "video/mp4"},
    )  # fmt: skip
    _problem(r, 413, "payload-too-large")
    assert _recordings(api.ctx) == 0


def test_failed_authentications_are_limited_per_address(api: Api) -> None:
    bad = {"Authorization": "Bearer cvk_" + "A" * 43}
    for _ in range(5):
        _problem(api.client.get("/v1/recordings", headers=bad), 401, "unauthenticated")
    limited = api.client.get("/v1/recordings", headers=bad)
    _problem(limited, 429, "rate-limited")
    assert int(limited.headers["Retry-After"]) >= 1
    # The address is blocked, whatever key it presents, until the window moves on.
    _problem(api.client.get("/v1/recordings", headers=api.h("eng")), 429, "rate-limited")


def test_forwarded_addresses_count_only_behind_a_trusted_proxy(api: Api) -> None:
    bad = {"Authorization": "Bearer cvk_" + "B" * 43}
    # The test client's peer is no trusted proxy: X-Forwarded-For cannot dodge the limit.
    for i in range(5):
        headers = {**bad, "X-Forwarded-For": f"203.0.113.{i}"}
        _problem(api.client.get("/v1/recordings", headers=headers), 401, "unauthenticated")
    _problem(api.client.get("/v1/recordings", headers={**bad, "X-Forwarded-For": "203.0.113.99"}),
             429, "rate-limited")  # fmt: skip


def test_address_behind_trusted_proxies() -> None:
    from vault.api.limits import client_address

    class Req:
        def __init__(self, peer: str, forwarded: str) -> None:
            self.client = type("C", (), {"host": peer})()
            self.headers = {"x-forwarded-for": forwarded}

    trusted = ["10.0.0.0/8"]
    assert client_address(Req("10.1.2.3", "198.51.100.7"), trusted) == "198.51.100.7"  # type: ignore[arg-type]
    # A spoofed left-most hop loses to the nearest untrusted one.
    assert client_address(Req("10.1.2.3", "1.2.3.4, 198.51.100.7, 10.9.9.9"), trusted) == (  # type: ignore[arg-type]
        "198.51.100.7"
    )
    assert client_address(Req("198.51.100.8", "1.2.3.4"), trusted) == "198.51.100.8"  # type: ignore[arg-type]
    assert client_address(Req("10.1.2.3", "1.2.3.4"), []) == "10.1.2.3"  # type: ignore[arg-type]


def test_concurrent_uploads_per_principal_are_bounded() -> None:
    from vault.api.limits import Uploads
    from vault.errors import TooManyUploadsError

    uploads = Uploads(2)
    with uploads.slot("p"), uploads.slot("p"):
        with pytest.raises(TooManyUploadsError) as refused, uploads.slot("p"):
            pass
        assert refused.value.extra["headers"]["Retry-After"] == "1"
        with uploads.slot("q"):  # another principal has its own slots
            pass
    with uploads.slot("p"):  # freed again
        pass


def test_principal_ids_not_call_ids_in_the_access_log(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="callvault.access")
    r = _ingest(api, call_id="call-secret-42")
    assert r.status_code == 201 and r.headers["X-Request-Id"]
    lines = [rec for rec in caplog.records if rec.name == "callvault.access"]
    assert lines and all("call-secret-42" not in rec.getMessage() for rec in lines)
    assert {getattr(rec, "route", None) for rec in lines} == {"/v1/recordings"}
    assert all(getattr(rec, "principal", None) != "ingest" for rec in lines)
    assert str(uuid.UUID(lines[-1].principal))  # an opaque id
