"""Where recordings' ciphertext lies, by (actor, recording): playback's early GETs
(:mod:`vault.recordings.early`, issue #12). Held by the runtime context, like the header cache."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from vault.storage.lru import BoundedLru

__all__ = ["Location", "Locations"]


@dataclass(frozen=True, slots=True)
class Location:
    """Where a recording's ciphertext lies; callvault's own ids only (nothing a client sent)."""

    region: str | None
    object_key: str
    version_id: str | None
    ciphertext_size: int
    etag: str


class Locations(BoundedLru[tuple[uuid.UUID, uuid.UUID], Location]):
    """The locations of recently read recordings, by (actor, recording)."""
