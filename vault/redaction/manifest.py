"""The manifest of a derivative: what was removed and the proof that it was.

A signed document (:mod:`vault.audit.signing`) of type ``callvault.redaction-manifest``,
version 1: the profile and its operations with their parameters, the input's ciphertext hash, the
output's SHA-256, the input's tag *keys* and counts (never their values), the ffmpeg version, the
face model and its hash, and every verification check with its measured value and limit.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault import audit, media
from vault.audit import signing
from vault.profiles import RedactionProfile
from vault.redaction import faces
from vault.redaction.pipeline import Run

__all__ = ["MANIFEST_TYPE", "MANIFEST_VERSION", "build", "verify_manifest"]

MANIFEST_TYPE, MANIFEST_VERSION = signing.REDACTION_MANIFEST, 1


def build(
    *,
    derivative_id: uuid.UUID,
    parent_id: uuid.UUID,
    parent_ciphertext_sha256: str | None,
    redaction_id: uuid.UUID,
    trigger: str,
    profile_name: str,
    profile: RedactionProfile,
    run: Run,
    output_sha256: str,
    output_size: int,
    checks: list[dict[str, Any]],
    now: datetime,
) -> str:
    """The manifest's canonical text, not yet signed."""
    info, shape = run.info, run.shape
    uses_model = profile.first("blur_faces") is not None or run._checks_faces
    body: dict[str, Any] = {
        "recording_id": str(derivative_id),
        "parent_id": str(parent_id),
        "redaction_id": str(redaction_id),
        "trigger": trigger,
        "created_at": audit.format_ts(now),
        "profile": {
            "name": profile_name,
            "deidentifying": profile.deidentifying,
            "operations": [op.model_dump() for op in profile.operations],
        },
        "input": {
            "ciphertext_sha256": parent_ciphertext_sha256,
            "format": info.format,
            "duration_s": info.duration,
            "streams": [{"kind": s.kind, "codec": s.codec} for s in info.streams],
            "chapters": len(info.chapters),
            "tag_keys": dict(sorted(Counter(k for k, _ in info.all_tags()).items())),
        },
        "output": {
            "sha256": output_sha256,
            "size": output_size,
            "content_type": shape.content_type,
            "video": {"width": shape.width, "height": shape.height, "fps": shape.fps}
            if shape.video
            else None,
            "audio": {"sample_rate": 48_000, "channels": 1} if shape.audio_out else None,
        },
        "tools": {
            "ffmpeg": media.ffmpeg_version(),
            "face_model": {"name": faces.MODEL_NAME, "sha256": faces.MODEL_SHA256}
            if uses_model
            else None,
        },
        "checks": checks,
        "signature": {"alg": "Ed25519", "over": "the canonical JSON of this manifest"},
    }
    return signing.prepare_document(doc_type=MANIFEST_TYPE, version=MANIFEST_VERSION, body=body)


def verify_manifest(
    public_key: bytes | Ed25519PublicKey, canonical: str, signature: str
) -> dict[str, Any]:
    """The manifest, verified under the audit key; a checkpoint or receipt is refused."""
    return signing.verify_document(
        public_key, canonical, signature, doc_type=MANIFEST_TYPE, versions=(MANIFEST_VERSION,)
    )
