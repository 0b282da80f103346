"""GET /v1/recordings/{id}/content: the decrypted stream, under a grant, with Range.

Any authenticated principal may call it: the grant is the permission, not the role (admin gets
no content without one either). The route is a plain ``def`` (FastAPI runs it in a worker
thread) and does the whole authorise + audit phase *before* building the response; no ``yield``
dependency is involved, because since FastAPI 0.118 those finish only after the stream.

Headers: ``Accept-Ranges: bytes``, the ingest Content-Type, a strong ETag (the ciphertext hash),
``Content-Length``, ``Content-Range`` on 206, ``Cache-Control: no-store``, ``nosniff``, a CSP of
``default-src 'none'; sandbox`` and ``Content-Disposition: inline`` (players need inline; the
Content-Type is only ever video/*, audio/* or octet-stream, and the CSP sandboxes the rest).
HEAD is not offered. A 416 is problem+json with ``Content-Range: bytes */SIZE`` (built by the
error table from the error's headers).

A stream that must stop after its headers went out (grant revoked or expired, a segment failing
authentication) is aborted: the connection closes short of Content-Length, so no client can
mistake it for the complete body.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from vault.api.deps import CtxDep, CurrentActor
from vault.api.problems import PROBLEM_JSON, SECURITY_HEADERS
from vault.authz import Actor
from vault.context import Context
from vault.recordings import playback

router = APIRouter(prefix="/v1/recordings", tags=["content"])


async def _body(first: bytes | None, rest: playback.PlaintextStream) -> AsyncIterator[bytes]:
    """The response body. A segment whose ciphertext has arrived (and with no grant re-check
    due) is decrypted right here on the event loop: AES-GCM of 1 MiB costs ~60 µs, less than a
    hop to a worker thread and back (issue #12); a step that would wait for the store or ask
    the database runs in a worker thread."""
    try:
        if first is not None:
            yield first
        while True:
            try:
                chunk = rest.next_at_hand()
            except StopIteration:
                return
            if chunk is None:
                chunk = await run_in_threadpool(next, rest, None)
                if chunk is None:
                    return
            yield chunk
    finally:
        if rest.finished:
            rest.close()  # nothing left in flight
        else:
            with anyio.CancelScope(shield=True):  # stopping the reads joins its helper threads
                await run_in_threadpool(rest.close)


@router.get(
    "/{recording_id}/content",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The whole recording"},
        206: {"description": "The requested byte range"},
        416: {"content": {PROBLEM_JSON: {}}, "description": "Range not satisfiable"},
    },
)
def get_content(
    ctx: CtxDep,
    actor: CurrentActor,
    recording_id: uuid.UUID,
    grant: Annotated[uuid.UUID | None, Query(description="the grant to read under")] = None,
    range_: Annotated[str | None, Header(alias="range", max_length=1024)] = None,
    if_range: Annotated[str | None, Header(max_length=256)] = None,
) -> Response:
    return respond(
        ctx, actor=actor, recording_id=recording_id, grant_id=grant, range_header=range_,
        if_range=if_range,
    )  # fmt: skip


def respond(
    ctx: Context,
    *,
    actor: Actor,
    recording_id: uuid.UUID,
    grant_id: uuid.UUID | None,
    range_header: str | None,
    if_range: str | None,
) -> Response:
    """Authorise, audit and stream one read: the API's content route and the console's media
    route both answer through here (same Range handling, audit and re-checks)."""
    # A 416 (with its Content-Range) and every other refusal go through the one error table.
    plan = playback.open_read(
        ctx, actor=actor, recording_id=recording_id, grant_id=grant_id,
        range_header=range_header, if_range=if_range, now=ctx.now(),
    )  # fmt: skip
    chunks = playback.PlaintextStream(ctx, plan)
    # Pull the first segment before any header is sent: a store outage or a bad header/first
    # segment still becomes a proper problem response instead of a cut connection.
    try:
        first = next(chunks, None)
    except BaseException:
        chunks.close()
        raise
    headers = {
        **SECURITY_HEADERS,
        "Accept-Ranges": "bytes",
        "Content-Length": str(plan.length),
        "ETag": plan.etag,
        "Content-Disposition": "inline",
    }
    if plan.partial:
        headers["Content-Range"] = plan.content_range
    return StreamingResponse(
        _body(first, chunks),
        status_code=206 if plan.partial else 200,
        media_type=plan.content_type,
        headers=headers,
    )
