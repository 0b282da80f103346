"""The HTTP shape of an export download, for the routes of the domains that own exports."""

from __future__ import annotations

from fastapi.responses import StreamingResponse

from vault.api.problems import SECURITY_HEADERS
from vault.exports.serve import ExportResponse

__all__ = ["to_response"]


def to_response(resp: ExportResponse) -> StreamingResponse:
    return StreamingResponse(
        resp.body, status_code=resp.status_code, headers={**SECURITY_HEADERS, **resp.headers},
        media_type=resp.headers["Content-Type"],
    )  # fmt: skip
