"""Who may do what: permissions, the role table, the object rules, and the one scope filter.

Deny by default. Three pieces, each written once:

- :func:`decide` ``(actor, permission, resource)``: the role table, then the object rules as
  predicates (tenant scope, four-eyes by owner, who may revoke, who reviews break-glass).
  Content reads are not a role permission at all: only a grant opens content, admin included.
- :func:`authorize`: :func:`decide`, and every denial it returns is audited (in a short
  transaction of its own, aggregated per actor, permission and reason so that a scan cannot
  flood the chain) before it is raised.
- :func:`visible` ``(statement, actor)``: the scope filter every list and get goes through
  (NetBox's ``RestrictedQuerySet.restrict()`` is the model).

What a principal gets for a resource outside its scope (README, "Scope"): a read by id answers
404, exactly like a missing one; a tenant named in a write answers 403; a list is filtered.
Anything that covers every tenant (chain verification, checkpoints) needs a principal over all
tenants and answers 403 ``all-tenants-required`` to the others.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault.audit.denials import deny
from vault.errors import AllTenantsRequiredError, NotFoundError, PermissionDeniedError
from vault.models import (
    AccessRequest,
    AccessRequestRecording,
    AuditCheckpoint,
    AuditEvent,
    ErasureItem,
    ErasureRequest,
    Grant,
    GrantKind,
    GrantRecording,
    HoldMembership,
    LegalHold,
    Recording,
    Role,
    Tenant,
)


class Permission(StrEnum):
    tenant_create = "tenant:create"
    principal_manage = "principal:manage"
    recording_ingest = "recording:ingest"
    recording_metadata_read = "recording:metadata:read"
    recording_content_read = "recording:content:read"
    recording_purpose_end = "recording:purpose:end"
    access_request = "access:request"
    access_request_read = "access:request:read"  # own requests; reviewers: those in scope
    access_review = "access:review"
    grant_read = "grant:read"  # own grants
    grant_read_all = "grant:read:all"  # every grant in scope
    grant_revoke = "grant:revoke"
    break_glass = "access:break-glass"
    break_glass_review = "access:break-glass:review"
    hold_manage = "hold:manage"
    erasure_manage = "erasure:manage"
    audit_read = "audit:read"
    metrics_read = "metrics:read"
    keys_manage = "keys:manage"


P = Permission

# recording:content:read is deliberately absent: only a grant opens content.
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.admin: frozenset(
        {P.tenant_create, P.principal_manage, P.recording_metadata_read, P.recording_purpose_end,
         P.metrics_read, P.keys_manage}
    ),
    Role.ingest: frozenset({P.recording_ingest, P.recording_metadata_read}),
    Role.engineer: frozenset(
        {P.recording_metadata_read, P.access_request, P.access_request_read, P.grant_read,
         P.grant_revoke}
    ),
    Role.approver: frozenset(
        {P.recording_metadata_read, P.access_review, P.access_request_read, P.grant_read,
         P.grant_revoke}
    ),
    Role.security: frozenset(
        {P.recording_metadata_read, P.access_request, P.access_request_read, P.access_review,
         P.grant_read, P.grant_read_all, P.grant_revoke, P.break_glass, P.break_glass_review,
         P.hold_manage, P.audit_read}
    ),
    Role.privacy: frozenset(
        {P.recording_metadata_read, P.recording_purpose_end, P.hold_manage, P.erasure_manage}
    ),
    Role.auditor: frozenset({P.recording_metadata_read, P.audit_read}),
}  # fmt: skip

# Roles that may revoke grants they do not hold (within their scope).
REVOKER_ROLES = frozenset({Role.approver, Role.security})


def owner_key(owner: str) -> str:
    """Owners are normalised at creation; casefold again so a stray capital never splits a
    person (four-eyes compares owners, not principals)."""
    return owner.strip().casefold()


@dataclass(frozen=True, slots=True)
class Actor:
    """An authenticated principal as the services see it."""

    id: uuid.UUID
    name: str
    role: Role
    owner: str
    all_tenants: bool = False
    tenant_ids: frozenset[uuid.UUID] = field(default_factory=frozenset)
    # The local operator (CLI, jobs): every role permission, all tenants. Still no content
    # without a grant.
    system: bool = False

    @classmethod
    def operator(cls, name: str = "cli") -> Actor:
        return cls(
            id=uuid.UUID(int=0), name=name, role=Role.admin, owner=f"{name}@localhost",
            all_tenants=True, system=True,
        )  # fmt: skip

    def can(self, permission: Permission) -> bool:
        if permission is Permission.recording_content_read:
            return False  # only a grant opens content
        if self.system:
            return True
        return permission in ROLE_PERMISSIONS.get(self.role, frozenset())

    def in_scope(self, tenant_id: uuid.UUID) -> bool:
        return self.all_tenants or tenant_id in self.tenant_ids

    def is_owner(self, owner: str) -> bool:
        return owner_key(self.owner) == owner_key(owner)

    @property
    def single_tenant(self) -> uuid.UUID | None:
        return next(iter(self.tenant_ids)) if len(self.tenant_ids) == 1 else None

    @property
    def audit_name(self) -> str:
        """Opaque actor reference for audit events: the principal id, never a person's name."""
        return f"system:{self.name}" if self.system else str(self.id)


