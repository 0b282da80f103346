"""Tenants, principals and API keys: creation, scope, roles, revocation and authentication.

An API key is ``cvk_`` + base64url(32 random bytes). Only a 12-character lookup prefix and the
SHA-256 of the whole key are stored; the key itself is shown once and never kept.
"""

from __future__ import annotations

import base64
import os
import re
import uuid
from collections.abc import Callable, Collection
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault import audit, authz
from vault.authz import Actor, Permission
from vault.errors import (
    ConflictError,
    InvalidInputError,
    UnknownPrincipalError,
)
from vault.identity.authentication import (
    KEY_PREFIX,
    KEY_RE,
    LOOKUP_LEN,
    hash_key,
    principal_tenant_ids,
)
from vault.identity.owners import Owner
from vault.identity.tenants import check_region, resolve_tenant, tenant_names
from vault.leases import claim
from vault.models import ApiKey, Principal, PrincipalPublic, PrincipalTenant, Role
from vault.models import SubprocessorPrincipal as Bound
from vault.tags import AuditAction

Rng = Callable[[int], bytes]

KEY_BYTES = 32
_PRINCIPAL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
SCOPE_REQUIRED = "scope must be given explicitly: --tenant T ... or --all-tenants"
BOOTSTRAP_NAME = "bootstrap-admin"
BOOTSTRAP_OWNER = "bootstrap@localhost"


# --- principals ----------------------------------------------------------------------------------


def _parse_role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidInputError(
            f"unknown role {role!r}; one of {', '.join(r.value for r in Role)}"
        ) from None


def get_principal(session: Session, name: str) -> Principal:
    principal = session.exec(select(Principal).where(Principal.name == name)).first()
    if principal is None:
        raise UnknownPrincipalError(f"unknown principal {name!r}")
    return principal


def add_principal(
    session: Session,
    *,
    actor: Actor,
    name: str,
    role: Role | str,
    owner: Owner,
    tenants: list[str],
    all_tenants: bool,
    now: datetime,
    expires_at: datetime | None = None,
    rng: Rng | None = None,
    region: str | None = None,
    regions: Collection[str] | None = None,
    subprocessor_id: uuid.UUID | None = None,
) -> tuple[Principal, str]:
    """Create a principal and its first API key; the key is returned once and never stored.

    ``owner`` comes from :func:`vault.identity.owners.owner_of`, called before the transaction.
    ``region`` is where it reads from (vault.residency), one of ``regions`` (the configured
    ones, ``Settings.region_names``); ``None``: the home region.
    A ``subprocessor`` principal is bound to one registry entry (``subprocessor_id``, checked by
    :func:`vault.subprocessors.registry.add_principal`) and has no tenant scope: what it may
    open is its own hand-offs, whichever tenants opted in.
    """
    authz.authorize(session, actor, Permission.principal_manage, now=now)
    if not isinstance(name, str) or not _PRINCIPAL_RE.fullmatch(name):
        raise InvalidInputError(
            "principal name: 1-128 characters, letters, digits, '.', '_', '@' or '-'"
        )
    parsed_role = _parse_role(role)
    check_region(region, regions)
    bound = parsed_role is Role.subprocessor
    if bound != (subprocessor_id is not None) or (bound and (tenants or all_tenants)):
        raise InvalidInputError(
            "a subprocessor principal is bound to one registry entry "
            "(--subprocessor NAME), without tenant scope; no other is"
        )
    if not bound and bool(tenants) == bool(all_tenants):
        raise InvalidInputError(SCOPE_REQUIRED if not tenants else f"{SCOPE_REQUIRED}, not both")
    tenant_ids = sorted({resolve_tenant(session, ref).id for ref in tenants}, key=str)
    # No escalation: an admin hands out only the scope it holds itself.
    if all_tenants:
        authz.authorize(
            session, actor, Permission.principal_manage, authz.tenant(None, every_tenant=True),
            now=now,
        )  # fmt: skip
    for tid in tenant_ids:
        authz.authorize(session, actor, Permission.principal_manage, authz.tenant(tid), now=now)
    if session.exec(select(Principal.id).where(Principal.name == name)).first() is not None:
        raise ConflictError(f"principal {name!r} already exists")

    principal = Principal(
        name=name,
        role=parsed_role.value,
        owner=owner.email,
        owner_ref=owner.ref,
        all_tenants=bool(all_tenants),
        region=region,
        created_at=now,
    )
    session.add(principal)
    try:
        session.flush()
    except sa.exc.IntegrityError as exc:  # lost a race with a concurrent create
        raise ConflictError(f"principal {name!r} already exists") from exc
    for tid in tenant_ids:
        session.add(PrincipalTenant(principal_id=principal.id, tenant_id=tid))
    if subprocessor_id is not None:
        session.add(Bound(principal_id=principal.id, subprocessor_id=subprocessor_id))
    key = issue_key(session, principal=principal, now=now, expires_at=expires_at, rng=rng)
    audit.record(
        session,
        action=AuditAction.principal_create,
        actor=actor.audit_name,
        now=now,
        target=str(principal.id),
        # No name or e-mail: the chain cannot be erased. The target id and owner_ref are
        # pseudonyms; only the principal row (clearable) maps them back to a person.
        details={
            "role": parsed_role.value,
            "owner_ref": owner.ref,
            "tenant_ids": [str(t) for t in tenant_ids],
            "all_tenants": bool(all_tenants),
            **({"region": region} if region is not None else {}),
            **({"subprocessor_id": str(subprocessor_id)} if subprocessor_id else {}),
        },
    )
    return principal, key


