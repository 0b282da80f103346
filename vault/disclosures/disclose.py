"""Disclosing an approved request: one export per recording to the recipient's age key, and a
manifest of hashes signed with the audit key; and the authority's one-time download.

Concurrency and crashes. No transaction is open while exports are produced or the manifest is
signed (store and key-provider calls). A run first claims the disclosure (``run_id``, a
compare-and-set on an ``approved`` row) and withdraws the exports of any earlier run: their
tokens were never handed out, since tokens leave only in the answer of the run that moves the
disclosure to ``disclosed``. The run ends with a compare-and-set on its own claim; a run that
lost its claim (a re-run took over) withdraws its own exports. A crash at any point therefore
leaves an ``approved`` disclosure whose re-run is safe; withdrawn exports are deleted by the
``purge-exports`` job.

The manifest (type ``callvault.disclosure-manifest``, version 1) lists per recording: export id,
size and SHA-256 of the age file, SHA-256 of the plaintext, recording id. The recipient verifies
it with the audit public key (returned with the package, and what ``callvault audit`` trusts).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import col

from crypto.age import parse_recipient
from vault import exports
from vault.audit import signed_rows, signing
from vault.audit.chain import format_ts
from vault.authz import Actor, Permission
from vault.context import Context
from vault.disclosures import register, states
from vault.errors import DisclosureScopeError, DisclosureStateError
from vault.exports import ExportResponse, Produced
from vault.models import Disclosure, DisclosureStatus, ExportKind, Recording, RecordingStatus
from vault.models.disclosures import DisclosureDownload, DisclosurePackage

__all__ = ["DOC_TYPE", "VERSION", "disclose", "download", "verify_manifest"]

DOC_TYPE, VERSION = signing.DISCLOSURE_MANIFEST, 1
DOWNLOAD_PATH = "/downloads/disclosures/{export_id}"
S = DisclosureStatus


def _claim(ctx: Context, actor: Actor, disclosure_id: uuid.UUID, now: datetime) -> tuple[
    Disclosure, list[uuid.UUID], uuid.UUID
]:  # fmt: skip
    run_id = uuid.uuid4()
    with ctx.db.transaction() as session:
        row = register.get(
            session, actor=actor, disclosure_id=disclosure_id, now=now,
            permission=Permission.disclosure_manage, lock=True,
        )  # fmt: skip
        if row.status == S.objected:
            raise DisclosureStateError(
                f"disclosure {row.id} was objected to: nothing is ever exported for it"
            )
        if row.status != S.approved:
            raise DisclosureStateError(f"disclosure {row.id} is {row.status}, not approved")
        ids = register.recording_ids(session, row.id)
        stored = session.exec(
            sa.select(sa.func.count()).where(
                col(Recording.id).in_(ids), Recording.status == RecordingStatus.stored.value
            )
        ).one()[0]
        if stored != len(ids):
            raise DisclosureScopeError(
                f"{len(ids) - stored} recording(s) of the disclosure are no longer stored; "
                "change its scope (approvals are then given again)"
            )
        # An earlier run's exports: their tokens never left; withdraw them (audited there).
        exports.revoke(
            session, subject_id=row.id, reason="disclose re-run", actor=actor.audit_name,
            now=now,
        )  # fmt: skip
        session.execute(
            sa.update(Disclosure)
            .where(col(Disclosure.id) == row.id, Disclosure.status == S.approved.value)
            .values(run_id=run_id)
        )
        session.expunge(row)
    return row, ids, run_id


def _withdraw(ctx: Context, produced: Sequence[Produced], actor: Actor, now: datetime) -> None:
    if not produced:
        return
    with ctx.db.transaction() as session:
        exports.revoke(
            session, export_ids=[p.export_id for p in produced], reason="disclose failed",
            actor=actor.audit_name, now=now,
        )  # fmt: skip


def manifest_body(
    row: Disclosure, pairs: Sequence[tuple[uuid.UUID, Produced]], *, now: datetime,
    expires_at: datetime,
) -> dict[str, Any]:  # fmt: skip
    return {
        "disclosure_id": str(row.id), "revision": row.revision, "tenant_id": str(row.tenant_id),
        "authority": row.authority, "legal_reference": row.legal_reference,
        "recipient_fingerprint": row.recipient_fingerprint, "created_at": format_ts(now),
        "expires_at": format_ts(expires_at),
        "recordings": [
            {"recording_id": str(rid), "export_id": str(p.export_id), "size": p.size,
             "sha256": p.sha256, "plaintext_sha256": p.plaintext_sha256}
            for rid, p in pairs
        ],
    }  # fmt: skip


def disclose(
    ctx: Context, *, actor: Actor, disclosure_id: uuid.UUID, now: datetime
) -> DisclosurePackage:
    """Produce the exports and the signed manifest; the tokens are in this answer only."""
    row, ids, run_id = _claim(ctx, actor, disclosure_id, now)
    expires_at = now + timedelta(hours=ctx.settings.disclosure_export_hours)
    recipient = parse_recipient(row.recipient)
    pairs: list[tuple[uuid.UUID, Produced]] = []
    try:
        for rid in ids:
            pairs.append((rid, exports.produce(
                ctx, kind=ExportKind.disclosure, subject_id=row.id, recording_id=rid,
                recipient=recipient, expires_at=expires_at, now=now, actor=actor.audit_name,
            )))  # fmt: skip
        body = manifest_body(row, pairs, now=now, expires_at=expires_at)
        signed = signing.sign_document(ctx.keys, doc_type=DOC_TYPE, version=VERSION, body=body)
        public_key = signed_rows.trusted_public_key(ctx)
        with ctx.db.transaction() as session:
            current = states.claim(session, row.id)
            assert current is not None
            states.transition(
                session, current, from_=S.approved, to=S.disclosed, actor=actor.audit_name,
                now=now, where=[Disclosure.run_id == run_id],
                values={"disclosed_at": now, "export_expires_at": expires_at,
                        "manifest_statement": signed.canonical,
                        "manifest_signature": signed.signature, "run_id": None},
                details={"export_ids": [str(p.export_id) for _, p in pairs],
                         "recordings": len(pairs), "bytes": sum(p.size for _, p in pairs),
                         "manifest_sha256": signed.sha256,
                         "expires_at": format_ts(expires_at)},
            )  # fmt: skip
            public = register.to_public(session, current, now=now)
    except BaseException:
        _withdraw(ctx, [p for _, p in pairs], actor, now)
        raise
    manifest = {"statement": signed.canonical, "signature": signed.signature}
    return DisclosurePackage(
        disclosure=public, manifest=manifest, public_key=public_key.hex(),
        downloads=[
            DisclosureDownload(
                export_id=p.export_id, recording_id=rid, token=p.token, size=p.size,
                sha256=p.sha256, expires_at=p.expires_at,
                path=DOWNLOAD_PATH.format(export_id=p.export_id),
            )
            for rid, p in pairs
        ],
    )  # fmt: skip


def verify_manifest(public_key: bytes, manifest: dict[str, str] | str) -> dict[str, Any]:
    """The verified manifest from ``{statement, signature}`` (or its JSON text);
    ``SignedDocumentError`` when it does not verify or is another type or version."""
    doc = json.loads(manifest) if isinstance(manifest, str) else manifest
    fields = ("statement", "signature")
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str) for k in fields):
        raise signing.SignedDocumentError("a manifest is {statement, signature}", doc_type=DOC_TYPE)
    return signing.verify_document(
        public_key, doc["statement"], doc["signature"], doc_type=DOC_TYPE, versions=(VERSION,)
    )


def download(
    ctx: Context, *, export_id: uuid.UUID, token: str, range_header: str | None, now: datetime
) -> ExportResponse:
    """The authority's one-time, expiring download: the token is its only credential."""
    return exports.serve(
        ctx, export_id=export_id, token=token, kind=ExportKind.disclosure,
        range_header=range_header, actor_label="authority", now=now,
    )  # fmt: skip
