"""The console's oversight pages: the audit trail with filters and verification (auditor,
security), and legal holds and erasure requests with their receipts (privacy)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from vault.api.deps import CtxDep, ReadSessionDep
from vault.audit import checkpoints, reads
from vault.audit.chain import AuditFilter
from vault.authz import Permission
from vault.console import web
from vault.console.web import LiveDep
from vault.errors import AllTenantsRequiredError, InvalidInputError
from vault.retention import erasure, holds
from vault.tags import AuditAction

router = APIRouter(prefix=web.PREFIX, include_in_schema=False)

Field = Annotated[str, Query(max_length=64)]


def _uuid(value: str, name: str) -> uuid.UUID | None:
    if not value.strip():
        return None
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise InvalidInputError(f"{name}: not an id") from None


def _when(value: str, name: str) -> datetime | None:
    if not value.strip():
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(f"{name}: use ISO 8601, e.g. 2026-11-26T00:00:00Z") from None
    if when.tzinfo is None:
        raise InvalidInputError(f"{name}: give a time zone (Z for UTC)")
    return when


@router.get("/audit")
def audit_page(
    request: Request,
    live: LiveDep,
    ctx: CtxDep,
    recording_id: Field = "",
    actor: Field = "",
    action: Field = "",
    tenant_id: Field = "",
    from_: Annotated[str, Query(alias="from", max_length=40)] = "",
    to: Annotated[str, Query(max_length=40)] = "",
    verify: Annotated[str, Query(max_length=1)] = "",
) -> Response:
    now = ctx.now()
    filters = AuditFilter(
        recording_id=_uuid(recording_id, "recording"), actor=actor.strip() or None,
        action=action.strip() or None, tenant_id=_uuid(tenant_id, "tenant"),
        ts_from=_when(from_, "from"), ts_to=_when(to, "to"),
    )  # fmt: skip
    with ctx.db.reading() as session:  # authorizes audit:read (and audits a refusal)
        events = reads.list_events(
            session, actor=live.actor, limit=200, now=now, order="desc", filters=filters
        )
    verified: dict[str, Any] | None = None
    if verify:
        # Only for a caller the layer let through; the trusted key may come from the provider,
        # so it is fetched between the two read transactions, never inside one.
        key = checkpoints.trusted_public_key(ctx)
        with ctx.db.reading() as session:
            try:
                verified = reads.verify(session, actor=live.actor, public_key=key, now=now)
            except AllTenantsRequiredError:
                verified = {"error": "Verifying the chain needs a principal over all tenants."}
    shown = {
        "recording_id": recording_id, "actor": actor, "action": action, "tenant_id": tenant_id,
        "from_": from_, "to": to,
    }  # fmt: skip
    return web.render(
        request, "audit.html", live=live, events=events, f=shown,
        actions=[a.value for a in AuditAction], verified=verified, done=None,
    )  # fmt: skip


@router.get("/privacy")
def privacy_page(request: Request, live: LiveDep, ctx: CtxDep, session: ReadSessionDep) -> Response:
    now, actor = ctx.now(), live.actor
    hold_list = None
    if actor.can(Permission.hold_manage):
        hold_list = holds.list_holds(session, actor=actor, now=now, limit=200)
    erasures = None
    if actor.can(Permission.erasure_manage) or hold_list is None:
        # For a role with neither permission this is the one refusal, audited by the layer.
        erasures = erasure.list_requests(session, actor=actor, now=now, limit=200)
    return web.render(
        request, "privacy.html", live=live, holds=hold_list, erasures=erasures, now=now, done=None
    )
