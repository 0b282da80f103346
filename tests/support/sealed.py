"""Bytes encrypted in memory with the streaming format, for tests that read ciphertext."""

from __future__ import annotations

import io
import uuid

from crypto import streaming


def encrypted(plaintext: bytes, *, dek: bytes, recording_id: uuid.UUID) -> bytes:
    """``plaintext`` as one ciphertext object (a fresh header and nonce prefix each call)."""
    out = io.BytesIO()
    streaming.encrypt(io.BytesIO(plaintext), out, dek=dek, recording_id=recording_id)
    return out.getvalue()
