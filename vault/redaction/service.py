"""Running a redaction: read the original, produce and verify the derivative, keep it or not.

:func:`execute` is the job body. The original's plaintext is served to ffmpeg from memory
(:mod:`vault.redaction.source`); the derivative goes through ingest (a new DEK, encrypted as it
comes) with a :class:`~vault.recordings.ingest.Derivation`: verification runs after the object is
written and before anything commits; a failed check discards object and row. Only a verified
derivative commits, together with its signed manifest and the redaction's ``verified`` state.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, select

from vault import audit, lifecycle, media
from vault.audit import signing
from vault.authz import Actor
from vault.context import Context
from vault.errors import (
    EmptyBodyError,
    KeyDestroyedError,
    UnknownProfileError,
    VaultError,
    WrappedKeyInvalidError,
)
from vault.leases import claim as claim_rows
from vault.models import (
    Manifest,
    Recording,
    RecordingPurpose,
    RecordingStatus,
    Redaction,
    RedactionStatus,
    RedactionTrigger,
    Tenant,
    under_erasure,
)
from vault.recordings.ingest import Derivation, ingest
from vault.recordings.pipeline import Tally
from vault.redaction import manifest, queue, verify
from vault.redaction.pipeline import Run
from vault.redaction.source import Original, PlaintextServer
from vault.retention import holds
from vault.tags import AuditAction

__all__ = ["REDACTOR", "RedactionFailedError", "execute", "run_queue"]

log = logging.getLogger(__name__)

REDACTOR = Actor.operator("redaction")
_PROGRESS_STEP = 10  # percent between progress writes


class RedactionFailedError(VaultError):
    """A check failed, or the input could not be redacted; ``check`` names which."""

    code = "redaction-failed"
    title = "The redaction could not be verified; nothing was kept"

    def __init__(self, check: str) -> None:
        super().__init__(f"redaction failed: {check}")
        self.check = check


@dataclass(frozen=True, slots=True)
class _Job:
    red: Redaction
    rec: Recording
    tenant: str
    expires: dict[str, datetime]


def run_queue(
    ctx: Context, *, now: datetime, trigger: RedactionTrigger | None = None, limit: int = 10,
    only: list[uuid.UUID] | None = None,
) -> tuple[int, int]:  # fmt: skip
    """Claim and run up to ``limit`` redactions; (verified, failed)."""
    verified = failed = 0
    for _ in range(limit):
        with ctx.db.transaction() as session:
            red = queue.claim(session, now=now, trigger=trigger, only=only)
            rid = red.id if red is not None else None
        if rid is None:
            break
        if execute(ctx, rid, now=now) == RedactionStatus.verified:
            verified += 1
        else:
            failed += 1
    return verified, failed


def _load(ctx: Context, redaction_id: uuid.UUID, now: datetime) -> _Job | str:
    """The job, or the name of the check that fails it before anything runs."""
    with ctx.db.reading() as session:
        red = session.get(Redaction, redaction_id)
        assert red is not None
        rec = session.get(Recording, red.recording_id)
        if rec is None or rec.status != RecordingStatus.stored or rec.wrapped_dek is None:
            return "original-not-stored"
        tenant = session.get(Tenant, rec.tenant_id)
        assert tenant is not None
        try:
            profile = ctx.policy.profile(red.profile)
        except UnknownProfileError:
            return "unknown-profile"
        parent = {
            p.purpose: p.expires_at
            for p in session.exec(
                select(RecordingPurpose).where(RecordingPurpose.recording_id == rec.id)
            ).all()
        }
        expires: dict[str, datetime] = {}
        for name in red.purpose_names():
            rules = ctx.policy.purposes.get(name)
            if rules is None:
                return "unknown-purpose"
            if profile.deidentifying:
                # Only a de-identified derivative may outlive its original.
                expires[name] = now + rules.derivative_retention
            elif name in parent:
                expires[name] = min(parent[name], now + rules.retention)
            else:
                return "purpose-not-on-original"
        session.expunge(red)
        session.expunge(rec)
    return _Job(red, rec, tenant.name, expires)


def execute(ctx: Context, redaction_id: uuid.UUID, *, now: datetime) -> RedactionStatus:
    """Run one claimed redaction to ``verified`` or ``failed``."""
    job = _load(ctx, redaction_id, now)
    if isinstance(job, str):
        return _fail(ctx, redaction_id, job)
    red, rec = job.red, job.rec
    profile = ctx.policy.profile(red.profile)
    assert rec.wrapped_dek is not None and rec.ciphertext_size is not None
    try:
        keys = ctx.keys_for(rec.region)
        dek = keys.unwrap_dek(rec.wrapped_dek, tenant_id=rec.tenant_id, recording_id=rec.id)
    except (KeyDestroyedError, WrappedKeyInvalidError):
        return _fail(ctx, red.id, "original-key-unusable")
    with ctx.db.transaction() as session:
        audit.record(
            session, action=AuditAction.redaction_start, actor=REDACTOR.audit_name, now=now,
            tenant_id=rec.tenant_id, target=str(rec.id),
            details={"redaction_id": str(red.id), "profile": red.profile,
                     "ciphertext_sha256": rec.ciphertext_sha256},
        )  # fmt: skip
    original = Original(
        rec.id, rec.object_key, rec.version_id, rec.ciphertext_size, dek, region=rec.region
    )
    server = PlaintextServer(ctx, original)
    with server as url:
        try:
            info = media.inspect(url, timeout=ctx.settings.redaction_timeout_seconds)
        except media.MediaError:
            return _fail(ctx, red.id, server.failure or "input-not-media", original=rec)
        if info.first("video") is None and info.first("audio") is None:
            return _fail(ctx, red.id, "input-not-media")
        if profile.needs_video and info.first("video") is None:
            return _fail(ctx, red.id, "profile-needs-video")
        run = Run(url, info, profile, timeout=ctx.settings.redaction_timeout_seconds,
                  progress=_reporter(ctx, red.id))  # fmt: skip
        signed: dict[str, str] = {}

        def verified(rid: uuid.UUID, tally: Tally) -> None:
            if server.failure is not None:  # the input itself failed: nothing else counts
                raise RedactionFailedError(server.failure)
            found = verify.checks(run)
            bad = verify.failed(found)
            if bad is not None:
                raise RedactionFailedError(bad)
            canonical = manifest.build(
                derivative_id=rid, parent_id=rec.id, parent_ciphertext_sha256=rec.ciphertext_sha256,
                redaction_id=red.id, trigger=red.trigger, profile_name=red.profile,
                profile=profile, run=run, output_sha256=tally.plain.hexdigest(),
                output_size=tally.size, checks=found, now=ctx.now(),
            )  # fmt: skip
            document = signing.sign_canonical(ctx.keys, canonical)  # outside any transaction
            signed.update(canonical=document.canonical, signature=document.signature)

        def record(session: Session, rid: uuid.UUID) -> None:
            _verified(session, red.id, rid, signed, now=ctx.now())

        try:
            ingest(
                ctx, actor=REDACTOR, tenant=job.tenant, purposes=sorted(job.expires),
                call_id=None,  # a derivative never names the call: only its lineage does
                recorded_at=rec.recorded_at, content_type=run.shape.content_type,
                chunks=run.output(),
                derivation=Derivation(parent_id=rec.id, expires=job.expires, verify=verified,
                                      record=record),
            )  # fmt: skip
        except RedactionFailedError as exc:
            return _fail(ctx, red.id, exc.check, original=rec)
        except (media.MediaError, EmptyBodyError):
            return _fail(ctx, red.id, server.failure or "ffmpeg-failed", original=rec)
        finally:
            run.close()
    return RedactionStatus.verified


def _verified(session: Session, redaction_id: uuid.UUID, derivative_id: uuid.UUID,
              signed: dict[str, str], *, now: datetime) -> None:  # fmt: skip
    red = session.get(Redaction, redaction_id, with_for_update=True)
    assert red is not None
    # The original, locked: an erasure or a hold that got there first wins, and the derivative
    # is discarded with it (an erasure lists the derivatives that exist when it starts).
    parent = session.exec(
        claim_rows(session, select(Recording).where(Recording.id == red.recording_id))
    ).first()
    if parent is None or parent.status != RecordingStatus.stored:
        raise RedactionFailedError("original-not-stored")
    if session.exec(select(sa.literal(1)).where(under_erasure(parent.id))).first():
        raise RedactionFailedError("original-under-erasure")
    if red.trigger == RedactionTrigger.expiry and session.exec(
        select(sa.literal(1)).where(holds.held_condition(parent.id))
    ).first():
        raise RedactionFailedError("original-held")
    session.add(Manifest(recording_id=derivative_id, redaction_id=redaction_id,
                         canonical=signed["canonical"], signature=signed["signature"],
                         created_at=now))  # fmt: skip
    red.status, red.derivative_id, red.progress = RedactionStatus.verified.value, derivative_id, 100
    red.finished_at, red.lease_until = now, None
    session.add(red)
    session.flush()
    audit.record(
        session, action=AuditAction.redaction_verified, actor=REDACTOR.audit_name, now=now,
        tenant_id=red.tenant_id, target=str(red.recording_id),
        details={"redaction_id": str(red.id), "derivative_id": str(derivative_id),
                 "profile": red.profile, "trigger": red.trigger},
    )  # fmt: skip


def _fail(ctx: Context, redaction_id: uuid.UUID, check: str,
          original: Recording | None = None) -> RedactionStatus:  # fmt: skip
    if check == "input-integrity" and original is not None:
        with ctx.db.transaction() as session:
            lifecycle.integrity_alarm(
                session, original.id, actor=REDACTOR.audit_name, now=ctx.now(),
                source="redaction", reason="segment-authentication",
            )  # fmt: skip
    with ctx.db.transaction() as session:
        red = session.get(Redaction, redaction_id, with_for_update=True)
        assert red is not None
        if red.status != RedactionStatus.failed:
            queue.fail(session, red, check=check, now=ctx.now())
    log.info("redaction %s failed: %s", redaction_id, check)
    return RedactionStatus.failed


def _reporter(ctx: Context, redaction_id: uuid.UUID) -> Callable[[int], None]:
    last = [-_PROGRESS_STEP]

    def report(percent: int) -> None:
        if percent - last[0] < _PROGRESS_STEP and percent != 100:
            return
        last[0] = percent
        try:
            with ctx.db.transaction() as session:
                queue.progress(session, redaction_id, percent, now=ctx.now())
        except Exception:  # progress is advisory; the run goes on
            log.warning("redaction %s: could not record progress", redaction_id, exc_info=True)

    return report
