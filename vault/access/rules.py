"""Shared rules of access requests and break-glass: input checks, scope and look-ups.

Input rules: a reason has at least 10 non-space characters and at least 3 distinct ones
("aaaaaaaaaa" and "ababababab" are refused); a ticket (and a break-glass ``incident_ref``) is a
tracker key such as ``OPS-1234`` (``^[A-Za-z][A-Za-z0-9_]*-[0-9]+$``) or an ``https://`` URL.
Recording ids (1..100) must not repeat.
"""

from __future__ import annotations

import math
import re
import unicodedata
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, func, select

from vault.authz import Actor
from vault.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    RecordingRestrictedError,
)
from vault.models import (
    AccessRequest,
    AccessRequestRecording,
    AccessRequestStatus,
    GrantRecording,
    Principal,
    Recording,
    RecordingPurpose,
    RecordingStatus,
    Review,
    ReviewDecision,
)
from vault.privacy.rules import restricted_of

MAX_RECORDINGS = 100
MIN_REASON, MAX_REASON, MAX_REF = 10, 2000, 256
TICKET_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*-[0-9]+")
URL_RE = re.compile(r"https://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/\S*)?")


# --- input checks ---------------------------------------------------------------------------------


def _clean(value: object, field: str, *, max_len: int, multiline: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{field} must be a string")
    text = value.strip()
    allowed = "\n\t" if multiline else ""
    if any(unicodedata.category(c) in ("Cc", "Cs") and c not in allowed for c in text):
        raise InvalidInputError(f"{field} must not contain control characters")
    if len(text) > max_len:
        raise InvalidInputError(f"{field} must be at most {max_len} characters")
    return text


def check_reason(value: object, field: str = "reason") -> str:
    text = _clean(value, field, max_len=MAX_REASON, multiline=True)
    compact = "".join(text.split())
    # Non-trivial: enough substance, and not one or two characters repeated.
    if len(compact) < MIN_REASON or len(set(compact.casefold())) < 3:
        raise InvalidInputError(
            f"{field} is required and must explain the need (at least {MIN_REASON} non-space "
            "characters, not a repeated character)"
        )
    return text


def check_ref(value: object, field: str = "ticket") -> str:
    text = _clean(value, field, max_len=MAX_REF)
    if not (TICKET_RE.fullmatch(text) or URL_RE.fullmatch(text)):
        raise InvalidInputError(
            f"{field} is required: a tracker key such as OPS-1234 or an https:// URL"
        )
    return text


def check_comment(value: object, *, required: bool = False) -> str:
    text = _clean(value or "", "comment", max_len=MAX_REASON, multiline=True)
    if required and not text:
        raise InvalidInputError("comment is required")
    return text


def check_duration(value: object, limit: float, purpose: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError("duration_minutes must be a number")
    if not math.isfinite(value) or not 0 < value <= limit:
        raise InvalidInputError(
            f"duration_minutes must be > 0 and <= {limit:g} for purpose {purpose!r} (got {value})"
        )
    return float(value)


def check_ids(values: object) -> list[uuid.UUID]:
    if not isinstance(values, list | tuple):
        raise InvalidInputError("recording_ids must be a list")
    try:
        ids = [v if isinstance(v, uuid.UUID) else uuid.UUID(str(v)) for v in values]
    except ValueError:
        raise InvalidInputError("recording_ids must be UUIDs") from None
    if not 1 <= len(ids) <= MAX_RECORDINGS:
        raise InvalidInputError(f"recording_ids must name 1 to {MAX_RECORDINGS} recordings")
    if len(set(ids)) != len(ids):
        raise InvalidInputError("recording_ids must not repeat")
    return ids


# --- shared look-ups ------------------------------------------------------------------------------


def require_principal(session: Session, actor: Actor) -> Principal:
    """The actor's live principal row: requests, reviews and grants name real principals (the
    local operator has none, and acts on nobody's behalf)."""
    row = None if actor.system else session.get(Principal, actor.id)
    if row is None or row.revoked_at is not None:
        raise PermissionDeniedError("only a registered principal may do this")
    return row


def check_openable(
    session: Session,
    recordings: Sequence[Recording],
    purpose: str,
    now: datetime,
    *,
    break_glass: bool = False,
) -> set[uuid.UUID]:
    """Every recording stored, with ``purpose`` active (DESIGN: grants name active purposes),
    and none restricted; break-glass may pass a restriction and gets the restricted ids back
    (to flag its grant)."""
    ids = [r.id for r in recordings]
    # FOR SHARE on PostgreSQL: a concurrent end_purpose (FOR UPDATE) waits for us or we see it.
    rows = session.exec(
        select(RecordingPurpose)
        .where(col(RecordingPurpose.recording_id).in_(ids), RecordingPurpose.purpose == purpose)
        .with_for_update(read=True)
    ).all()
    by_id = {p.recording_id: p for p in rows}
    for rec in recordings:
        if rec.status != RecordingStatus.stored:
            raise ConflictError(f"recording {rec.id} is {rec.status}; only stored ones can open")
        tag = by_id.get(rec.id)
        if tag is None:
            raise InvalidInputError(f"recording {rec.id} was not collected for {purpose!r}")
        if not tag.active_at(now):
            raise ConflictError(f"purpose {purpose!r} is no longer active on recording {rec.id}")
    # After the purpose locks: a restriction being placed holds them FOR UPDATE, so once we get
    # them its row is committed and this statement sees it.
    held = restricted_of(session, ids)
    if held and not break_glass:
        first = min(held)
        raise RecordingRestrictedError(
            f"recording {first} is restricted: no new access requests or grants until the "
            "restriction is lifted", recording_id=str(first),
        )  # fmt: skip
    return held


def single_tenant(tenant_ids: Iterable[uuid.UUID]) -> uuid.UUID | None:
    distinct = set(tenant_ids)
    return next(iter(distinct)) if len(distinct) == 1 else None


def _tenants(session: Session, link: Any, key: Any, owner_id: uuid.UUID) -> set[uuid.UUID]:
    rows = session.exec(
        select(Recording.tenant_id)
        .join(link, col(link.recording_id) == col(Recording.id))
        .where(key == owner_id)
    ).all()
    return set(rows)


def request_tenants(session: Session, request_id: uuid.UUID) -> set[uuid.UUID]:
    return _tenants(session, AccessRequestRecording, AccessRequestRecording.request_id, request_id)


def grant_tenants(session: Session, grant_id: uuid.UUID) -> set[uuid.UUID]:
    return _tenants(session, GrantRecording, GrantRecording.grant_id, grant_id)


def lock_row(session: Session, model: Any, ident: uuid.UUID, what: str) -> Any:
    # Row lock (PostgreSQL): concurrent reviews and revocations of one object serialise here and
    # each sees the other's committed result. SQLite: BEGIN IMMEDIATE already serialises.
    row = session.get(model, ident, with_for_update=True, populate_existing=True)
    if row is None:
        raise NotFoundError(f"no {what} {ident}")
    return row


def effective_status(request: AccessRequest, now: datetime) -> AccessRequestStatus:
    if request.lapsed_at(now):
        return AccessRequestStatus.expired  # the sweep may not have run yet
    return AccessRequestStatus(request.status)


def approving_owners(session: Session, request_id: uuid.UUID) -> int:
    # The unique (request_id, reviewer_owner) constraint makes this a count of distinct owners.
    stmt = select(func.count()).where(
        Review.request_id == request_id, Review.decision == ReviewDecision.approve.value
    )
    return int(session.exec(stmt).one())


def request_recording_ids(session: Session, request_id: uuid.UUID) -> list[uuid.UUID]:
    stmt = select(AccessRequestRecording.recording_id).where(
        AccessRequestRecording.request_id == request_id
    )
    return sorted(session.exec(stmt).all())
