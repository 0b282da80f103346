"""Authentication: the actor behind an API key, checked the same way on every path.

Keys look like ``cvk_`` + 43 base64url characters; a row is found by a short lookup prefix and
the whole key compared by SHA-256 in constant time (against a dummy when the prefix is unknown).
Every failure is one generic :class:`AuthenticationError`. Issuing and revoking keys is
:mod:`vault.identity.principals`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from datetime import datetime

from sqlmodel import Session, col, select

from vault.authz import Actor
from vault.errors import AuthenticationError
from vault.models import (
    ApiKey,
    Principal,
    PrincipalTenant,
    Role,
    Subprocessor,
    SubprocessorPrincipal,
)

KEY_PREFIX = "cvk_"
LOOKUP_LEN = 12
KEY_RE = re.compile(r"cvk_[A-Za-z0-9_-]{43}")  # 32 bytes -> 43 base64url chars, no padding
# Compared against when the prefix is unknown, so a miss costs the same as a wrong key.
_DUMMY_HASH = hashlib.sha256(b"callvault/dummy-key").hexdigest()


def _fail() -> AuthenticationError:
    # One generic message whatever the cause: callers must not learn which check failed.
    return AuthenticationError()


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def denial_key(api_key: str | None) -> str:
    """A short, safe label for rate-limiting and auditing a failed authentication."""
    if not api_key:
        return "missing"
    if not KEY_RE.fullmatch(api_key):
        return "malformed"
    return KEY_PREFIX + api_key[len(KEY_PREFIX) : len(KEY_PREFIX) + LOOKUP_LEN]


def principal_tenant_ids(session: Session, principal_id: uuid.UUID) -> frozenset[uuid.UUID]:
    rows = session.exec(
        select(PrincipalTenant.tenant_id).where(PrincipalTenant.principal_id == principal_id)
    ).all()
    return frozenset(rows)


def authenticate(session: Session, *, api_key: str | None, now: datetime) -> Actor:
    """The actor behind an API key, or AuthenticationError with one generic message."""
    return authenticate_key(session, api_key=api_key, now=now)[0]


def authenticate_key(
    session: Session, *, api_key: str | None, now: datetime
) -> tuple[Actor, uuid.UUID]:
    """The actor and the id of its key row (a console session is bound to the key)."""
    if not isinstance(api_key, str) or not KEY_RE.fullmatch(api_key):
        raise _fail()  # the format is public, so refusing it early leaks nothing
    prefix = api_key[len(KEY_PREFIX) : len(KEY_PREFIX) + LOOKUP_LEN]
    row = session.exec(select(ApiKey).where(ApiKey.prefix == prefix)).first()
    # Always compare, against a dummy when the prefix is unknown: no timing oracle on prefixes.
    matched = hmac.compare_digest(hash_key(api_key), row.key_hash if row else _DUMMY_HASH)
    if row is None or not matched:
        raise _fail()
    return _actor_of(session, row, now), row.id


def actor_for_key(session: Session, *, key_id: uuid.UUID, now: datetime) -> Actor:
    """Re-check a key already verified once (a console session's): revoked or expired key,
    revoked principal, all fail exactly as at authentication."""
    row = session.get(ApiKey, key_id)
    if row is None:
        raise _fail()
    return _actor_of(session, row, now)


def _actor_of(session: Session, row: ApiKey, now: datetime) -> Actor:
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        raise _fail()
    principal = session.get(Principal, row.principal_id)
    if principal is None or principal.revoked_at is not None:
        raise _fail()
    try:
        role = Role(principal.role)
    except ValueError:
        raise _fail() from None
    subprocessor_id = None
    if role is Role.subprocessor:
        # Bound to a registry entry that is still listed, or no key works (fail closed: a
        # removed sub-processor's principals are revoked too, this covers any left over).
        subprocessor_id = session.exec(
            select(SubprocessorPrincipal.subprocessor_id)
            .join(Subprocessor, col(Subprocessor.id) == col(SubprocessorPrincipal.subprocessor_id))
            .where(
                SubprocessorPrincipal.principal_id == principal.id,
                col(Subprocessor.removed_at).is_(None),
            )
        ).first()
        if subprocessor_id is None:
            raise _fail()
    return Actor(
        id=principal.id,
        name=principal.name,
        role=role,
        owner=principal.owner_ref,
        all_tenants=principal.all_tenants,
        tenant_ids=principal_tenant_ids(session, principal.id),
        region=principal.region,
        subprocessor_id=subprocessor_id,
    )