# --- resources: what the object rules look at --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resource:
    """An object under a permission. ``tenants`` is every tenant it touches; ``named`` means the
    caller named the tenant in a write (403 outside scope) rather than addressing an object by
    id (404 outside scope, like a missing one)."""

    tenants: frozenset[uuid.UUID] = frozenset()
    id: str | None = None
    named: bool = False
    every_tenant: bool = False  # covers all tenants (verification, tenant-less selectors)
    holder_id: uuid.UUID | None = None  # a grant's or request's principal
    holder_owner: str | None = None
    approver_roles: frozenset[str] = frozenset()  # a request's purpose's approver roles
    kind: str | None = None  # a grant's kind


def tenant(tenant_id: uuid.UUID | None, *, every_tenant: bool = False) -> Resource:
    """A tenant named in a write; ``None`` for a name that resolves to no tenant."""
    tenants = frozenset() if tenant_id is None else frozenset({tenant_id})
    return Resource(tenants=tenants, id=None, named=True, every_tenant=every_tenant)


def objects(tenants: Iterable[uuid.UUID], ident: object = None, **rules: Any) -> Resource:
    """Objects addressed by id, touching ``tenants``."""
    return Resource(tenants=frozenset(tenants), id=None if ident is None else str(ident), **rules)


EVERY_TENANT = Resource(every_tenant=True)


@dataclass(frozen=True, slots=True)
class Denial:
    reason: str  # a short stable code, audited
    detail: str
    not_found: bool = False  # answered like a missing object
    all_tenants: bool = False  # answered 403 all-tenants-required


# --- the predicates ----------------------------------------------------------------------------


def _scope(actor: Actor, res: Resource, what: str) -> Denial | None:
    """Scope over every tenant the resource touches."""
    if res.every_tenant:
        if actor.all_tenants:
            return None
        return Denial("all-tenants-required", f"{what} covers every tenant", all_tenants=True)
    inside = [actor.in_scope(t) for t in res.tenants]
    if res.named:
        if not res.tenants or not all(inside):
            # Unknown and foreign tenants look the same: a scoped key cannot probe names.
            return Denial("tenant-scope", "tenant outside the principal's scope")
        return None
    if all(inside):
        return None
    if not any(inside):
        return Denial("tenant-scope", f"no {what}", not_found=True)
    return Denial("partial-scope", f"{what} covers a recording outside your tenant scope")


def _review(actor: Actor, res: Resource) -> Denial | None:
    if actor.id == res.holder_id or (res.holder_owner and actor.is_owner(res.holder_owner)):
        return Denial(
            "four-eyes", "self-approval: the requester's owner can never review this request"
        )
    if actor.role not in res.approver_roles:
        roles = ", ".join(sorted(res.approver_roles))
        detail = f"role {actor.role} may not review this purpose (approver roles: {roles})"
        return Denial("approver-role", detail)
    return None


def _revoke(actor: Actor, res: Resource) -> Denial | None:
    """The holder themself (any of their principals), or an approver/security with scope over
    everything the grant covers. Revoking only ever reduces access, so the operator may too."""
    if actor.system or actor.id == res.holder_id:
        return None
    if res.holder_owner and actor.is_owner(res.holder_owner):
        return None
    if actor.role in REVOKER_ROLES:
        return _scope(actor, res, "grant")
    if not any(actor.in_scope(t) for t in res.tenants):
        return Denial("tenant-scope", "no grant", not_found=True)
    return Denial("not-holder", "only the holder, an approver or security may revoke this")


