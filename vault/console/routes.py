"""Console sign-in and sign-out, static assets, media for the player, and the grant poll.

The media route answers through the content endpoint's own ``respond`` (same Range handling,
per-read audit and re-checks); it needs the session cookie, a token bound to session, grant and
recording, and ``Sec-Fetch-Site: same-origin``. Routes that change state take the session
(``LiveDep``) before the unit of work, check the CSRF token, and redirect (303) on success.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Form, Header, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from vault import audit
from vault.access import queries
from vault.api.deps import CtxDep
from vault.audit.denials import deny
from vault.console import sessions, web
from vault.console.sessions import COOKIE, Live
from vault.console.web import LiveDep, PolledDep, PostedDep
from vault.context import Context
from vault.errors import (
    AuthenticationError,
    CsrfError,
    MediaLinkError,
    NotFoundError,
)
from vault.identity import authentication
from vault.recordings import content

router = APIRouter(prefix=web.PREFIX, include_in_schema=False)

def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=web.PAGE_HEADERS)


# --- sign-in and sign-out ------------------------------------------------------------------------


def _sign_in_page(request: Request, ctx: Context, *, status: int, error: str | None) -> Response:
    """The form with a fresh double-submit token, also set as a cookie on the form's path."""
    token = sessions.sign_in_token()
    response = web.render(
        request, "sign_in.html", live=None, status=status, error=error, sign_in_token=token
    )
    response.set_cookie(
        sessions.SIGN_IN_COOKIE, token, path=f"{web.PREFIX}/sign-in", httponly=True,
        samesite="strict", secure=web.secure(request, ctx.settings), max_age=3600,
    )  # fmt: skip
    return response


@router.get("/sign-in")
def sign_in_page(request: Request, ctx: CtxDep) -> Response:
    return _sign_in_page(request, ctx, status=200, error=None)


@router.post("/sign-in")
def sign_in(
    request: Request,
    ctx: CtxDep,
    api_key: Annotated[str, Form(max_length=256)] = "",
    sign_in_token: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    now = ctx.now()
    failures = request.app.state.auth_failures
    addr = web.address(request, ctx.settings)
    failures.check(addr, now)  # the API's limiter: 429 while this address is over its limit
    # Login CSRF: another site must not sign a browser into someone else's session.
    foreign = sessions.cross_origin(
        origin=request.headers.get("origin"), fetch_site=request.headers.get("sec-fetch-site"),
        own_origin=web.own_origin(request),
    )  # fmt: skip
    paired = sessions.check_sign_in_token(
        cookie=request.cookies.get(sessions.SIGN_IN_COOKIE), form=sign_in_token
    )
    if foreign or not paired:
        why = "cross-origin" if foreign else "sign-in-token"
        audit.record_denial(ctx.db, ctx.denials, key="console-sign-in", reason=why, now=now)
        raise CsrfError("open the sign-in page again and sign in from there")
    try:
        with ctx.db.transaction() as session:
            cookie, _ = sessions.sign_in(
                session, api_key=api_key.strip(), replaces=request.cookies.get(COOKIE),
                limits=sessions.Limits.of(ctx.settings), now=now,
            )  # fmt: skip
    except AuthenticationError:
        failures.failed(addr, now)
        key = authentication.denial_key(api_key.strip())
        audit.record_denial(ctx.db, ctx.denials, key=key, reason="invalid key", now=now)
        return _sign_in_page(request, ctx, status=401, error="That key was not accepted.")
    response = see_other(web.PREFIX)
    web.set_cookie(response, request, ctx.settings, cookie)
    response.delete_cookie(sessions.SIGN_IN_COOKIE, path=f"{web.PREFIX}/sign-in")
    return response


@router.post("/sign-out")
def sign_out(request: Request, form: PostedDep) -> Response:
    ctx, session, live = form.ctx, form.session, form.live
    cookie = request.cookies.get(COOKIE, "")
    sessions.end(session, cookie=cookie, reason="sign-out", actor=live.actor, now=ctx.now())
    response = see_other(f"{web.PREFIX}/sign-in")
    web.clear_cookie(response, request, ctx.settings)
    return response


# --- assets --------------------------------------------------------------------------------------


@router.get("/static/{name}")
def static(name: str) -> Response:
    body = web.static_file(name)
    if body is None:
        raise NotFoundError("no such file")
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
    return Response(body, media_type=web.STATIC[name], headers=headers)


# --- playback ------------------------------------------------------------------------------------


def _refuse(ctx: Context, live: Live, reason: str, route: str) -> MediaLinkError:
    with ctx.db.reading() as session:  # the denial is written once this unit closes
        deny(
            session, actor=live.actor.audit_name, role=live.actor.role.value,
            permission="console:media", reason=reason, target=route, tenant_id=None,
            now=ctx.now(),
        )  # fmt: skip
    return MediaLinkError("open the recording from its page in the console")


@router.get("/media/{grant_id}/{recording_id}")
def media(
    ctx: CtxDep,
    live: LiveDep,
    grant_id: uuid.UUID,
    recording_id: uuid.UUID,
    token: Annotated[str, Query(max_length=64)] = "",
    range_: Annotated[str | None, Header(alias="range", max_length=1024)] = None,
    if_range: Annotated[str | None, Header(max_length=256)] = None,
    sec_fetch_site: Annotated[str | None, Header(max_length=32)] = None,
) -> Response:
    route = "/console/media/{grant_id}/{recording_id}"
    if sec_fetch_site != "same-origin":
        raise _refuse(ctx, live, "not-same-origin", route)
    valid = sessions.check_media_token(
        live.row, token=token, grant_id=grant_id, recording_id=recording_id, now=ctx.now()
    )
    if not valid:
        raise _refuse(ctx, live, "media-token", route)
    return content.respond(
        ctx, actor=live.actor, recording_id=recording_id, grant_id=grant_id,
        range_header=range_, if_range=if_range,
    )  # fmt: skip


@router.get("/grants/{grant_id}/status")
def grant_status(ctx: CtxDep, live: PolledDep, grant_id: uuid.UUID) -> JSONResponse:
    """Polled by the player: a revoked or expired grant (or an ended session, 401) stops it."""
    now = ctx.now()
    with ctx.db.reading() as session:
        grant = queries.get_grant(session, actor=live.actor, grant_id=grant_id, now=now)
    body: dict[str, Any] = {"active": grant.active, "expires_at": grant.expires_at.isoformat()}
    if not grant.active:
        body["reason"] = (
            "revoked" if grant.revoked_at else "expired" if grant.expires_at <= now else "inactive"
        )
    return JSONResponse(body, headers=web.PAGE_HEADERS)
