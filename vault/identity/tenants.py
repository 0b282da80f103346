"""Tenants: registration, and resolving a tenant by id or name."""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault import audit, authz
from vault.authz import Actor, Permission
from vault.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    UnknownRegionError,
    UnknownTenantError,
)
from vault.models import Tenant
from vault.tags import AuditAction

_TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_region(region: str | None, known: Collection[str] | None) -> None:
    """A region must be one the settings configure (``known``, from
    ``Settings.known_regions``); ``None`` known regions: residency is off, any label goes."""
    if region is None or known is None or region in known:
        return
    raise UnknownRegionError(
        f"region {region!r} is not configured (configured: {', '.join(sorted(known))})",
        field="region",
    )


def create_tenant(
    session: Session,
    *,
    actor: Actor,
    name: str,
    region: str | None,
    now: datetime,
    regions: Collection[str] | None = None,
) -> Tenant:
    """Register a tenant. ``regions``: the configured regions its region must be one of
    (checked here, so that a tenant never exists whose media ingest could not place)."""
    authz.authorize(session, actor, Permission.tenant_create, now=now)
    if not isinstance(name, str) or not _TENANT_RE.fullmatch(name):
        raise InvalidInputError(
            "tenant name: 1-64 characters, letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if region is not None and (not region.strip() or len(region) > 64):
        raise InvalidInputError("region: 1-64 characters")
    check_region(region, regions)
    if session.exec(select(Tenant.id).where(Tenant.name == name)).first() is not None:
        raise ConflictError(f"tenant {name!r} already exists")
    tenant = Tenant(name=name, region=region, created_at=now)
    session.add(tenant)
    try:
        session.flush()
    except sa.exc.IntegrityError as exc:  # lost a race with a concurrent create
        raise ConflictError(f"tenant {name!r} already exists") from exc
    audit.record(
        session,
        action=AuditAction.tenant_create,
        actor=actor.audit_name,
        now=now,
        tenant_id=tenant.id,
        target=str(tenant.id),
        details={"name": name, "region": region},
    )
    return tenant


def resolve_tenant(session: Session, ref: str) -> Tenant:
    """A tenant by UUID string or by name."""
    try:
        tenant = session.get(Tenant, uuid.UUID(ref))
    except (ValueError, TypeError, AttributeError):
        tenant = None
    if tenant is None and isinstance(ref, str):
        tenant = session.exec(select(Tenant).where(Tenant.name == ref)).first()
    if tenant is None:
        raise UnknownTenantError(f"unknown tenant {ref!r}")
    return tenant


def tenant_names(session: Session, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    wanted = set(ids)
    if not wanted:
        return {}
    rows = session.exec(select(Tenant.id, Tenant.name).where(col(Tenant.id).in_(wanted))).all()
    return {tid: name for tid, name in rows}


def tenant_for_write(
    session: Session, actor: Actor, ref: str, permission: Permission, *, now: datetime
) -> Tenant:
    """The tenant a write names (ingest, a hold or erasure by tenant), authorised: outside the
    actor's scope it is an audited 403, and so is an unknown name for a scoped actor, which must
    not be able to tell the two apart; only an all-tenants actor learns ``unknown-tenant``."""
    try:
        found: Tenant | None = resolve_tenant(session, ref)
    except UnknownTenantError:
        if actor.all_tenants:
            raise
        found = None
    authz.authorize(session, actor, permission, authz.tenant(found and found.id), now=now)
    assert found is not None
    return found


def tenant_for_read(session: Session, actor: Actor, ref: str, *, now: datetime) -> Tenant:
    """A tenant read by name (``tenant:read``): unknown and out of scope both answer 404."""
    authz.authorize(session, actor, Permission.tenant_read, now=now)
    try:
        found = resolve_tenant(session, ref)
    except UnknownTenantError:
        raise NotFoundError("no tenant") from None
    return authz.get_visible(
        session, actor, Tenant, found.id, permission=Permission.tenant_read, now=now,
        what="tenant",
    )  # fmt: skip


def list_tenants(session: Session, *, actor: Actor, now: datetime) -> list[Tenant]:
    """The tenants in the actor's scope, by name, each with its status."""
    authz.authorize(session, actor, Permission.tenant_read, now=now)
    return list(session.exec(authz.visible(select(Tenant).order_by(col(Tenant.name)), actor)))
