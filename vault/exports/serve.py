"""Serving an export: a one-time, expiring download with Range resume.

"One-time" means one completed transfer. The row keeps ``served_to``, the contiguous bytes from 0
delivered so far: a response that starts at or before it and runs to its end moves it on, so a
client that lost its connection resumes with ``Range: bytes=N-``. Once it reaches the size the
export is complete: the receipt (bytes, hash, when, who) is audited and every later request is
refused. Each request is audited before its first byte, like a recording read. Unknown id, wrong
token and wrong kind all answer the same 403, so the endpoint is no oracle for valid ids.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col

from vault import audit
from vault.context import Context
from vault.errors import ExportDeniedError, ExportGoneError, ExportUsedError
from vault.exports.tokens import token_matches
from vault.models import Export, ExportKind
from vault.recordings.ranges import parse_range
from vault.tags import AuditAction

__all__ = ["ExportResponse", "serve"]

_CHUNK = 1 << 20


@dataclass(slots=True)
class ExportResponse:
    status_code: int
    headers: dict[str, str]
    body: Iterator[bytes] = field(repr=False)


def _open(session: Session, export_id: uuid.UUID, token: str, kind: ExportKind) -> Export:
    row = session.get(Export, export_id)
    if row is None or row.kind != kind or not token_matches(token, row.token_hash):
        raise ExportDeniedError("this download link is not valid")
    return row


def _check(row: Export, now: datetime) -> None:
    if row.completed_at is not None:
        raise ExportUsedError("this download was already completed once")
    if row.revoked_at is not None or row.deleted_at is not None or row.expires_at <= now:
        raise ExportGoneError("this download has expired or was withdrawn")


def serve(
    ctx: Context,
    *,
    export_id: uuid.UUID,
    token: str,
    kind: ExportKind,
    range_header: str | None,
    actor_label: str,
    now: datetime,
) -> ExportResponse:
    with ctx.db.transaction() as session:
        row = _open(session, export_id, token, kind)
        _check(row, now)
        chosen = parse_range(range_header, row.size)
        start, end = chosen if chosen is not None else (0, row.size)
        audit.record(
            session, action=AuditAction.export_download, actor=actor_label, now=now,
            tenant_id=row.tenant_id, target=str(row.id),
            details={"kind": str(kind), "subject": str(row.subject_id), "range": [start, end]},
        )  # fmt: skip
        key, version, size, digest = row.object_key, row.version_id, row.size, row.sha256
        store = ctx.store_for(row.region)

    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Length": str(end - start),
        "Accept-Ranges": "bytes",
        "ETag": f'"{digest}"',
        "Content-Disposition": f'attachment; filename="{export_id}.age"',
    }
    if chosen is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"

    def body() -> Iterator[bytes]:
        offset = start
        while offset < end:
            chunk = store.read_range(
                key, version_id=version, offset=offset, length=min(_CHUNK, end - offset)
            )
            if not chunk:
                break
            offset += len(chunk)
            yield chunk
        # Only a response that went out whole counts towards the transfer.
        _progress(ctx, export_id, start=start, end=offset, actor_label=actor_label)

    return ExportResponse(206 if chosen is not None else 200, headers, body())


def _progress(
    ctx: Context, export_id: uuid.UUID, *, start: int, end: int, actor_label: str
) -> None:
    now = ctx.now()
    with ctx.db.transaction() as session:
        row = session.exec(
            sa.select(Export).where(col(Export.id) == export_id).with_for_update()  # type: ignore[call-overload]
        ).scalar_one()
        row.bytes_served += end - start
        if start <= row.served_to < end:
            row.served_to = end
        if row.served_to >= row.size and row.completed_at is None:
            row.completed_at = now
            audit.record(
                session, action=AuditAction.export_complete, actor=actor_label, now=now,
                tenant_id=row.tenant_id, target=str(row.id),
                details={"kind": row.kind, "subject": str(row.subject_id),
                         "bytes": row.size, "bytes_served": row.bytes_served,
                         "export_sha256": row.sha256},
            )  # fmt: skip
        session.add(row)