def _security_person(actor: Actor) -> Denial | None:
    # The local operator holds every permission, but break-glass is a person's act.
    if actor.system or actor.role != Role.security:
        return Denial("security-only", "break-glass is for security principals only")
    return None


def _review_break_glass(actor: Actor, res: Resource) -> Denial | None:
    if res.kind is not None and res.kind != GrantKind.break_glass.value:
        return None  # not a break-glass grant: the service answers "nothing to review"
    if actor.id == res.holder_id or (res.holder_owner and actor.is_owner(res.holder_owner)):
        return Denial(
            "four-eyes", "a break-glass grant is reviewed by a security principal of another owner"
        )
    return None


Rule = Callable[[Actor, Resource], Denial | None]

# Object rules per permission, checked after scope (scope first, so that nobody learns an
# object's state without the right to see it).
OBJECT_RULES: dict[Permission, tuple[Rule, ...]] = {
    P.access_review: (_review,),
    P.break_glass: (lambda a, _r: _security_person(a),),
    P.break_glass_review: (lambda a, _r: _security_person(a), _review_break_glass),
}


def decide(actor: Actor, permission: Permission, resource: Resource | None = None) -> Denial | None:
    """None when allowed, else why not. Pure: no I/O, nothing audited."""
    if not actor.can(permission):
        if permission is Permission.recording_content_read:
            return Denial("grant-required", "no active grant of yours covers this recording")
        return Denial("role", f"role {actor.role} lacks {permission}")
    if resource is None:
        return None
    if permission is P.grant_revoke:
        return _revoke(actor, resource)
    found = _scope(actor, resource, _what(permission))
    if found is not None:
        return found
    for rule in OBJECT_RULES.get(permission, ()):
        found = rule(actor, resource)
        if found is not None:
            return found
    return None


def _what(permission: Permission) -> str:
    return {
        P.access_review: "access request", P.grant_revoke: "grant",
        P.break_glass_review: "grant", P.audit_read: "audit log",
    }.get(permission, "recording")  # fmt: skip


def authorize(
    session: Session,
    actor: Actor,
    permission: Permission,
    resource: Resource | None = None,
    *,
    now: datetime,
) -> None:
    """:func:`decide`, auditing and raising every denial (see the module docstring)."""
    denial = decide(actor, permission, resource)
    if denial is None:
        return
    tenants = resource.tenants if resource is not None else frozenset()
    _audit(
        session, actor, permission, denial.reason, now=now,
        target=None if resource is None else resource.id,
        tenant_id=next(iter(tenants)) if len(tenants) == 1 else None,
    )  # fmt: skip
    if denial.not_found:
        raise NotFoundError(denial.detail)
    if denial.all_tenants:
        raise AllTenantsRequiredError(
            f"{denial.detail}: it needs a principal over all tenants until the log can be "
            "verified per tenant"
        )
    raise PermissionDeniedError(denial.detail)


def _audit(
    session: Session,
    actor: Actor,
    permission: Permission,
    reason: str,
    *,
    now: datetime,
    target: str | None,
    tenant_id: uuid.UUID | None,
) -> None:
    """A denial carries the tenant it was about where known (the target's, else the actor's
    single tenant)."""
    deny(
        session, actor=actor.audit_name, role=str(actor.role), permission=str(permission),
        reason=reason, target=target, tenant_id=tenant_id or actor.single_tenant, now=now,
    )  # fmt: skip


# --- the one scope filter ----------------------------------------------------------------------


def _in(column: Any, actor: Actor) -> Any:
    return col(column).in_(actor.tenant_ids) if actor.tenant_ids else sa.false()


def _all_recordings_in_scope(link: Any, key: Any, owner: Any, actor: Actor) -> Any:
    outside = (
        select(link.recording_id)
        .join(Recording, col(Recording.id) == col(link.recording_id))
        .where(key == owner, ~_in(Recording.tenant_id, actor))
    )
    return ~sa.exists(outside)


