"""The console's plumbing: the session dependency, CSRF, page rendering and its headers.

Pages are Jinja2 templates with autoescaping; scripts and styles are files served by callvault
itself, so the Content-Security-Policy allows no inline script and nothing from elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from typing import Annotated, Any

import jinja2
from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session

from vault.api.deps import CtxDep, SessionDep
from vault.api.limits import client_address, is_trusted_proxy
from vault.audit.denials import deny
from vault.authz import Actor, Permission
from vault.config import Settings
from vault.console import sessions
from vault.console.sessions import COOKIE, Limits, Live
from vault.context import Context
from vault.errors import CsrfError, SessionEndedError

PREFIX = "/console"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # media URLs carry a token: never in a Referer
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

# (path, label, permission that makes the page useful; None: everyone signed in)
NAV: tuple[tuple[str, str, Permission | None], ...] = (
    ("/console", "My access", None),
    ("/console/reviews", "Reviews", Permission.access_review),
    ("/console/break-glass", "Break-glass", Permission.break_glass),
    ("/console/audit", "Audit", Permission.audit_read),
    ("/console/privacy", "Privacy", Permission.erasure_manage),
)


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("vault.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["ts"] = lambda t: "" if t is None else t.strftime("%Y-%m-%d %H:%M:%S UTC")
    env.filters["left"] = _left
    return env


def _left(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds <= 0:
        return "ended"
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


def render(
    request: Request, name: str, *, live: Live | None, status: int = 200, **values: Any
) -> HTMLResponse:
    env: jinja2.Environment = request.app.state.console_templates
    values.setdefault("done", None)
    nav = [(p, label) for p, label, perm in NAV if live and (perm is None or live.actor.can(perm))]
    html = env.get_template(name).render(
        live=live, nav=nav, path=request.url.path, csrf=live.row.csrf_token if live else "",
        **values,
    )  # fmt: skip
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def secure(request: Request, settings: Settings) -> bool:
    """Whether the browser reached us over TLS (directly or through a trusted proxy)."""
    if request.url.scheme == "https":
        return True
    peer = request.client.host if request.client else ""
    forwarded = request.headers.get("x-forwarded-proto", "")
    return is_trusted_proxy(peer, settings.trusted_proxies) and forwarded.lower() == "https"


def set_cookie(response: Response, request: Request, settings: Settings, value: str) -> None:
    response.set_cookie(
        COOKIE, value, path=PREFIX, httponly=True, samesite="strict",
        secure=secure(request, settings),
        max_age=int(settings.console_lifetime_hours * 3600),
    )  # fmt: skip


def clear_cookie(response: Response, request: Request, settings: Settings) -> None:
    response.delete_cookie(
        COOKIE, path=PREFIX, httponly=True, samesite="strict", secure=secure(request, settings)
    )


# --- the session dependency ----------------------------------------------------------------------


def _resolve(request: Request, ctx: Context, *, activity: bool) -> Live:
    cookie = request.cookies.get(COOKIE)
    now = ctx.now()
    try:
        with ctx.db.reading() as session:
            live = sessions.resolve(session, cookie=cookie, limits=Limits.of(ctx.settings), now=now)
    except SessionEndedError as exc:
        reason = exc.extra.get("end_reason")
        if reason and cookie:
            with ctx.db.transaction() as session:
                sessions.end(session, cookie=cookie, reason=str(reason), actor=None, now=now)
        raise
    if activity and live.touch and cookie:
        with ctx.db.transaction() as session:
            sessions.touch(session, cookie=cookie, now=now)
    request.state.principal = str(live.actor.id)
    return live


def get_live(request: Request, ctx: CtxDep) -> Live:
    """The re-checked session, as activity (pages, media reads). Declared before any unit of
    work in a route's parameters: its own short transactions must not nest inside the request's."""
    return _resolve(request, ctx, activity=True)


def get_polled(request: Request, ctx: CtxDep) -> Live:
    """The same check for the player's status poll, which is not activity: an open tab left
    alone still reaches the idle timeout."""
    return _resolve(request, ctx, activity=False)


PolledDep = Annotated[Live, Depends(get_polled)]
LiveDep = Annotated[Live, Depends(get_live)]


def own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def require_csrf(
    request: Request, ctx: Context, session: Session, live: Live, token: str | None
) -> None:
    """Refuse a state-changing form without this session's token (or from another origin);
    the refusal is audited like any denial, after the unit of work."""
    why = sessions.check_csrf(
        live.row, token=token, origin=request.headers.get("origin"),
        fetch_site=request.headers.get("sec-fetch-site"), own_origin=own_origin(request),
    )  # fmt: skip
    if why is None:
        return
    deny(
        session, actor=live.actor.audit_name, role=live.actor.role.value,
        permission="console:form", reason=why, target=request.url.path, tenant_id=None,
        now=ctx.now(),
    )  # fmt: skip
    raise CsrfError("reload the page and try again")


@dataclass(frozen=True, slots=True)
class Posted:
    """A state-changing form that passed the CSRF check, with its unit of work."""

    live: Live
    ctx: Context
    session: Session

    @property
    def actor(self) -> Actor:
        return self.live.actor


def posted(
    request: Request,
    live: LiveDep,  # before the unit of work: its own short transactions must not nest
    ctx: CtxDep,
    session: SessionDep,
    csrf: Annotated[str | None, Form(max_length=128)] = None,
) -> Posted:
    require_csrf(request, ctx, session, live, csrf)
    return Posted(live=live, ctx=ctx, session=session)


PostedDep = Annotated[Posted, Depends(posted)]


def address(request: Request, settings: Settings) -> str:
    return client_address(request, settings.trusted_proxies)


# --- static files --------------------------------------------------------------------------------

STATIC: Mapping[str, str] = {"console.css": "text/css", "console.js": "text/javascript"}


def static_file(name: str) -> bytes | None:
    if name not in STATIC:
        return None
    return resources.files("vault.console").joinpath("static", name).read_bytes()


# --- errors --------------------------------------------------------------------------------------


def error_page(
    request: Request, status: int, code: str, title: str, detail: str | None
) -> Response | None:
    """The error table's answer as a page, for the console's pages; media and the player's poll
    keep problem+json (a script or the video element reads them)."""
    path = request.url.path
    if not (path == PREFIX or path.startswith(PREFIX + "/")):
        return None
    if path.startswith((f"{PREFIX}/media/", f"{PREFIX}/static/")) or path.endswith("/status"):
        return None
    if status == 401 and request.method == "GET" and COOKIE not in request.cookies:
        # Never signed in (no cookie at all): the sign-in page, as anyone would expect. A
        # session that has ended keeps its 401 page saying so.
        return RedirectResponse(f"{PREFIX}/sign-in", status_code=303, headers=PAGE_HEADERS)
    section = "/".join(path.split("/")[:3])
    back = section if section in {p for p, _, _ in NAV} else PREFIX
    response = render(
        request, "error.html", live=None, status=status, title=title,
        detail=detail or title, code=code, back=back, http_status=status,
    )  # fmt: skip
    if status == 401:
        clear_cookie(response, request, request.app.state.ctx.settings)
    return response


def install(app: Any) -> None:
    """Templates and the error page; the routers are included by :mod:`vault.app`."""
    app.state.console_templates = templates()
    app.state.error_page = error_page
