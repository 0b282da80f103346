"""The decision: the role table, then the object rules as predicates; and its enforcement.

:func:`decide` is pure. :func:`authorize` decides, audits every denial (after the caller's unit of
work ends, aggregated per actor, permission, reason and tenant) and raises it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from vault.audit.denials import deny
from vault.authz.roles import REVOKER_ROLES, Actor, P, Permission
from vault.errors import AllTenantsRequiredError, NotFoundError, PermissionDeniedError
from vault.models import GrantKind, Role

__all__ = [
    "EVERY_TENANT", "Denial", "Resource", "audit_denial", "authorize", "decide", "objects",
    "tenant",
]  # fmt: skip


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
    # Owners who may not act on it besides the holder's (a disclosure's earlier approvers).
    excluded_owners: frozenset[str] = frozenset()


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


def _approve_change(actor: Actor, res: Resource) -> Denial | None:
    # The local operator is nobody's second pair of eyes: a tenant change needs two people.
    same_owner = bool(res.holder_owner) and actor.is_owner(res.holder_owner or "")
    if actor.system or actor.id == res.holder_id or same_owner:
        return Denial(
            "four-eyes", "a tenant change is approved by a privacy principal of another owner"
        )
    return None


def _disclosure_four_eyes(actor: Actor, res: Resource) -> Denial | None:
    """A disclosure is approved (and an emergency one after-reviewed) by people other than its
    requester and than each other, each in a role still missing; never by the operator."""
    if (
        actor.system
        or actor.id == res.holder_id
        or (res.holder_owner and actor.is_owner(res.holder_owner))
        or actor.owner in res.excluded_owners
    ):
        return Denial(
            "four-eyes",
            "a disclosure needs owners other than its requester and than each other",
        )
    if res.approver_roles and actor.role not in res.approver_roles:
        roles = ", ".join(sorted(res.approver_roles))
        return Denial("approver-role", f"role {actor.role} is not the one missing here ({roles})")
    return None


def _own_handoff(actor: Actor, res: Resource) -> Denial | None:
    # A hand-off's holder is its sub-processor: only principals bound to that entry redeem it;
    # any other (another sub-processor's key, the operator) sees no such hand-off.
    if actor.subprocessor_id is None or actor.subprocessor_id != res.holder_id:
        return Denial("not-recipient", "no hand-off", not_found=True)
    return None


Rule = Callable[[Actor, Resource], Denial | None]

# Object rules per permission, checked after scope (scope first, so that nobody learns an
# object's state without the right to see it).
OBJECT_RULES: dict[Permission, tuple[Rule, ...]] = {
    P.access_review: (_review,),
    P.break_glass: (lambda a, _r: _security_person(a),),
    P.break_glass_review: (lambda a, _r: _security_person(a), _review_break_glass),
    P.tenant_change_approve: (_approve_change,),
    P.disclosure_approve: (_disclosure_four_eyes,),
    P.disclosure_review: (_disclosure_four_eyes,),
    P.handoff_redeem: (_own_handoff,),
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
        P.disclosure_approve: "disclosure", P.disclosure_review: "disclosure",
        P.disclosure_manage: "disclosure", P.disclosure_read: "disclosure",
        P.handoff_redeem: "hand-off",
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
    audit_denial(
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


def audit_denial(
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
