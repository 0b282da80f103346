"""/v1/recordings: streaming ingest, metadata, ending a purpose."""

from __future__ import annotations

import uuid
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query, Request

from vault.api.body import RequestBody
from vault.api.deps import CtxDep, CurrentActor, ReadSessionDep, SessionDep
from vault.api.limits import Uploads
from vault.errors import PayloadTooLargeError
from vault.models import RecordingPage, RecordingPublic
from vault.recordings import metadata as recordings
from vault.recordings.ingest import ingest as ingest_recording
from vault.validation import MultilineText, Text, Timestamp

router = APIRouter(prefix="/v1/recordings", tags=["recordings"])


def _purposes(raw: list[str]) -> list[str]:
    return [p.strip() for item in raw for p in item.split(",") if p.strip()]


@router.post("", status_code=201, response_model=RecordingPublic)
async def ingest(
    request: Request,
    ctx: CtxDep,
    actor: CurrentActor,
    tenant: Annotated[Text, Query(min_length=1, max_length=64)],
    purposes: Annotated[list[Text], Query()] = [],  # noqa: B006 - FastAPI copies defaults
    call_id: Annotated[Text | None, Query(max_length=256)] = None,
    recorded_at: Timestamp | None = None,
    content_type: Annotated[str | None, Header()] = None,
    content_length: Annotated[int | None, Header(ge=0)] = None,
    x_content_sha256: Annotated[str | None, Header()] = None,
) -> RecordingPublic:
    settings = ctx.settings
    if content_length is not None and content_length > settings.max_ingest_bytes:
        # Refused before a byte is read or a row written.
        raise PayloadTooLargeError(f"at most {settings.max_ingest_bytes} bytes per recording")
    body = RequestBody(request.receive, idle=settings.upload_idle_timeout_seconds)
    uploads: Uploads = request.app.state.uploads

    def run() -> RecordingPublic:
        with uploads.slot(str(actor.id)):
            return _store()

    def _store() -> RecordingPublic:
        rec = ingest_recording(
            ctx,
            actor=actor,
            tenant=tenant,
            purposes=_purposes(purposes),
            call_id=call_id,
            recorded_at=recorded_at,
            content_type=content_type or "",
            chunks=body.chunks(),
            max_bytes=settings.max_ingest_bytes,
            expected_sha256=x_content_sha256,
            expected_length=content_length,
        )
        with ctx.db.reading() as session:
            return recordings.to_public(session, rec, now=ctx.now())

    return await anyio.to_thread.run_sync(run)


@router.get("", response_model=RecordingPage)
def list_recordings(
    ctx: CtxDep,
    session: ReadSessionDep,
    actor: CurrentActor,
    tenant: Annotated[Text | None, Query(max_length=64)] = None,
    purpose: Annotated[Text | None, Query(max_length=32)] = None,
    call_id: Annotated[Text | None, Query(max_length=256)] = None,
    status: Annotated[Text | None, Query(max_length=32)] = None,
    cursor: Annotated[Text | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> RecordingPage:
    return recordings.list_recordings(
        session, actor=actor, tenant=tenant, purpose=purpose, call_id=call_id, status=status,
        cursor=cursor, limit=min(limit, ctx.settings.list_page_limit), now=ctx.now(),
    )  # fmt: skip


@router.get("/{recording_id}", response_model=RecordingPublic)
async def get_recording(
    ctx: CtxDep, actor: CurrentActor, recording_id: uuid.UUID
) -> RecordingPublic:
    # The hottest read (issue #12) stays on the event loop: a plain ``def`` route takes two
    # thread-pool hops (FastAPI validates a sync route's answer on the pool too).
    return await recordings.read_recording(
        ctx.db, actor=actor, recording_id=recording_id, now=ctx.now()
    )


@router.delete("/{recording_id}/purposes/{purpose}", response_model=RecordingPublic)
def end_purpose(
    ctx: CtxDep,
    session: SessionDep,
    actor: CurrentActor,
    recording_id: uuid.UUID,
    purpose: str,
    reason: Annotated[MultilineText | None, Query(max_length=500)] = None,
) -> RecordingPublic:
    return recordings.end_purpose(
        session, actor=actor, recording_id=recording_id, purpose=purpose, reason=reason,
        now=ctx.now(),
    )  # fmt: skip
