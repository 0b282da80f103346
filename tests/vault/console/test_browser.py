"""The console in a real browser: Debian's Chromium driven by Playwright, against a real
``callvault serve`` on PostgreSQL and SeaweedFS (recipe: ../shared/BROWSER.md).

The walk: an engineer requests access and an approver approves (two browser contexts); the
engineer plays a 60 s 8 Mbit/s clip (moov at the end, so Chromium reads past byte 0) and seeks;
the approver revokes and the page stops the video; the audit page shows the reads and verifies.
Screenshots of every page land in ``test-artifacts/console/`` (git-ignored).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import imageio_ffmpeg
import pytest
import sqlalchemy as sa

from tests.support.postgres import temp_database
from tests.support.server import ServeProcess, run_serve
from tests.support.weed import WeedServer
from tests.vault.conftest import new_bucket_name

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "console"


@dataclass
class Stack:
    server: ServeProcess
    env: dict[str, str]
    workdir: Path
    db_url: str
    keys: dict[str, str]
    rid: str
    browser: Any

    def cli(self, *args: str) -> str:
        exe = Path(sys.executable).with_name("callvault")
        return subprocess.run(
            [str(exe), *args], cwd=self.workdir, env={**os.environ, **self.env},
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip

    def events(self, action: str) -> list[dict[str, Any]]:
        engine = sa.create_engine(self.db_url)
        try:
            with engine.connect() as c:
                rows = c.execute(
                    sa.text(
                        "SELECT seq, canonical FROM audit_event WHERE action = :a ORDER BY seq"
                    ),
                    {"a": action},
                ).all()
        finally:
            engine.dispose()
        return [{"seq": seq, **json.loads(canonical)} for seq, canonical in rows]

    def sign_in(self, who: str) -> tuple[Any, Any]:
        context = self.browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(f"{self.server.url}/console/sign-in")
        page.get_by_label("API key").fill(self.keys[who])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{self.server.url}/console")
        return context, page


def _clip(path: Path) -> None:
    """60 s at 8 Mbit/s, H.264/AAC, moov at the end (ffmpeg's default): larger than what
    Chromium buffers ahead, so seeking and the tail index need Range reads past byte 0."""
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=60",
         "-f", "lavfi", "-i", "sine=frequency=440:duration=60",
         "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "8M", "-minrate", "8M",
         "-maxrate", "8M", "-bufsize", "4M", "-x264-params", "nal-hrd=cbr",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
        check=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, pg_url: str, weed: WeedServer
) -> Iterator[Stack]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is required (apt-get install chromium)", pytrace=False)
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("console-browser")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        db_url = stack.enter_context(temp_database(pg_url))
        bucket = new_bucket_name()
        weed.client().make_bucket(bucket, object_lock=True)
        env = {
            "CALLVAULT_DATABASE_URL": db_url,
            "CALLVAULT_KEY_PROVIDER": f"local:{tmp / 'keys'}",
            "CALLVAULT_BLOB_STORE": f"s3://{bucket}",
            "CALLVAULT_S3_ENDPOINT": weed.endpoint,
            "CALLVAULT_S3_ACCESS_KEY": weed.access_key,
            "CALLVAULT_S3_SECRET_KEY": weed.secret_key,
        }
        server = stack.enter_context(run_serve(env, tmp))
        admin = {"Authorization": f"Bearer {server.admin_key}"}
        assert httpx.post(
            f"{server.url}/v1/tenants", json={"name": "acme"}, headers=admin
        ).is_success
        s = Stack(server=server, env=env, workdir=tmp, db_url=db_url, keys={}, rid="", browser=None)
        for name, role, scope in [
            ("ingester", "ingest", ["--tenant", "acme"]),
            ("alice", "engineer", ["--tenant", "acme"]),
            ("bob", "approver", ["--tenant", "acme"]),
            ("dave", "engineer", ["--tenant", "acme"]),
            ("carol", "auditor", ["--all-tenants"]),
        ]:
            out = s.cli("principal", "add", name, "--role", role, "--owner",
                        f"{name}@acme.example", *scope)  # fmt: skip
            s.keys[name] = out.strip().splitlines()[-1]
        clip = tmp / "call.mp4"
        _clip(clip)
        with clip.open("rb") as body:
            r = httpx.post(
                f"{server.url}/v1/recordings",
                params={"tenant": "acme", "purposes": "troubleshooting", "call_id": "call-1"},
                headers={"Authorization": f"Bearer {s.keys['ingester']}",
                         "Content-Type": "video/mp4"},
                content=body, timeout=120,
            )  # fmt: skip
        assert r.status_code == 201, r.text
        s.rid = r.json()["id"]
        playwright = stack.enter_context(sync_playwright())
        s.browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        stack.callback(s.browser.close)
        yield s


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_request_approve_play_seek_revoke_and_audit_in_chromium(stack: Stack) -> None:
    s, url = stack, stack.server.url
    eng_ctx, eng = s.sign_in("alice")
    appr_ctx, appr = s.sign_in("bob")
    shot(eng, "01-home")

    # The engineer asks, in the form.
    eng.get_by_label("Recording ids (one per line)").fill(s.rid)
    eng.get_by_label("Purpose").select_option("troubleshooting")
    eng.get_by_label("Reason").fill("one-way audio reported on call 1")
    eng.get_by_label("Ticket").fill("INC-1234")
    eng.get_by_label("Duration (minutes)").fill("30")
    eng.get_by_role("button", name="Request access").click()
    eng.wait_for_url(f"{url}/console?done=requested")
    assert "pending" in eng.locator("td.status").first.inner_text()

    # The approver, in another context, sees it with the recording's metadata and approves.
    appr.goto(f"{url}/console/reviews")
    card = appr.locator("article[data-request]").first
    assert "INC-1234" in card.inner_text() and "video/mp4" in card.inner_text()
    shot(appr, "02-reviews")
    card.get_by_label("Comment").fill("ok for INC-1234")
    card.get_by_role("button", name="Approve").click()
    appr.wait_for_url(f"{url}/console/reviews?done=approved")

    # The engineer plays, then seeks.
    eng.goto(f"{url}/console")
    eng.get_by_role("link", name="Play").first.click()
    eng.wait_for_selector("video#player")
    eng.evaluate("() => { const v = document.getElementById('player'); v.muted = true; v.play(); }")
    wait_for(lambda: eng.evaluate("document.getElementById('player').currentTime") > 2, 30,
             "currentTime > 2 s")  # fmt: skip
    eng.evaluate("() => { document.getElementById('player').currentTime = 10; }")
    wait_for(lambda: eng.evaluate("document.getElementById('player').currentTime") > 10.5, 30,
             "playback resumed after the seek to 10 s")  # fmt: skip
    assert eng.evaluate("document.getElementById('player').currentTime") < 20
    shot(eng, "03-play")
    reads = s.events("recording.read")
    assert reads and all(r["target"] == s.rid for r in reads)
    assert any(r["details"]["range"][0] > 0 for r in reads), "no Range read past byte 0"
    assert all(r["details"]["partial"] for r in reads)

    # The approver revokes; the page stops the video itself, well before its end.
    appr.goto(f"{url}/console/reviews")
    row = appr.locator("tr[data-request]").first
    row.get_by_label("Reason").fill("incident closed")
    row.get_by_role("button", name="Revoke").click()
    appr.wait_for_url(f"{url}/console/reviews?done=revoked")
    revoked_at = s.events("grant.revoke")[-1]["seq"]
    eng.evaluate("() => { document.getElementById('player').playbackRate = 4; }")
    wait_for(lambda: eng.evaluate("document.getElementById('player').dataset.stopped === '1'"), 15,
             "the page to stop the video")  # fmt: skip
    state = eng.locator("#player-state").inner_text()
    assert "revoked" in state
    assert eng.evaluate("document.getElementById('player').currentTime") < 55
    shot(eng, "04-revoked")
    src = eng.evaluate("document.getElementById('player').dataset.src")
    refused = eng_ctx.request.get(f"{url}{src}", headers={"Sec-Fetch-Site": "same-origin"})
    assert refused.status == 403
    assert all(r["seq"] < revoked_at for r in s.events("recording.read")), "a read after revoke"

    # The auditor sees the reads and a chain that verifies.
    aud_ctx, aud = s.sign_in("carol")
    aud.goto(f"{url}/console/audit?action=recording.read")
    assert aud.locator('tr[data-action="recording.read"]').count() == len(
        s.events("recording.read")
    )
    aud.get_by_role("button", name="Verify the chain").click()
    assert aud.locator('[data-verify="ok"]').count() == 1
    shot(aud, "05-audit")
    for c in (eng_ctx, appr_ctx, aud_ctx):
        c.close()


def test_a_revoked_principal_gets_401_on_its_next_page(stack: Stack) -> None:
    context, page = stack.sign_in("dave")
    assert page.goto(f"{stack.server.url}/console").status == 200
    stack.cli("principal", "revoke", "dave")
    response = page.goto(f"{stack.server.url}/console")
    assert response.status == 401 and "Sign in again" in page.content()
    shot(page, "06-session-ended")
    context.close()


def test_cross_site_form_without_csrf_is_refused_and_the_cookie_alone_fails_on_v1(
    stack: Stack,
) -> None:
    url = stack.server.url
    context, page = stack.sign_in("alice")
    before = len(stack.events("access.request"))
    form = {"recording_ids": stack.rid, "purpose": "troubleshooting", "reason": "x",
            "ticket": "T-1", "duration_minutes": "10"}  # fmt: skip
    r = context.request.post(f"{url}/console/requests", form=form, max_redirects=0)
    assert r.status == 403  # the browser sent the cookie; the missing token refuses it
    shot(page, "07-home-after-csrf")
    assert len(stack.events("access.request")) == before
    cookie = next(c["value"] for c in context.cookies() if c["name"] == "callvault_console")
    api = httpx.get(f"{url}/v1/grants", headers={"Cookie": f"callvault_console={cookie}"})
    assert api.status_code == 401
    context.close()


def test_docs_render_from_own_assets_without_csp_violations(stack: Stack) -> None:
    context = stack.browser.new_context()
    page = context.new_page()
    seen: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    page.on(
        "console",
        lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.goto(f"{stack.server.url}/docs")
    page.wait_for_selector(".opblock", timeout=20_000)
    assert page.locator(".opblock").count() > 20
    assert page.get_by_role("button", name="Authorize").count() >= 1
    shot(page, "08-docs")
    outside = [
        u
        for u in seen
        if not u.startswith(stack.server.url) and not u.startswith(("data:", "blob:"))
    ]
    assert outside == [] and problems == []
    context.close()


@pytest.fixture(scope="module", autouse=True)
def _tidy_artifacts() -> Iterator[None]:
    yield
    if not any(ARTIFACTS.glob("*.png")):
        shutil.rmtree(ARTIFACTS, ignore_errors=True)