def issue_key(
    session: Session,
    *,
    principal: Principal,
    now: datetime,
    expires_at: datetime | None = None,
    rng: Rng | None = None,
) -> str:
    """A new API key for the principal; only its prefix and hash are stored."""
    if expires_at is not None and expires_at <= now:
        raise InvalidInputError("expires_at must be in the future")
    rand = rng or os.urandom
    for _ in range(3):  # a prefix collision is astronomically rare; a stuck test rng is not
        key = KEY_PREFIX + base64.urlsafe_b64encode(rand(KEY_BYTES)).rstrip(b"=").decode("ascii")
        if not KEY_RE.fullmatch(key):
            raise ValueError("rng must return exactly the requested number of bytes")
        prefix = key[len(KEY_PREFIX) : len(KEY_PREFIX) + LOOKUP_LEN]
        if session.exec(select(ApiKey.id).where(ApiKey.prefix == prefix)).first() is None:
            break
    else:
        raise ConflictError("could not generate a unique API key prefix")
    session.add(
        ApiKey(
            principal_id=principal.id,
            prefix=prefix,
            key_hash=hash_key(key),
            created_at=now,
            expires_at=expires_at,
        )
    )
    session.flush()
    return key


def _revoke_keys(session: Session, principal: Principal, *, now: datetime) -> int:
    """Revoke every key the principal still holds; how many were."""
    keys = session.exec(
        select(ApiKey).where(ApiKey.principal_id == principal.id, col(ApiKey.revoked_at).is_(None))
    ).all()
    for key in keys:
        key.revoked_at = now
        session.add(key)
    session.flush()
    return len(keys)


def revoke_principal(session: Session, *, actor: Actor, name: str, now: datetime) -> Principal:
    """Revoke the principal and every key it holds. Revoking twice changes nothing."""
    authz.authorize(session, actor, Permission.principal_manage, now=now)
    principal = get_principal(session, name)
    if principal.revoked_at is not None:
        return principal
    principal.revoked_at = now
    session.add(principal)
    revoked = _revoke_keys(session, principal, now=now)
    audit.record(
        session,
        action=AuditAction.principal_revoke,
        actor=actor.audit_name,
        now=now,
        target=str(principal.id),
        details={"keys_revoked": revoked},
    )
    return principal


def rotate_key(
    session: Session,
    *,
    actor: Actor,
    name: str,
    now: datetime,
    expires_at: datetime | None = None,
    rng: Rng | None = None,
) -> str:
    """A new API key for the principal; every key it held is revoked at once (no overlap: a
    key being rotated may be the leaked one). The new key's age starts now."""
    authz.authorize(session, actor, Permission.principal_manage, now=now)
    principal = get_principal(session, name)
    if principal.revoked_at is not None:
        raise ConflictError(f"principal {name!r} is revoked")
    # A new key hands out the principal's scope: the actor must hold all of it (as on create).
    scope = (
        [authz.tenant(None, every_tenant=True)]
        if principal.all_tenants
        else [authz.tenant(t) for t in principal_tenant_ids(session, principal.id)]
    )
    for resource in scope:
        authz.authorize(session, actor, Permission.principal_manage, resource, now=now)
    revoked = _revoke_keys(session, principal, now=now)
    key = issue_key(session, principal=principal, now=now, expires_at=expires_at, rng=rng)
    audit.record(
        session, action=AuditAction.principal_rotate_key, actor=actor.audit_name, now=now,
        target=str(principal.id), details={"keys_revoked": revoked},
    )  # fmt: skip
    return key


def oldest_key_created(session: Session, *, now: datetime) -> dict[uuid.UUID, datetime]:
    """Per principal, the creation time of its oldest key that still authenticates (not revoked,
    not expired): a key's age runs from its creation, so rotation resets it."""
    rows = session.exec(
        select(ApiKey.principal_id, sa.func.min(ApiKey.created_at))
        .where(
            col(ApiKey.revoked_at).is_(None),
            sa.or_(col(ApiKey.expires_at).is_(None), col(ApiKey.expires_at) > now),
        )
        .group_by(col(ApiKey.principal_id))
    ).all()
    return dict(rows)


