"""The review console over HTTP (in process): sessions, CSRF, pages through the one
authorization layer, and media under a session-bound token. The browser walk is in
test_browser.py."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from tests.vault.console.conftest import ConsoleWorld
from vault.authz import Actor
from vault.identity import principals
from vault.models import AccessRequest, ConsoleSession

REQUEST = {"purpose": "troubleshooting", "reason": "one-way audio on the call",
           "ticket": "OPS-77", "duration_minutes": "60"}  # fmt: skip


def requests_count(w: ConsoleWorld) -> int:
    with w.ctx.db.session() as s:
        return len(s.exec(select(AccessRequest)).all())


def ask(w: ConsoleWorld, who: str = "alice", rid: str = "acme", **over: str) -> uuid.UUID:
    b = w.browser(who)
    r = b.post("/console/requests", {**REQUEST, "recording_ids": str(w.rids[rid]), **over})
    assert r.status_code == 303, r.text
    with w.ctx.db.session() as s:
        mine = select(AccessRequest.id).where(AccessRequest.requester_id == w.actors[who].id)
        return s.exec(mine.order_by(AccessRequest.created_at.desc())).first()  # type: ignore[union-attr,return-value]


# --- sign-in, cookie, session end


def test_sign_in_sets_a_strict_http_only_cookie_scoped_to_the_console_and_rotates_it(
    sqlite_world: ConsoleWorld,
) -> None:
    w = sqlite_world
    b = w.browser("alice", signed_in=False)
    r = b.sign_in()
    assert r.status_code == 303 and r.headers["location"] == "/console"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http here; behind TLS it is set
    first = b.cookie
    assert b.sign_in().status_code == 303
    assert b.cookie != first  # a new id at every sign-in
    with w.ctx.db.session() as s:
        rows = s.exec(select(ConsoleSession)).all()
    assert sorted(r.end_reason or "live" for r in rows) == ["live", "replaced"]
    assert all(first not in (r.token_hash, r.csrf_token) for r in rows)  # only the hash is kept
    signed = w.events("console.sign_in")
    assert len(signed) == 2 and w.keys["alice"] not in str(signed)


def test_a_wrong_key_is_refused_audited_and_limited_like_the_api(
    sqlite_world: ConsoleWorld,
) -> None:
    w = sqlite_world
    b = w.browser("alice", signed_in=False)
    b.key = "cv_" + "x" * 40
    for _ in range(3):
        r = b.sign_in()
        assert r.status_code == 401 and "not accepted" in r.text
        assert "callvault_console" not in r.headers.get("set-cookie", "")
    assert b.sign_in().status_code == 429  # the API's limiter, per address
    assert w.events("auth.denied")


def test_pages_carry_a_strict_csp_no_store_and_no_inline_script(sqlite_world: ConsoleWorld) -> None:
    b = sqlite_world.browser("sec")
    for path in ("/console", "/console/reviews", "/console/break-glass", "/console/audit",
                 "/console/sign-in"):  # fmt: skip
        r = b.page(path)
        assert r.status_code == 200, (path, r.text)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert r.headers["cache-control"] == "no-store"
        assert "<script>" not in r.text and "onclick" not in r.text


@pytest.mark.parametrize("change", ["revoke-principal", "revoke-key", "role"])
def test_a_revoked_principal_or_changed_role_ends_the_session_at_the_next_page(
    sqlite_world: ConsoleWorld, change: str
) -> None:
    w = sqlite_world
    b = w.browser("bob")
    assert b.page("/console/reviews").status_code == 200
    cookie = b.cookie
    with w.ctx.db.transaction() as s:
        if change == "revoke-principal":
            principals.revoke_principal(s, actor=Actor.operator(), name="bob", now=w.ctx.now())
        elif change == "role":
            principals.set_role(
                s, actor=Actor.operator(), name="bob", role="engineer", now=w.ctx.now()
            )
        else:
            from vault.models import ApiKey

            for k in s.exec(select(ApiKey).where(ApiKey.principal_id == w.actors["bob"].id)):
                k.revoked_at = w.ctx.now()
                s.add(k)
    r = b.page("/console/reviews")
    assert r.status_code == 401 and "Sign in again" in r.text
    ended = w.events("console.session_end")
    assert [e["details"]["reason"] for e in ended] == [
        "role-changed" if change == "role" else "credentials"
    ]
    # The 401 page told the browser to forget the cookie: the next page is the sign-in page,
    # and the old cookie replayed by hand stays refused.
    assert b.page("/console").headers.get("location") == "/console/sign-in"
    old = {"Cookie": f"callvault_console={cookie}"}
    assert b.client.get("/console", headers=old).status_code == 401


def test_idle_timeout_and_absolute_lifetime_end_the_session(sqlite_world: ConsoleWorld) -> None:
    w = sqlite_world
    idle = w.browser("alice")
    w.clock.advance(timedelta(minutes=31))
    assert idle.page().status_code == 401
    busy = w.browser("alice")
    for _ in range(int(12 * 60 / 20)):  # active every 20 min: never idle
        assert busy.page().status_code == 200
        w.clock.advance(timedelta(minutes=20))
    assert busy.page().status_code == 401
    reasons = [e["details"]["reason"] for e in w.events("console.session_end")]
    assert reasons == ["idle", "lifetime"]


def test_the_console_cookie_alone_gets_401_on_the_api(sqlite_world: ConsoleWorld) -> None:
    w = sqlite_world
    b = w.browser("sec")
    api = w.api("sec")
    api.headers.pop("Authorization")
    r = api.get("/v1/grants", headers={"Cookie": f"callvault_console={b.cookie}"})
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"


def test_sign_out_revokes_the_session(sqlite_world: ConsoleWorld) -> None:
    w = sqlite_world
    b = w.browser("alice")
    assert b.post("/console/sign-out", {}, csrf=None).status_code == 403  # CSRF applies here too
    old = b.cookie
    r = b.post("/console/sign-out", {})
    assert r.status_code == 303 and r.headers["location"] == "/console/sign-in"
    assert len(w.events("console.sign_out")) == 1
    assert b.cookie == ""  # the browser was told to forget it
    # Replaying the old cookie does not bring it back.
    replay = b.client.get("/console", headers={"Cookie": f"callvault_console={old}"})
    assert replay.status_code == 401 and "Sign in again" in replay.text


def test_a_browser_that_never_signed_in_is_sent_to_the_sign_in_page(
    sqlite_world: ConsoleWorld,
) -> None:
    b = sqlite_world.browser("alice", signed_in=False)
    for path in ("/console", "/console/reviews", "/console/audit"):
        r = b.page(path)
        assert r.status_code == 303 and r.headers["location"] == "/console/sign-in"
    media = b.page(f"/console/media/{uuid.uuid4()}/{uuid.uuid4()}")
    assert media.status_code == 401  # not a page: the problem answer


# --- CSRF and bad input


@pytest.mark.parametrize("attack", ["no-token", "wrong-token", "other-origin"])
def test_a_form_without_this_sessions_token_or_from_another_origin_changes_nothing(
    sqlite_world: ConsoleWorld, attack: str
) -> None:
    w = sqlite_world
    b = w.browser("alice")
    data = {**REQUEST, "recording_ids": str(w.rids["acme"])}
    if attack == "no-token":
        r = b.post("/console/requests", data, csrf=None)
    elif attack == "wrong-token":
        r = b.post("/console/requests", data, csrf=w.browser("alice").csrf())  # another session's
    else:
        r = b.post("/console/requests", data, origin="http://127.0.0.1:9")
    assert r.status_code == 403 and "could not be verified" in r.text
    assert requests_count(w) == 0
    denied = w.events("permission.denied")
    assert denied and denied[-1]["details"]["permission"] == "console:form"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("reason", "x" * 5000, "reason"),
        ("ticket", "OPS 1\n2", "ticket"),
        ("recording_ids", "not-an-id", "not an id"),
        ("duration_minutes", "forever", "minutes"),
        ("duration_minutes", "100000", "duration"),
        ("purpose", "curiosity", "purpose"),
    ],
)
def test_bad_form_input_shows_a_clear_message_and_creates_nothing(
    sqlite_world: ConsoleWorld, field: str, value: str, message: str
) -> None:
    w = sqlite_world
    b = w.browser("alice")
    r = b.post("/console/requests", {**REQUEST, "recording_ids": str(w.rids["acme"]), field: value})
    assert r.status_code == 422, r.text
    assert "text/html" in r.headers["content-type"] and message in r.text.lower()
    assert "Nothing was changed" in r.text
    assert requests_count(w) == 0


# --- pages through the one authorization layer


def test_request_review_and_approve_through_the_console(world: ConsoleWorld) -> None:
    w = world
    req = ask(w)
    alice = w.browser("alice")
    assert str(req) in alice.page().text and "pending" in alice.page().text
    bob, olga = w.browser("bob"), w.browser("olga")
    page = bob.page("/console/reviews").text
    assert str(req) in page and "one-way audio" in page and "OPS-77" in page
    assert "video/mp4" in page and "acme" in page  # the recordings' metadata
    assert str(req) not in olga.page("/console/reviews").text  # another tenant's reviewer
    r = bob.post(f"/console/reviews/{req}/approve", {"comment": "ok"})
    assert r.status_code == 303 and r.headers["location"] == "/console/reviews?done=approved"
    home = alice.page().text
    assert "approved" in home and "/console/play/" in home


def test_self_review_is_not_offered_and_refused(sqlite_world: ConsoleWorld) -> None:
    w = sqlite_world
    req = ask(w, "sec")
    sec = w.browser("sec")
    page = sec.page("/console/reviews").text
    assert "Your own request" in page and f"/console/reviews/{req}/approve" not in page
    r = sec.post(f"/console/reviews/{req}/approve", {"comment": "me"})
    assert r.status_code == 403 and "Nothing was changed" in r.text
    with w.ctx.db.session() as s:
        assert s.get(AccessRequest, req).status == "pending"  # type: ignore[union-attr]


def test_pages_a_role_cannot_use_answer_403_and_are_not_in_its_navigation(
    sqlite_world: ConsoleWorld,
) -> None:
    alice = sqlite_world.browser("alice")
    nav = alice.page().text
    for path in ("/console/audit", "/console/privacy", "/console/reviews"):
        assert f'href="{path}"' not in nav
        r = alice.page(path)
        assert r.status_code == 403 and "text/html" in r.headers["content-type"]


def test_break_glass_and_its_after_review(sqlite_world: ConsoleWorld) -> None:
    w = sqlite_world
    sec, sec2 = w.browser("sec"), w.browser("sec2")
    r = sec.post("/console/break-glass", {
        "incident_ref": "INC-9", "purpose": "troubleshooting", "reason": "outage in progress",
        "recording_ids": str(w.rids["other"]), "duration_minutes": "30"})  # fmt: skip
    assert r.status_code == 303
    page = sec2.page("/console/break-glass").text
    assert "INC-9" in page and "Record review" in page
    grant = w.events("grant.break_glass")[-1]["grant_id"]
    r = sec2.post(f"/console/grants/{grant}/review", {"comment": "justified"})
    assert r.status_code == 303
    assert "INC-9" not in sec2.page("/console/break-glass").text


def test_the_audit_page_filters_and_verifies(sqlite_world: ConsoleWorld) -> None:
    w = sqlite_world
    ask(w)
    aud = w.browser("aud")
    r = aud.page("/console/audit", action="access.request")
    assert r.status_code == 200
    assert (
        'data-action="access.request"' in r.text and 'data-action="console.sign_in"' not in r.text
    )
    r = aud.page("/console/audit", verify="1")
    assert 'data-verify="ok"' in r.text
    scoped = w.browser("aud-acme").page("/console/audit", verify="1")
    assert "needs a principal over all tenants" in scoped.text
    bad = aud.page("/console/audit", action="nope")
    assert bad.status_code == 422 and "unknown action" in bad.text


def test_the_privacy_page_lists_holds_and_erasure_requests_with_due_dates(
    sqlite_world: ConsoleWorld,
) -> None:
    w = sqlite_world
    api = w.api("priv")
    hold = api.post("/v1/legal-holds", json={"case_ref": "CASE-1", "reason": "litigation",
                                            "recording_ids": [str(w.rids["acme"])]})  # fmt: skip
    assert hold.status_code == 201, hold.text
    er = api.post("/v1/erasure-requests", json={"recording_ids": [str(w.rids["acme"])],
                                               "reason": "data subject request"})  # fmt: skip
    assert er.status_code == 202, er.text
    page = w.browser("priv").page("/console/privacy").text
    assert "CASE-1" in page and er.json()["id"] in page and er.json()["due_at"][:10] in page
    listed = api.get("/v1/erasure-requests")
    assert [r["id"] for r in listed.json()] == [er.json()["id"]]


def test_unknown_console_paths_are_pages_and_media_errors_stay_problem_json(
    sqlite_world: ConsoleWorld,
) -> None:
    b = sqlite_world.browser("alice")
    r = b.page("/console/nowhere")
    assert r.status_code == 404 and "text/html" in r.headers["content-type"]
    r = b.page(f"/console/media/{uuid.uuid4()}/{uuid.uuid4()}")
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("/media-link-invalid")


# --- media under a session-bound token -----------------------------------------------------------


def _granted(w: ConsoleWorld, data: bytes) -> tuple[uuid.UUID, uuid.UUID, str]:
    """alice holds an approved grant on a real recording; returns (recording, grant, media src)."""
    rid = w.ingest(data)
    w.rids["media"] = rid
    req = ask(w, rid="media")
    assert w.browser("bob").post(f"/console/reviews/{req}/approve", {}).status_code == 303
    grant = w.events("grant.create")[-1]["grant_id"]
    return rid, uuid.UUID(grant), ""


def test_media_plays_with_session_token_and_same_origin_and_nothing_else(
    world: ConsoleWorld,
) -> None:
    w = world
    data = bytes(range(256)) * 4096  # 1 MiB
    rid, grant, _ = _granted(w, data)
    alice = w.browser("alice")
    page = alice.page(f"/console/play/{grant}/{rid}").text
    src = page.split('data-src="')[1].split('"')[0].replace("&amp;", "&")
    assert src.startswith(f"/console/media/{grant}/{rid}?token=")
    same = {"Sec-Fetch-Site": "same-origin"}

    r = alice.client.get(src, headers={**same, "Range": "bytes=1000-1999"})
    assert r.status_code == 206 and r.content == data[1000:2000]
    assert r.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    reads = w.events("recording.read")
    assert reads and reads[-1]["target"] == str(rid) and reads[-1]["grant_id"] == str(grant)
    assert "token" not in str(reads)  # the URL's token is never audited or logged

    n = len(w.events("recording.read"))
    refused = {
        "no Sec-Fetch-Site": alice.client.get(src),
        "cross-site": alice.client.get(src, headers={"Sec-Fetch-Site": "cross-site"}),
        "another session": w.browser("alice").client.get(src, headers=same),
        "another recording": alice.client.get(
            src.replace(str(rid), str(w.rids["acme"])), headers=same
        ),
        "tampered token": alice.client.get(
            src[:-2] + ("AA" if src[-2:] != "AA" else "BB"), headers=same
        ),
    }
    for why, resp in refused.items():
        assert resp.status_code == 403, why
        assert resp.headers["content-type"] == "application/problem+json", why
        assert resp.json()["type"].endswith("/media-link-invalid"), why
    no_cookie = w.browser("alice", signed_in=False).client.get(src, headers=same)
    assert no_cookie.status_code == 401
    assert no_cookie.json()["type"].endswith("/console-session-ended")
    assert len(w.events("recording.read")) == n  # no read was opened for any of them
    assert {e["details"]["reason"] for e in w.events("permission.denied")} >= {
        "not-same-origin",
        "media-token",
    }

    status = alice.page(f"/console/grants/{grant}/status").json()
    assert status["active"] is True
    sec = w.browser("bob")
    req = w.events("access.approve")[-1]["target"]
    assert sec.post(f"/console/requests/{req}/revoke", {"reason": "done"}).status_code == 303
    assert alice.client.get(src, headers=same).status_code == 403
    assert alice.page(f"/console/grants/{grant}/status").json() == {
        "active": False,
        "reason": "revoked",
        "expires_at": status["expires_at"],
    }
    assert len(w.events("recording.read")) == n


def test_a_media_link_dies_with_the_grant_or_the_session(sqlite_world: ConsoleWorld) -> None:
    w = sqlite_world
    data = b"\x00" * 200_000
    rid, grant, _ = _granted(w, data)
    alice = w.browser("alice")
    page = alice.page(f"/console/play/{grant}/{rid}").text
    src = page.split('data-src="')[1].split('"')[0].replace("&amp;", "&")
    same = {"Sec-Fetch-Site": "same-origin"}
    assert alice.client.get(src, headers=same).status_code == 200
    w.clock.advance(timedelta(minutes=25))
    alice.page()  # keep the session alive
    w.clock.advance(timedelta(minutes=25))
    alice.page()
    w.clock.advance(timedelta(minutes=11))  # past the 60-minute grant
    assert alice.client.get(src, headers=same).status_code == 403
    assert alice.page(f"/console/grants/{grant}/status").json()["reason"] == "expired"
    assert alice.page(f"/console/play/{grant}/{rid}").status_code in (403, 404)


@pytest.mark.parametrize(
    ("origin", "fetch_site", "refused"),
    [
        (None, None, False),  # not a browser: the token alone decides
        ("null", "same-origin", False),  # Chromium under Referrer-Policy: no-referrer
        ("http://testserver", None, False),
        ("null", "same-site", True),  # another port on the same host is the same site
        ("null", "cross-site", True),
        ("http://evil.example", None, True),
    ],
)
def test_the_origin_headers_a_browser_sends_decide_before_the_token(
    sqlite_world: ConsoleWorld, origin: str | None, fetch_site: str | None, refused: bool
) -> None:
    w = sqlite_world
    b = w.browser("alice")
    headers = {k: v for k, v in (("origin", origin), ("sec-fetch-site", fetch_site)) if v}
    data = {**REQUEST, "recording_ids": str(w.rids["acme"])}
    r = b.post("/console/requests", data, **headers)
    assert r.status_code == (403 if refused else 303)
    assert requests_count(w) == (0 if refused else 1)


def test_the_grant_expiry_job_purges_sessions_a_day_after_they_ended(
    sqlite_world: ConsoleWorld,
) -> None:
    from jobs import tasks

    w = sqlite_world
    live, ended = w.browser("alice"), w.browser("bob")
    assert ended.post("/console/sign-out", {}).status_code == 303
    w.clock.advance(timedelta(hours=2))
    assert live.page().status_code == 401  # idle: ended now
    assert "0 console session(s) purged" in tasks.run("expire-grants", w.ctx, w.ctx.now())
    w.clock.advance(timedelta(days=1, minutes=1))
    assert "2 console session(s) purged" in tasks.run("expire-grants", w.ctx, w.ctx.now())
    with w.ctx.db.session() as s:
        assert s.exec(select(ConsoleSession)).all() == []
    assert len(w.events("console.sign_in")) == 2  # the chain keeps them


# --- review findings: proxies, polls, purge, login CSRF, own lists, key fetch ---------------------


def test_the_cookie_is_secure_behind_a_trusted_tls_proxy_given_as_a_network(
    make_ctx: Any, clock: Any
) -> None:
    from tests.vault.console.conftest import build

    w = build(
        make_ctx(db="sqlite", store="local", clock=clock, trusted_proxies=["10.0.0.0/8"]), clock
    )
    for peer, proto, secure in [("10.0.0.5", "https", True), ("10.0.0.5", "http", False),
                                ("192.0.2.7", "https", False)]:  # fmt: skip
        client = TestClient(w.app, follow_redirects=False, client=(peer, 5000))
        page = client.get("/console/sign-in", headers={"X-Forwarded-Proto": proto})
        token = page.text.split('name="sign_in_token" value="')[1].split('"')[0]
        form = {"api_key": w.keys["alice"], "sign_in_token": token}
        # A Secure cookie is not sent back over this plain-HTTP test transport: send it by hand.
        headers = {"X-Forwarded-Proto": proto, "Cookie": f"callvault_sign_in={token}"}
        client.cookies.clear()
        r = client.post("/console/sign-in", data=form, headers=headers)
        assert r.status_code == 303
        assert ("Secure" in r.headers["set-cookie"]) is secure, (peer, proto)


def test_the_players_status_poll_does_not_keep_an_idle_session_alive(
    sqlite_world: ConsoleWorld,
) -> None:
    w = sqlite_world
    rid, grant, _ = _granted(w, b"\x00" * 100_000)
    alice = w.browser("alice")
    assert alice.page(f"/console/play/{grant}/{rid}").status_code == 200
    w.clock.advance(timedelta(minutes=20))
    assert alice.page(f"/console/grants/{grant}/status").status_code == 200
    w.clock.advance(timedelta(minutes=11))  # 31 min after the last page, polls or not
    assert alice.page(f"/console/grants/{grant}/status").status_code == 401
    assert [e["details"]["reason"] for e in w.events("console.session_end")] == ["idle"]


def test_sessions_nobody_came_back_to_are_ended_with_an_audit_event_before_deletion(
    sqlite_world: ConsoleWorld,
) -> None:
    from jobs import tasks

    w = sqlite_world
    w.browser("alice")
    w.clock.advance(timedelta(days=2))
    assert "0 console session(s) purged" in tasks.run("expire-grants", w.ctx, w.ctx.now())
    assert [e["details"]["reason"] for e in w.events("console.session_end")] == ["lifetime"]
    w.clock.advance(timedelta(days=1, minutes=1))
    assert "1 console session(s) purged" in tasks.run("expire-grants", w.ctx, w.ctx.now())


@pytest.mark.parametrize("attack", ["no-token", "token-of-another-browser", "cross-site"])
def test_sign_in_needs_the_forms_own_token_so_another_site_cannot_sign_you_in(
    sqlite_world: ConsoleWorld, attack: str
) -> None:
    w = sqlite_world
    victim = w.browser("alice", signed_in=False)
    victim.page("/console/sign-in")  # the victim's browser holds its own sign-in cookie
    other = w.browser("bob", signed_in=False).page("/console/sign-in").text
    other_token = other.split('name="sign_in_token" value="')[1].split('"')[0]
    data = {"api_key": w.keys["bob"]}  # the attacker's own key
    headers = {}
    if attack == "token-of-another-browser":
        data["sign_in_token"] = other_token
    elif attack == "cross-site":
        data["sign_in_token"] = other_token
        headers = {"Sec-Fetch-Site": "cross-site"}
    r = victim.client.post("/console/sign-in", data=data, headers=headers)
    assert r.status_code == 403 and "callvault_console" not in r.headers.get("set-cookie", "")
    assert w.events("console.sign_in") == []
    assert w.events("auth.denied")[-1]["details"]["key"] == "console-sign-in"


def test_my_access_lists_my_own_requests_and_grants_only(sqlite_world: ConsoleWorld) -> None:
    w = sqlite_world
    theirs = ask(w, "alice")
    mine = ask(w, "sec")
    page = w.browser("sec").page().text
    assert str(mine) in page and str(theirs) not in page  # sec may review alice's: not "mine"


def test_the_audit_pages_verify_asks_for_the_key_only_after_authorization(
    sqlite_world: ConsoleWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vault.audit import checkpoints

    def must_not_run(ctx: Any) -> bytes:
        raise AssertionError("the trusted key was fetched for a caller without audit:read")

    monkeypatch.setattr(checkpoints, "trusted_public_key", must_not_run)
    r = sqlite_world.browser("alice").page("/console/audit", verify="1")
    assert r.status_code == 403
