"""/v1/reports/evidence: the evidence report for a period and a scope (privacy, auditor).

``tenant`` must be in the caller's scope (403, unknown and foreign alike); without it the report
covers every tenant and needs a principal over all tenants (403 ``all-tenants-required``).
``format=json`` answers the signed report file ``{statement, signature}`` (verify it with
``callvault report verify``); ``html`` and ``pdf`` are readings of the same signed statement.
The route opens no session of its own: :func:`vault.reports.service.issue` computes in a
read-only session and signs with none open."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import HTMLResponse, JSONResponse

from vault.api.deps import CtxDep, CurrentActor
from vault.api.problems import SECURITY_HEADERS
from vault.reports import evidence, render_html, render_pdf, service
from vault.validation import Text, Timestamp

router = APIRouter(prefix="/v1/reports", tags=["reports"])

# Never cached; the page loads nothing and runs nothing (its only allowance: its inline CSS).
_HEADERS = {**SECURITY_HEADERS}
_PAGE_HEADERS = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
}
_PDF_HEADERS = {
    **SECURITY_HEADERS,
    "Content-Disposition": 'attachment; filename="evidence-report.pdf"',
}


@router.get("/evidence", response_model=None)
def evidence_report(
    ctx: CtxDep,
    actor: CurrentActor,
    start: Annotated[Timestamp, Query(alias="from")],
    end: Annotated[Timestamp, Query(alias="to")],
    tenant: Annotated[Text | None, Query(min_length=1, max_length=64)] = None,
    fmt: Annotated[Literal["json", "html", "pdf"], Query(alias="format")] = "json",
) -> Response:
    body, signed = service.issue(
        ctx, actor=actor, tenant=tenant, start=start, end=end, now=ctx.now(), fmt=fmt
    )
    if fmt == "json":
        return JSONResponse(signed, headers=_HEADERS)
    sha256 = evidence.statement_sha256(signed)
    if fmt == "html":
        return HTMLResponse(render_html.render(body, sha256=sha256), headers=_PAGE_HEADERS)
    pdf = render_pdf.render(body, sha256=sha256)
    return Response(pdf, media_type="application/pdf", headers=_PDF_HEADERS)
