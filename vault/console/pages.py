"""The console's pages: my access, reviews, playback, break-glass, audit and privacy.

Each page asks the same services as the API, so what a principal sees and may do is decided by
the one authorization layer; a page the role cannot use answers 403 from it, like the API.
Forms post back here with the session's CSRF token and redirect (303) to the page on success; a
refused form (bad input, a rule) shows the error table's message and changes nothing.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlmodel import Session

from vault import authz
from vault.access import breakglass, queries
from vault.access import requests as access
from vault.api.deps import CtxDep, ReadSessionDep
from vault.authz import Permission
from vault.console import sessions, web
from vault.console.routes import see_other
from vault.console.sessions import Live
from vault.console.web import LiveDep, PostedDep
from vault.errors import InvalidInputError, NotFoundError, PermissionDeniedError
from vault.models import AccessRequestStatus, Principal, ReviewDecision
from vault.recordings import metadata

router = APIRouter(prefix=web.PREFIX, include_in_schema=False)

Text = Annotated[str, Form(max_length=10_000)]
DONE = {
    "requested": "Request sent for review.",
    "approved": "Approved.",
    "denied": "Denied.",
    "revoked": "Revoked.",
    "break-glass": "Break-glass grant opened; it needs an after-review.",
    "reviewed": "After-review recorded.",
}


def parse_ids(text: str) -> list[uuid.UUID]:
    ids = []
    for word in re.split(r"[\s,;]+", text.strip()):
        if not word:
            continue
        try:
            ids.append(uuid.UUID(word))
        except ValueError:
            raise InvalidInputError("recording ids: one of them is not an id") from None
    if not ids:
        raise InvalidInputError("recording ids: name at least one recording")
    return ids


def parse_minutes(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InvalidInputError("duration: give a number of minutes") from None


def _done(request: Request) -> str | None:
    return DONE.get(request.query_params.get("done", ""))


# --- my access -----------------------------------------------------------------------------------


@router.get("")
def home(request: Request, live: LiveDep, ctx: CtxDep, session: ReadSessionDep) -> Response:
    now, actor = ctx.now(), live.actor
    mine = []
    if actor.can(Permission.access_request_read):
        mine = queries.list_requests(
            session, actor=actor, status=None, now=now, limit=100, mine=True
        )
    grants = []
    if actor.can(Permission.grant_read):
        grants = queries.list_grants(
            session, actor=actor, active=None, needs_review=None, now=now, limit=100, mine=True
        )
    purposes = [(n, ctx.policy.purpose(n).max_access_minutes) for n in ctx.policy.names]
    return web.render(
        request, "home.html", live=live, requests=mine, grants=grants, now=now,
        purposes=purposes, can_request=actor.can(Permission.access_request), done=_done(request),
    )  # fmt: skip


@router.post("/requests")
def request_access(
    form: PostedDep,
    recording_ids: Text = "",
    purpose: Annotated[str, Form(max_length=64)] = "",
    reason: Text = "",
    ticket: Annotated[str, Form(max_length=1000)] = "",
    duration_minutes: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    ctx, session, live = form.ctx, form.session, form.live
    access.create_request(
        session, actor=live.actor, policy=ctx.policy, recording_ids=parse_ids(recording_ids),
        purpose=purpose, reason=reason, ticket=ticket,
        duration_minutes=parse_minutes(duration_minutes),
        request_ttl=timedelta(hours=ctx.settings.access_request_ttl_hours), now=ctx.now(),
    )  # fmt: skip
    return see_other(f"{web.PREFIX}?done=requested")


# --- reviews -------------------------------------------------------------------------------------


def _requester(session: Session, principal_id: uuid.UUID) -> Principal | None:
    return session.get(Principal, principal_id)


def _recordings(session: Session, live: Live, ids: list[uuid.UUID], now: Any) -> list[Any]:
    shown = []
    for rid in ids:
        try:
            shown.append(
                metadata.get_recording(session, actor=live.actor, recording_id=rid, now=now)
            )
        except (NotFoundError, PermissionDeniedError):
            shown.append(None)
    return shown


@router.get("/reviews")
def reviews(request: Request, live: LiveDep, ctx: CtxDep, session: ReadSessionDep) -> Response:
    now, actor = ctx.now(), live.actor
    # The page is the reviewer's queue: without access:review the layer refuses (and audits).
    authz.authorize(session, actor, Permission.access_review, now=now)
    pending = queries.list_requests(
        session, actor=actor, status=AccessRequestStatus.pending, now=now, limit=100
    )
    waiting = []
    for r in pending:
        who = _requester(session, r.requester_id)
        shown = _recordings(session, live, r.recording_ids, now)
        waiting.append({
            "request": r,
            "requester": who.name if who else str(r.requester_id),
            "owner": who.owner_ref if who else "",
            # Four-eyes is by owner: one's own requests are shown, never offered for review.
            "own": who is not None and actor.is_owner(who.owner_ref),
            "recordings": list(zip(r.recording_ids, shown, strict=True)),
        })  # fmt: skip
    approved = queries.list_requests(
        session, actor=actor, status=AccessRequestStatus.approved, now=now, limit=50
    )
    return web.render(
        request, "reviews.html", live=live, waiting=waiting, approved=approved, now=now,
        can_revoke=actor.can(Permission.grant_revoke), done=_done(request),
    )  # fmt: skip


@router.post("/reviews/{request_id}/{decision}")
def decide(
    form: PostedDep,
    request_id: uuid.UUID,
    decision: ReviewDecision,
    comment: Text = "",
) -> Response:
    ctx, session, live = form.ctx, form.session, form.live
    access.review(
        session, actor=live.actor, policy=ctx.policy, request_id=request_id, decision=decision,
        comment=comment, now=ctx.now(),
    )  # fmt: skip
    done = "approved" if decision == ReviewDecision.approve else "denied"
    return see_other(f"{web.PREFIX}/reviews?done={done}")


@router.post("/requests/{request_id}/revoke")
def revoke_request(
    form: PostedDep,
    request_id: uuid.UUID,
    reason: Text = "",
    back: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    ctx, session, live = form.ctx, form.session, form.live
    access.revoke_request(
        session, actor=live.actor, request_id=request_id, reason=reason, now=ctx.now()
    )
    page = back if back in {p for p, _, _ in web.NAV} else web.PREFIX
    return see_other(f"{page}?done=revoked")


@router.post("/grants/{grant_id}/revoke")
def revoke_grant(
    form: PostedDep,
    grant_id: uuid.UUID,
    reason: Text = "",
) -> Response:
    ctx, session, live = form.ctx, form.session, form.live
    access.revoke_grant(session, actor=live.actor, grant_id=grant_id, reason=reason, now=ctx.now())
    return see_other(f"{web.PREFIX}?done=revoked")


# --- playback ------------------------------------------------------------------------------------


@router.get("/play/{grant_id}/{recording_id}")
def play(
    request: Request,
    live: LiveDep,
    ctx: CtxDep,
    session: ReadSessionDep,
    grant_id: uuid.UUID,
    recording_id: uuid.UUID,
) -> Response:
    now = ctx.now()
    grant = queries.get_grant(session, actor=live.actor, grant_id=grant_id, now=now)
    if grant.principal_id != live.actor.id or recording_id not in grant.recording_ids:
        raise NotFoundError("no such recording under this grant")
    if not grant.active:
        # The media route would refuse every read anyway; say why instead of a dead player.
        state = "revoked" if grant.revoked_at else "not active"
        raise PermissionDeniedError(f"this grant is {state}; request access again")
    # The link lives no longer than the grant or the session; every read re-checks both.
    expires = min(grant.expires_at, live.row.expires_at)
    token = sessions.media_token(
        live.row, grant_id=grant_id, recording_id=recording_id, expires=expires
    )
    src = f"{web.PREFIX}/media/{grant_id}/{recording_id}?token={token}"
    status_url = f"{web.PREFIX}/grants/{grant_id}/status"
    return web.render(
        request, "play.html", live=live, grant=grant, recording_id=recording_id, src=src,
        status_url=status_url, now=now,
    )  # fmt: skip


# --- break-glass ---------------------------------------------------------------------------------


@router.get("/break-glass")
def break_glass_page(
    request: Request, live: LiveDep, ctx: CtxDep, session: ReadSessionDep
) -> Response:
    now = ctx.now()
    needing = queries.list_grants(
        session, actor=live.actor, active=None, needs_review=True, now=now, limit=100
    )
    purposes = [(n, ctx.policy.purpose(n).max_access_minutes) for n in ctx.policy.names]
    return web.render(
        request, "break_glass.html", live=live, needing=needing, now=now, purposes=purposes,
        can_open=live.actor.can(Permission.break_glass),
        can_review=live.actor.can(Permission.break_glass_review), done=_done(request),
    )  # fmt: skip


@router.post("/break-glass")
def break_glass(
    form: PostedDep,
    recording_ids: Text = "",
    purpose: Annotated[str, Form(max_length=64)] = "",
    incident_ref: Annotated[str, Form(max_length=1000)] = "",
    reason: Text = "",
    duration_minutes: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    ctx, session, live = form.ctx, form.session, form.live
    breakglass.break_glass(
        session, actor=live.actor, policy=ctx.policy, recording_ids=parse_ids(recording_ids),
        purpose=purpose, incident_ref=incident_ref, reason=reason,
        duration_minutes=parse_minutes(duration_minutes), now=ctx.now(),
    )  # fmt: skip
    return see_other(f"{web.PREFIX}/break-glass?done=break-glass")


@router.post("/grants/{grant_id}/review")
def review_break_glass(
    form: PostedDep,
    grant_id: uuid.UUID,
    comment: Text = "",
) -> Response:
    ctx, session, live = form.ctx, form.session, form.live
    breakglass.review_break_glass(
        session, actor=live.actor, grant_id=grant_id, comment=comment, now=ctx.now()
    )
    return see_other(f"{web.PREFIX}/break-glass?done=reviewed")
