"""Console sessions: sign-in, the per-request re-check, sign-out, CSRF and media tokens.

The cookie is an opaque random id; the database keeps only its SHA-256, so a database reader
cannot sign in. Each request re-checks the key and the principal behind the session: a revoked
key or principal, or a changed role, ends it, as do the idle timeout and the absolute lifetime.
Ending is a compare-and-set on ``ended_at``, audited once.

Media tokens bind a URL to one session, grant and recording: an HMAC under the session's own
key, so they die with the session, and carry their expiry (the shorter of grant and session).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, update

from vault import audit
from vault.authz import Actor
from vault.config import Settings
from vault.errors import AuthenticationError, SessionEndedError
from vault.identity import authentication
from vault.models import ConsoleSession
from vault.tags import AuditAction

Rng = Callable[[int], bytes]
COOKIE = "callvault_console"
TOUCH_EVERY = timedelta(seconds=15)  # last_seen granularity: no write on every page view
_TOKEN_MAC = 16


def _hash(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


def _token(rng: Rng, n: int = 32) -> str:
    return base64.urlsafe_b64encode(rng(n)).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class Limits:
    idle: timedelta
    lifetime: timedelta

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            idle=timedelta(minutes=settings.console_idle_minutes),
            lifetime=timedelta(hours=settings.console_lifetime_hours),
        )


@dataclass(frozen=True, slots=True)
class Live:
    """A resolved session: the re-checked actor, and whether ``last_seen_at`` is due a write."""

    actor: Actor
    row: ConsoleSession
    touch: bool


def sign_in(
    session: Session,
    *,
    api_key: str | None,
    replaces: str | None,
    limits: Limits,
    now: datetime,
    rng: Rng = os.urandom,
) -> tuple[str, Actor]:
    """A new session (and cookie) for a valid key; the cookie presented at sign-in, if any, is
    ended: a session id is never carried across a sign-in."""
    actor, key_id = authentication.authenticate_key(session, api_key=api_key, now=now)
    if replaces:
        _end(session, token_hash=_hash(replaces), reason="replaced", actor=None, now=now)
    cookie = _token(rng)
    row = ConsoleSession(
        token_hash=_hash(cookie), principal_id=actor.id, api_key_id=key_id,
        role=actor.role.value, csrf_token=_token(rng), media_key=rng(32).hex(),
        created_at=now, last_seen_at=now, expires_at=now + limits.lifetime,
    )  # fmt: skip
    session.add(row)
    session.flush()
    audit.record(
        session, action=AuditAction.console_sign_in, actor=actor.audit_name, now=now,
        target=str(row.id), details={"role": actor.role.value},
    )  # fmt: skip
    return cookie, actor


def resolve(session: Session, *, cookie: str | None, limits: Limits, now: datetime) -> Live:
    """The live session behind a cookie, re-checked; :class:`SessionEndedError` otherwise with
    the reason to end it (the caller ends it in a write transaction: see :func:`end`)."""
    row = _row(session, cookie)
    if row is None or row.ended_at is not None:
        raise SessionEndedError("sign in to the console")
    reason = None
    if now >= row.expires_at:
        reason = "lifetime"
    elif now - row.last_seen_at >= limits.idle:
        reason = "idle"
    else:
        try:
            actor = authentication.actor_for_key(session, key_id=row.api_key_id, now=now)
        except AuthenticationError:
            reason = "credentials"
        else:
            if actor.role.value != row.role:
                reason = "role-changed"
    if reason is not None:
        raise SessionEndedError("the session has ended; sign in again", end_reason=reason)
    return Live(actor=actor, row=row, touch=now - row.last_seen_at >= TOUCH_EVERY)


def _row(session: Session, cookie: str | None) -> ConsoleSession | None:
    if not cookie or len(cookie) > 128:
        return None
    stmt = sa.select(ConsoleSession).where(col(ConsoleSession.token_hash) == _hash(cookie))
    return session.exec(stmt).scalars().first()  # type: ignore[call-overload]


def touch(session: Session, *, cookie: str, now: datetime) -> None:
    session.exec(
        update(ConsoleSession)
        .where(
            col(ConsoleSession.token_hash) == _hash(cookie), col(ConsoleSession.ended_at).is_(None)
        )
        .values(last_seen_at=now)
    )  # type: ignore[call-overload]


def end(session: Session, *, cookie: str, reason: str, actor: Actor | None, now: datetime) -> bool:
    return _end(session, token_hash=_hash(cookie), reason=reason, actor=actor, now=now)


def _end(
    session: Session, *, token_hash: str, reason: str, actor: Actor | None, now: datetime
) -> bool:
    ended = session.exec(
        update(ConsoleSession)
        .where(col(ConsoleSession.token_hash) == token_hash, col(ConsoleSession.ended_at).is_(None))
        .values(ended_at=now, end_reason=reason)
        .returning(col(ConsoleSession.id), col(ConsoleSession.principal_id))
    ).first()  # type: ignore[call-overload]
    if ended is None:
        return False
    action = (
        AuditAction.console_sign_out if reason == "sign-out" else AuditAction.console_session_end
    )
    audit.record(
        session, action=action, actor=actor.audit_name if actor else str(ended.principal_id),
        now=now, target=str(ended.id), details={"reason": reason},
    )  # fmt: skip
    return True


def purge(
    session: Session, *, limits: Limits, now: datetime, keep: timedelta = timedelta(days=1)
) -> int:
    """End (audited, like any end) the sessions past their idle timeout or lifetime that nobody
    came back to, then delete those ended more than ``keep`` ago; returns how many went."""
    stale = session.exec(
        sa.select(ConsoleSession.token_hash, ConsoleSession.expires_at).where(
            col(ConsoleSession.ended_at).is_(None),
            sa.or_(
                col(ConsoleSession.expires_at) <= now,
                col(ConsoleSession.last_seen_at) <= now - limits.idle,
            ),
        )
    ).all()  # type: ignore[call-overload]
    for token_hash, expires_at in stale:
        reason = "lifetime" if expires_at <= now else "idle"
        _end(session, token_hash=token_hash, reason=reason, actor=None, now=now)
    gone = session.exec(sa.delete(ConsoleSession).where(col(ConsoleSession.ended_at) < now - keep))  # type: ignore[call-overload]
    return int(gone.rowcount or 0)


# --- CSRF -----------------------------------------------------------------------------------------


SIGN_IN_COOKIE = "callvault_sign_in"


def sign_in_token(rng: Rng = os.urandom) -> str:
    """A double-submit token for the sign-in form (there is no session yet to hold a CSRF
    token): set as a cookie and in the form; a cross-site page can neither read nor set it."""
    return _token(rng, 24)


def check_sign_in_token(*, cookie: str | None, form: str | None) -> bool:
    return bool(cookie and form) and hmac.compare_digest(str(cookie).encode(), str(form).encode())


def cross_origin(*, origin: str | None, fetch_site: str | None, own_origin: str) -> bool:
    """Whether a browser says the request comes from another origin. ``Origin`` is ``null``
    under ``Referrer-Policy: no-referrer``, so ``Sec-Fetch-Site`` speaks first; a client that
    sends neither (not a browser) is judged by the CSRF token alone."""
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return True
    return origin not in (None, "null") and origin != own_origin


def check_csrf(
    row: ConsoleSession,
    *,
    token: str | None,
    origin: str | None,
    fetch_site: str | None,
    own_origin: str,
) -> str | None:
    """Why a state-changing form must be refused, or None. SameSite=Strict does not separate
    ports on one host, so the token (and the origin headers) are the protection."""
    if cross_origin(origin=origin, fetch_site=fetch_site, own_origin=own_origin):
        return "cross-origin"
    if not token or not hmac.compare_digest(token.encode(), row.csrf_token.encode()):
        return "csrf-token"
    return None


# --- media tokens ---------------------------------------------------------------------------------


def media_token(
    row: ConsoleSession, *, grant_id: uuid.UUID, recording_id: uuid.UUID, expires: datetime
) -> str:
    exp = int(expires.timestamp())
    mac = _mac(row, grant_id, recording_id, exp)
    return base64.urlsafe_b64encode(struct.pack(">Q", exp) + mac).rstrip(b"=").decode()


def check_media_token(
    row: ConsoleSession, *, token: str, grant_id: uuid.UUID, recording_id: uuid.UUID, now: datetime
) -> bool:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, TypeError):
        return False
    if len(raw) != 8 + _TOKEN_MAC:
        return False
    (exp,) = struct.unpack(">Q", raw[:8])
    if not hmac.compare_digest(raw[8:], _mac(row, grant_id, recording_id, exp)):
        return False
    return datetime.fromtimestamp(min(exp, 2**40), UTC) > now


def _mac(row: ConsoleSession, grant_id: uuid.UUID, recording_id: uuid.UUID, exp: int) -> bytes:
    msg = b"callvault.console-media.v1|%s|%s|%d" % (
        grant_id.bytes.hex().encode(),
        recording_id.bytes.hex().encode(),
        exp,
    )
    return hmac.new(bytes.fromhex(row.media_key), msg, hashlib.sha256).digest()[:_TOKEN_MAC]
