"""/v1/subprocessors (staff read, admin write), the public /subprocessors list, and /v1/handoffs
(the ``subprocessor`` role's only endpoints)."""

from __future__ import annotations

import uuid
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Path, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from jinja2 import Environment

from vault import exports
from vault.api.body import RequestBody
from vault.api.deps import CtxDep, CurrentActor, ReadSessionDep, SessionDep
from vault.api.limits import Uploads
from vault.api.problems import SECURITY_HEADERS
from vault.errors import PayloadTooLargeError
from vault.exports.http import to_response
from vault.models import (
    ExportKind,
    HandoffClaim,
    HandoffPublic,
    SubprocessorCreate,
    SubprocessorListing,
    SubprocessorPublic,
    SubprocessorRemove,
)
from vault.subprocessors import redeem, registry
from vault.validation import Text

router = APIRouter(tags=["subprocessors"])

# A transcript is text: far below a recording's limit.
MAX_TRANSCRIPT_BYTES = 16 << 20

_PAGE_HEADERS = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
}
_PAGE = Environment(autoescape=True).from_string("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Sub-processors</title>
<style>body{font-family:sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse}
td,th{border:1px solid #bbb;padding:.2em .5em;text-align:left}.gone{color:#777}</style>
</head><body><h1>Sub-processors</h1>
<p>Personal data goes to these sub-processors only for the purpose named, and only for customers
who opted in. Removed entries stay listed with the date they stopped receiving data.</p>
<table><tr><th>Name</th><th>Purpose</th><th>Region</th><th>Added</th><th>Removed</th></tr>
{% for s in rows %}<tr{% if s.removed_at %} class="gone"{% endif %}><td>{{ s.name }}</td>
<td>{{ s.purpose }}</td><td>{{ s.region }}</td><td>{{ s.added_at.date() }}</td>
<td>{{ s.removed_at.date() if s.removed_at else "" }}</td></tr>
{% endfor %}</table></body></html>
""")


# --- the registry ---------------------------------------------------------------------------------


@router.get("/v1/subprocessors", response_model=list[SubprocessorPublic])
def list_subprocessors(
    ctx: CtxDep, session: ReadSessionDep, actor: CurrentActor
) -> list[SubprocessorPublic]:
    return registry.list_subprocessors(session, actor=actor, now=ctx.now())


@router.post("/v1/subprocessors", status_code=201, response_model=SubprocessorPublic)
def add_subprocessor(
    ctx: CtxDep, session: SessionDep, actor: CurrentActor, body: SubprocessorCreate
) -> SubprocessorPublic:
    return registry.add_subprocessor(
        session, actor=actor, policy=ctx.policy, body=body, now=ctx.now()
    )


@router.post("/v1/subprocessors/{name}/remove", response_model=SubprocessorPublic)
def remove_subprocessor(
    ctx: CtxDep,
    session: SessionDep,
    actor: CurrentActor,
    name: Annotated[Text, Path(min_length=1, max_length=64)],
    body: SubprocessorRemove,
) -> SubprocessorPublic:
    return registry.remove_subprocessor(
        session, actor=actor, name=name, reason=body.reason, now=ctx.now()
    )


def _listing(session: ReadSessionDep) -> list[SubprocessorListing]:
    return registry.public_list(session)


@router.get("/subprocessors.json", response_model=list[SubprocessorListing])
def public_list_json(session: ReadSessionDep) -> JSONResponse:
    """The published list, for everyone (no key): name, purpose, region, added, removed."""
    rows = [r.model_dump(mode="json") for r in _listing(session)]
    return JSONResponse(rows, headers=SECURITY_HEADERS)


@router.get("/subprocessors", response_model=None)
def public_list(request: Request, session: ReadSessionDep) -> Response:
    """The published list as HTML, or JSON when the client asks for it (``Accept``)."""
    accept = request.headers.get("accept", "")
    if "application/json" in accept and "text/html" not in accept:
        return public_list_json(session)
    return HTMLResponse(_PAGE.render(rows=_listing(session)), headers=_PAGE_HEADERS)


# --- hand-offs (the subprocessor role) -----------------------------------------------------------


@router.get("/v1/handoffs", response_model=list[HandoffPublic])
def list_handoffs(ctx: CtxDep, session: ReadSessionDep, actor: CurrentActor) -> list[HandoffPublic]:
    return redeem.list_own(session, actor=actor, now=ctx.now())


@router.post("/v1/handoffs/{handoff_id}/claim", response_model=HandoffClaim)
def claim_handoff(
    ctx: CtxDep, session: SessionDep, actor: CurrentActor, handoff_id: uuid.UUID
) -> HandoffClaim:
    return redeem.claim_token(session, actor=actor, handoff_id=handoff_id, now=ctx.now())


@router.get("/v1/handoffs/{handoff_id}/media", response_model=None)
def download_handoff(
    ctx: CtxDep,
    actor: CurrentActor,
    handoff_id: uuid.UUID,
    x_handoff_token: Annotated[str | None, Header(max_length=256)] = None,
    range_header: Annotated[str | None, Header(alias="Range", max_length=256)] = None,
) -> Response:
    """The media, age-encrypted to the sub-processor's key: its own key and the hand-off's token
    (``X-Handoff-Token``); one completed transfer, Range resumes until then."""
    export_id = redeem.open_download(ctx, actor=actor, handoff_id=handoff_id, now=ctx.now())
    return to_response(exports.serve(
        ctx, export_id=export_id, token=x_handoff_token or "", kind=ExportKind.handoff,
        range_header=range_header, actor_label=actor.audit_name, now=ctx.now(),
    ))  # fmt: skip


@router.post("/v1/handoffs/{handoff_id}/transcript", status_code=201,
             response_model=HandoffPublic)  # fmt: skip
async def store_transcript(
    request: Request,
    ctx: CtxDep,
    actor: CurrentActor,
    handoff_id: uuid.UUID,
    content_type: Annotated[str | None, Header()] = None,
    content_length: Annotated[int | None, Header(ge=0)] = None,
) -> HandoffPublic:
    limit = min(MAX_TRANSCRIPT_BYTES, ctx.settings.max_ingest_bytes)
    if content_length is not None and content_length > limit:
        raise PayloadTooLargeError(f"at most {limit} bytes per transcript")
    body = RequestBody(request.receive, idle=ctx.settings.upload_idle_timeout_seconds)
    uploads: Uploads = request.app.state.uploads

    def run() -> HandoffPublic:
        with uploads.slot(str(actor.id)):
            return redeem.store_transcript(
                ctx, actor=actor, handoff_id=handoff_id, content_type=content_type or "",
                chunks=body.chunks(),
                max_bytes=limit, now=ctx.now(),
            )  # fmt: skip

    return await anyio.to_thread.run_sync(run)
