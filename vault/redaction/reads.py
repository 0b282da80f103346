"""Reading a derivative's manifest, verified under the trusted audit key before it is shown."""

from __future__ import annotations

import uuid
from datetime import datetime

from vault import authz
from vault.audit import checkpoints
from vault.authz import Actor, Permission
from vault.context import Context
from vault.errors import NotFoundError
from vault.models import Manifest, ManifestPublic, Recording
from vault.redaction.manifest import verify_manifest

__all__ = ["manifest"]


def manifest(
    ctx: Context, *, actor: Actor, recording_id: uuid.UUID, now: datetime
) -> ManifestPublic:
    """The manifest of a derivative; 404 for a recording that is not one (or not visible).

    The signature, the type and the version are checked against the trusted key, so what is
    shown is what was signed (a tampered row is an integrity failure, not a manifest). The key
    is fetched once the read session has closed (no key-provider call inside a transaction).
    """
    with ctx.db.reading() as session:
        authz.authorize(session, actor, Permission.recording_metadata_read, now=now)
        authz.get_visible(
            session, actor, Recording, recording_id,
            permission=Permission.recording_metadata_read, now=now, what="recording",
        )  # fmt: skip
        row = session.get(Manifest, recording_id)
        if row is None:
            raise NotFoundError(f"recording {recording_id} is not a derivative with a manifest")
        canonical, signature = row.canonical, row.signature
    doc = verify_manifest(checkpoints.trusted_public_key(ctx), canonical, signature)
    return ManifestPublic(
        recording_id=recording_id, manifest=doc, canonical=canonical, signature=signature
    )
