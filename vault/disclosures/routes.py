"""/v1/disclosures (the legal-disclosure register) and the authority's download.

Routes parse and shape; the services decide every rule through :func:`vault.authz.authorize`.
``POST /v1/disclosures/{id}/disclose`` opens no session of its own around the exports (store and
key-provider calls): :func:`vault.disclosures.disclose.disclose` runs its own units of work.

The download (``GET /downloads/disclosures/{export_id}``) takes no API key: the authority has
none. Its one credential is the token, sent in the ``X-Download-Token`` header, never in the URL
(URLs end up in access logs and browser histories).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from vault.api.deps import CtxDep, CurrentActor, ReadSessionDep, SessionDep
from vault.disclosures import approvals, disclose, notification, register
from vault.errors import ExportDeniedError
from vault.exports.http import to_response
from vault.models import DisclosurePublic, DisclosureStatus
from vault.models.disclosures import (
    DisclosureApprove,
    DisclosureCreate,
    DisclosureNotification,
    DisclosurePackage,
    DisclosureReason,
    DisclosureUpdate,
)

router = APIRouter(tags=["disclosures"])
BASE = "/v1/disclosures"


@router.post(BASE, status_code=201, response_model=DisclosurePublic)
def receive(
    ctx: CtxDep, session: SessionDep, actor: CurrentActor, body: DisclosureCreate
) -> DisclosurePublic:
    now = ctx.now()
    row = register.receive(session, actor=actor, body=body, now=now)
    return register.to_public(session, row, now=now)


@router.get(BASE, response_model=list[DisclosurePublic])
def list_disclosures(
    ctx: CtxDep, session: ReadSessionDep, actor: CurrentActor,
    status: Annotated[DisclosureStatus | None, Query()] = None,
) -> list[DisclosurePublic]:  # fmt: skip
    now = ctx.now()
    rows = register.list_disclosures(session, actor=actor, status=status, now=now)
    return [register.to_public(session, r, now=now) for r in rows]


@router.get(BASE + "/{disclosure_id}", response_model=DisclosurePublic)
def get_disclosure(
    ctx: CtxDep, session: ReadSessionDep, actor: CurrentActor, disclosure_id: uuid.UUID
) -> DisclosurePublic:
    now = ctx.now()
    row = register.get(session, actor=actor, disclosure_id=disclosure_id, now=now)
    return register.to_public(session, row, now=now)


@router.patch(BASE + "/{disclosure_id}", response_model=DisclosurePublic)
def update(
    ctx: CtxDep, session: SessionDep, actor: CurrentActor, disclosure_id: uuid.UUID,
    body: DisclosureUpdate,
) -> DisclosurePublic:  # fmt: skip
    now = ctx.now()
    row = register.update(session, actor=actor, disclosure_id=disclosure_id, body=body, now=now)
    return register.to_public(session, row, now=now)


@router.post(BASE + "/{disclosure_id}/object", response_model=DisclosurePublic)
def object_to(
    ctx: CtxDep, session: SessionDep, actor: CurrentActor, disclosure_id: uuid.UUID,
    body: DisclosureReason,
) -> DisclosurePublic:  # fmt: skip
    now = ctx.now()
    row = register.object_to(
        session, actor=actor, disclosure_id=disclosure_id, reason=body.reason, now=now
    )
    return register.to_public(session, row, now=now)


@router.post(BASE + "/{disclosure_id}/approve", response_model=DisclosurePublic)
def approve(
    ctx: CtxDep, session: SessionDep, actor: CurrentActor, disclosure_id: uuid.UUID,
    body: DisclosureApprove,
) -> DisclosurePublic:  # fmt: skip
    now = ctx.now()
    row = approvals.approve(
        session, actor=actor, disclosure_id=disclosure_id, revision=body.revision,
        recipient_fingerprint=body.recipient_fingerprint, verification=body.verification,
        now=now,
    )  # fmt: skip
    return register.to_public(session, row, now=now)


@router.post(BASE + "/{disclosure_id}/review", response_model=DisclosurePublic)
def review(
    ctx: CtxDep, session: SessionDep, actor: CurrentActor, disclosure_id: uuid.UUID,
    body: DisclosureReason,
) -> DisclosurePublic:  # fmt: skip
    now = ctx.now()
    row = approvals.review(
        session, actor=actor, disclosure_id=disclosure_id, comment=body.reason, now=now
    )
    return register.to_public(session, row, now=now)


@router.post(BASE + "/{disclosure_id}/disclose", status_code=201, response_model=DisclosurePackage)
def disclose_now(ctx: CtxDep, actor: CurrentActor, disclosure_id: uuid.UUID) -> DisclosurePackage:
    return disclose.disclose(ctx, actor=actor, disclosure_id=disclosure_id, now=ctx.now())


@router.post(BASE + "/{disclosure_id}/close", response_model=DisclosurePublic)
def close(
    ctx: CtxDep, session: SessionDep, actor: CurrentActor, disclosure_id: uuid.UUID,
    body: DisclosureReason,
) -> DisclosurePublic:  # fmt: skip
    now = ctx.now()
    row = register.close(
        session, actor=actor, disclosure_id=disclosure_id, reason=body.reason, now=now
    )
    return register.to_public(session, row, now=now)


@router.post(BASE + "/{disclosure_id}/notification", response_model=DisclosurePublic)
def notify(
    ctx: CtxDep, session: SessionDep, actor: CurrentActor, disclosure_id: uuid.UUID,
    body: DisclosureNotification,
) -> DisclosurePublic:  # fmt: skip
    now = ctx.now()
    row = notification.notify(session, actor=actor, disclosure_id=disclosure_id, body=body, now=now)
    return register.to_public(session, row, now=now)


@router.get(disclose.DOWNLOAD_PATH, response_class=StreamingResponse)
def download(
    ctx: CtxDep,
    export_id: uuid.UUID,
    token: Annotated[str | None, Header(alias="x-download-token", max_length=256)] = None,
    range_: Annotated[str | None, Header(alias="range", max_length=1024)] = None,
) -> StreamingResponse:
    if not token:
        raise ExportDeniedError("the download token goes in the X-Download-Token header")
    resp = disclose.download(
        ctx, export_id=export_id, token=token, range_header=range_, now=ctx.now()
    )
    return to_response(resp)
