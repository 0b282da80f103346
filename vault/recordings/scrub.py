"""The integrity scrub: sample stored recordings and check that their objects are still intact.

For each sampled recording the exact object version the row names is read with ranged GETs (in
constant memory) and its SHA-256 and size compared with the row; then the DEK is unwrapped and
one random segment authenticated with ``decrypt_range``. A mismatch flips the row
``stored -> integrity_failed`` (compare-and-set, so a recording disposed meanwhile raises no
alarm) with an ``integrity.alarm`` event in the same transaction. Each run audits a summary.

Failures of the store or the key provider are not integrity failures: they are counted as errors
and the recording is checked again in a later run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import col, select

from crypto import streaming
from crypto.errors import DecryptionError
from vault import audit, lifecycle
from vault.context import Context
from vault.errors import (
    BlobNotFoundError,
    KeyDestroyedError,
    KeyProviderUnavailableError,
    StorageError,
    WrappedKeyInvalidError,
)
from vault.models import Recording, RecordingStatus
from vault.tags import AuditAction, Outcome

__all__ = ["ScrubResult", "scrub"]

log = logging.getLogger(__name__)

S = RecordingStatus
SCRUB_ACTOR = "system:scrub"
READ_CHUNK = 4 << 20

Rng = Callable[[int], bytes]


@dataclass
class ScrubResult:
    sampled: int = 0
    ok: int = 0
    failed: list[uuid.UUID] = field(default_factory=list)
    errors: int = 0

    def summary(self) -> str:
        return (
            f"{self.sampled} sampled, {self.ok} intact, {len(self.failed)} integrity "
            f"failure(s), {self.errors} not checked (store or key provider errors)"
        )


def scrub(ctx: Context, *, now: datetime, sample: int = 10, rng: Rng | None = None) -> ScrubResult:
    """Check ``sample`` stored recordings; mark and audit the ones that fail."""
    if sample < 0:
        raise ValueError("sample must not be negative")
    rng = rng or ctx.rng or os.urandom
    result = ScrubResult()
    for rec in _sample(ctx, sample, rng):
        result.sampled += 1
        try:
            problem = _check(ctx, rec, rng)
        except (StorageError, KeyProviderUnavailableError, KeyDestroyedError) as exc:
            # Unreachable store or provider, or a DEK rewrapped and retired under our feet.
            log.warning("scrub: could not check recording %s: %s", rec.id, exc)
            result.errors += 1
            continue
        if problem is None:
            result.ok += 1
        elif _alarm(ctx, rec, problem, now):
            result.failed.append(rec.id)
    with ctx.db.transaction() as session:
        audit.record(
            session,
            action=AuditAction.scrub,
            actor=SCRUB_ACTOR,
            now=now,
            outcome=Outcome.failed if result.failed else Outcome.ok,
            details={
                "sampled": result.sampled,
                "ok": result.ok,
                "integrity_failures": len(result.failed),
                "errors": result.errors,
            },
        )
    return result


def _sample(ctx: Context, n: int, rng: Rng) -> list[Recording]:
    """Up to ``n`` stored recordings from a random point of the id order (ids are random)."""
    if n == 0:
        return []
    pivot = uuid.UUID(bytes=rng(16))
    stored = select(Recording).where(Recording.status == S.stored).order_by(col(Recording.id))
    with ctx.db.reading() as session:
        rows = list(session.exec(stored.where(col(Recording.id) >= pivot).limit(n)).all())
        if len(rows) < n:
            wrap = stored.where(col(Recording.id) < pivot).limit(n - len(rows))
            rows.extend(session.exec(wrap).all())
    return rows


def _check(ctx: Context, rec: Recording, rng: Rng) -> str | None:
    """The reason ``rec`` fails integrity, or None when it is intact."""
    key, version = rec.object_key, rec.version_id
    store, keys = ctx.store_for(rec.region), ctx.keys_for(rec.region)
    try:
        size = store.size(key, version_id=version)
    except BlobNotFoundError:
        return "object-missing"
    if rec.ciphertext_size is not None and size != rec.ciphertext_size:
        return "size-mismatch"
    digest, offset = hashlib.sha256(), 0
    while offset < size:
        chunk = store.read_range(key, version_id=version, offset=offset, length=READ_CHUNK)
        if not chunk:
            return "object-truncated"
        digest.update(chunk)
        offset += len(chunk)
    if digest.hexdigest() != rec.ciphertext_sha256:
        return "ciphertext-hash-mismatch"
    try:
        dek = keys.unwrap_dek(rec.wrapped_dek or "", tenant_id=rec.tenant_id, recording_id=rec.id)
    except WrappedKeyInvalidError:
        return "wrapped-dek-invalid"

    def read_at(off: int, length: int) -> bytes:
        return store.read_range(key, version_id=version, offset=off, length=length)

    try:
        start, end = _random_segment(size, rng)
        for _ in streaming.decrypt_range(
            read_at, dek=dek, recording_id=rec.id, ciphertext_size=size, start=start, end=end
        ):
            pass
    except (DecryptionError, ValueError):
        return "segment-authentication-failed"
    return None


def _random_segment(ciphertext_size: int, rng: Rng) -> tuple[int, int]:
    """A one-byte plaintext range inside a random segment (the header alone if empty)."""
    total = streaming.plaintext_size(ciphertext_size)
    if total == 0:
        return 0, 0
    first = streaming.FIRST_SEGMENT_PLAINTEXT
    segments = 1 + max(0, -(-(total - first) // streaming.SEGMENT_PLAINTEXT))
    index = int.from_bytes(rng(4), "big") % segments
    start = 0 if index == 0 else first + (index - 1) * streaming.SEGMENT_PLAINTEXT
    return start, start + 1


def _alarm(ctx: Context, rec: Recording, reason: str, now: datetime) -> bool:
    """``stored -> integrity_failed`` with its alarm; False if the row moved on meanwhile."""
    with ctx.db.transaction() as session:
        raised = lifecycle.integrity_alarm(
            session, rec.id, actor=SCRUB_ACTOR, now=now, source="scrub", reason=reason,
            version_id=rec.version_id,
        )  # fmt: skip
    if raised:
        log.error("integrity alarm: recording %s failed the scrub (%s)", rec.id, reason)
    return raised