def set_role(
    session: Session, *, actor: Actor, name: str, role: Role | str, now: datetime
) -> Principal:
    authz.authorize(session, actor, Permission.principal_manage, now=now)
    new_role = _parse_role(role)
    principal = get_principal(session, name)
    if principal.revoked_at is not None:
        raise ConflictError(f"principal {name!r} is revoked")
    old_role = principal.role
    if old_role == new_role.value:
        return principal
    if Role.subprocessor.value in (old_role, new_role.value):
        # The role and its registry binding go together: a new principal, not a new role.
        raise ConflictError("the subprocessor role is given at creation only, never changed")
    principal.role = new_role.value
    session.add(principal)
    session.flush()
    audit.record(
        session,
        action=AuditAction.principal_set_role,
        actor=actor.audit_name,
        now=now,
        target=str(principal.id),
        details={"old_role": old_role, "new_role": new_role.value},
    )
    return principal


def clear_owner(
    session: Session, *, actor: Actor, name: str, now: datetime, reason: str | None = None
) -> Principal:
    """Forget the e-mail behind a principal (the person left, or asked to be forgotten).

    Four-eyes and the audit chain keep working: they only ever held ``owner_ref``. Clearing
    twice changes nothing; the principal itself stays (revoke it separately).
    """
    authz.authorize(session, actor, Permission.principal_manage, now=now)
    principal = get_principal(session, name)
    if principal.owner is None:
        return principal
    principal.owner = None
    session.add(principal)
    session.flush()
    details: dict[str, str] = {"owner_ref": principal.owner_ref}
    if reason is not None:
        details["reason"] = reason
    audit.record(
        session, action=AuditAction.principal_clear_owner, actor=actor.audit_name, now=now,
        target=str(principal.id), details=details,
    )  # fmt: skip
    return principal


OWNER_RETENTION_ACTOR = Actor.operator("clear-revoked-owners")
OWNER_RETENTION_BATCH = 500


def clear_revoked_owners(session: Session, *, older_than: timedelta, now: datetime) -> int:
    """The ``clear-revoked-owners`` job: forget the e-mail of every principal revoked at least
    ``older_than`` ago, through :func:`clear_owner` (audited, the pseudonym stays). Idempotent:
    only rows that still hold an e-mail are selected, and claimed (``SKIP LOCKED``) so two
    workers never clear the same row."""
    if older_than <= timedelta(0):
        raise ValueError("older_than must be positive")
    due = (
        select(Principal)
        .where(
            col(Principal.revoked_at).is_not(None),
            col(Principal.revoked_at) <= now - older_than,
            col(Principal.owner).is_not(None),
        )
        .order_by(col(Principal.revoked_at), col(Principal.id))
        .limit(OWNER_RETENTION_BATCH)
    )
    cleared = 0
    while rows := session.exec(claim(session, due)).all():
        for principal in rows:
            clear_owner(
                session, actor=OWNER_RETENTION_ACTOR, name=principal.name, now=now,
                reason="retention: revoked principal",
            )  # fmt: skip
        cleared += len(rows)
    return cleared


def bootstrap_admin(
    session: Session, *, owner: Owner, now: datetime, rng: Rng | None = None
) -> str | None:
    """Create the first admin and return its key, unless an admin (even revoked) exists.

    ``owner`` is ``owner_of(keys, BOOTSTRAP_OWNER)``, made before the transaction."""
    audit.acquire_append_lock(session)  # serialises concurrent `init`s on PostgreSQL
    if session.exec(select(Principal.id).where(Principal.role == Role.admin.value)).first():
        return None
    name, n = BOOTSTRAP_NAME, 1
    while session.exec(select(Principal.id).where(Principal.name == name)).first() is not None:
        n += 1  # the name was taken by a principal that is no longer admin
        name = f"{BOOTSTRAP_NAME}-{n}"
    principal = Principal(
        name=name, role=Role.admin.value, owner=owner.email, owner_ref=owner.ref,
        all_tenants=True, created_at=now,
    )  # fmt: skip
    session.add(principal)
    session.flush()
    key = issue_key(session, principal=principal, now=now, rng=rng)
    audit.record(
        session,
        action=AuditAction.principal_create,
        actor="system:init",
        now=now,
        target=str(principal.id),
        details={
            "role": Role.admin.value,
            "owner_ref": owner.ref,
            "tenant_ids": [],
            "all_tenants": True,
            "bootstrap": True,
        },
    )
    return key


def to_public(session: Session, principal: Principal) -> PrincipalPublic:
    names = tenant_names(session, principal_tenant_ids(session, principal.id))
    return PrincipalPublic(
        id=principal.id,
        name=principal.name,
        role=Role(principal.role),
        owner=principal.owner,
        owner_ref=principal.owner_ref,
        all_tenants=principal.all_tenants,
        region=principal.region,
        tenants=sorted(names.values()),
        created_at=principal.created_at,
        revoked_at=principal.revoked_at,
    )