def _members_in_scope(link: Any, key: Any, owner: Any, actor: Actor) -> Any:
    some = select(link.recording_id).where(key == owner)
    return sa.and_(sa.exists(some), _all_recordings_in_scope(link, key, owner, actor))


_SCOPES: dict[Any, Callable[[Actor], Any]] = {
    Recording: lambda a: _in(Recording.tenant_id, a),
    Tenant: lambda a: _in(Tenant.id, a),
    AccessRequest: lambda a: _members_in_scope(
        AccessRequestRecording, AccessRequestRecording.request_id, AccessRequest.id, a
    ),
    Grant: lambda a: _members_in_scope(GrantRecording, GrantRecording.grant_id, Grant.id, a),
    # A hold with a tenant is that tenant's; one without spans the tenants of its members,
    # and one whose selector catches future recordings spans every tenant.
    LegalHold: lambda a: sa.or_(
        _in(LegalHold.tenant_id, a),
        sa.and_(
            col(LegalHold.tenant_id).is_(None),
            col(LegalHold.selects_future).is_(False),
            _members_in_scope(HoldMembership, HoldMembership.hold_id, LegalHold.id, a),
        ),
    ),
    ErasureRequest: lambda a: sa.or_(
        _in(ErasureRequest.tenant_id, a),
        sa.and_(
            col(ErasureRequest.tenant_id).is_(None),
            _members_in_scope(ErasureItem, ErasureItem.request_id, ErasureRequest.id, a),
        ),
    ),
    # Events without a tenant are for principals over all tenants only.
    AuditEvent: lambda a: _in(AuditEvent.tenant_id, a),
    AuditCheckpoint: lambda a: sa.false(),  # checkpoints sign every tenant's events
}

Q = TypeVar("Q")


def visible(statement: Q, actor: Actor) -> Q:
    """``statement`` restricted to what ``actor``'s scope may see (its first entity decides)."""
    if actor.all_tenants:
        return statement
    entity = statement.column_descriptions[0]["entity"]  # type: ignore[attr-defined]
    scope = _SCOPES.get(entity)
    if scope is None:  # deny by default: an unregistered table shows nothing
        return statement.where(sa.false())  # type: ignore[attr-defined,no-any-return]
    return statement.where(scope(actor))  # type: ignore[attr-defined,no-any-return]


M = TypeVar("M")


def get_visible(
    session: Session,
    actor: Actor,
    model: type[M],
    ident: Any,
    *,
    permission: Permission,
    now: datetime,
    what: str,
    lock: bool = False,
) -> M:
    """The object by id if ``actor`` may see it, else ``NotFoundError`` (the same answer for
    missing and for out of scope; the latter is audited as a denial)."""
    pk = sa.inspect(model).primary_key[0]  # type: ignore[union-attr]
    stmt = select(model).where(pk == ident)
    if lock:
        stmt = stmt.with_for_update()
    row = session.exec(visible(stmt, actor).execution_options(populate_existing=True)).first()
    if row is not None:
        return row  # type: ignore[no-any-return]
    hidden = session.get(model, ident)
    if hidden is not None:  # it exists, outside the actor's scope: a denial, answered as missing
        tenant_id = getattr(hidden, "tenant_id", None)
        _audit(
            session, actor, permission, "tenant-scope", now=now, target=str(ident),
            tenant_id=tenant_id if isinstance(tenant_id, uuid.UUID) else None,
        )  # fmt: skip
    raise NotFoundError(f"no {what} {ident}")


def get_visible_many(
    session: Session,
    actor: Actor,
    ids: Iterable[uuid.UUID],
    *,
    permission: Permission,
    now: datetime,
    lock: bool = False,
) -> list[Recording]:
    """Recordings by id, in order; any missing or out of scope is ``NotFoundError`` (audited
    as a denial when it exists)."""
    wanted = list(ids)
    stmt = select(Recording).where(col(Recording.id).in_(wanted)).order_by(col(Recording.id))
    if lock:
        stmt = stmt.with_for_update()
    rows = {r.id: r for r in session.exec(visible(stmt, actor))}
    for rid in wanted:
        if rid not in rows:
            get_visible(
                session, actor, Recording, rid, permission=permission, now=now, what="recording"
            )
    return [rows[rid] for rid in wanted]
