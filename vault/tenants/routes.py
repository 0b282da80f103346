"""/v1/tenants: status, offboarding, per-tenant policy and authorisations.

Writes are proposals (admin) that take effect when a privacy principal of another owner
approves them, naming the ``change_id`` it saw (:mod:`vault.tenants.changes`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from vault.api.deps import CtxDep, CurrentActor, ReadSessionDep, SessionDep
from vault.identity.tenants import list_tenants, tenant_for_read
from vault.models import (
    ChangeApprove,
    OffboardingPublic,
    Tenant,
    TenantChangePublic,
    TenantPolicyPublic,
    TenantPublic,
)
from vault.tenants import changes, offboarding
from vault.tenants import policy as tenant_policy
from vault.validation import MultilineText

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])

JsonBody = Annotated[dict[str, Any], Body()]


def _public(tenant: Tenant) -> TenantPublic:
    return TenantPublic.model_validate(tenant, from_attributes=True)


@router.get("", response_model=list[TenantPublic])
def get_tenants(ctx: CtxDep, session: ReadSessionDep, actor: CurrentActor) -> list[TenantPublic]:
    return [_public(t) for t in list_tenants(session, actor=actor, now=ctx.now())]


@router.get("/{name}", response_model=TenantPublic)
def get_tenant(
    ctx: CtxDep, session: ReadSessionDep, actor: CurrentActor, name: str
) -> TenantPublic:
    return _public(tenant_for_read(session, actor, name, now=ctx.now()))


@router.get("/{name}/changes", response_model=list[TenantChangePublic])
def get_pending_changes(
    ctx: CtxDep, session: ReadSessionDep, actor: CurrentActor, name: str
) -> list[TenantChangePublic]:
    tenant = tenant_for_read(session, actor, name, now=ctx.now())
    return [changes.to_public(c, tenant) for c in changes.pending(session, tenant.id)]


# --- offboarding --------------------------------------------------------------------------------


@router.post("/{name}/offboard", status_code=202, response_model=TenantChangePublic)
def propose_offboarding(
    ctx: CtxDep,
    session: SessionDep,
    actor: CurrentActor,
    name: str,
    reason: Annotated[MultilineText, Body(embed=True, max_length=2000)],
) -> TenantChangePublic:
    change = offboarding.propose(session, actor=actor, tenant=name, reason=reason, now=ctx.now())
    return changes.to_public(change, _tenant(session, change.tenant_id))


@router.post("/{name}/offboard/approve", response_model=TenantChangePublic)
def approve_offboarding(
    ctx: CtxDep, session: SessionDep, actor: CurrentActor, name: str, body: ChangeApprove
) -> TenantChangePublic:
    change = offboarding.approve(
        session, actor=actor, policy=ctx.policy, tenant=name, change_id=body.change_id,
        now=ctx.now(),
    )  # fmt: skip
    return changes.to_public(change, _tenant(session, change.tenant_id))


@router.get("/{name}/offboarding", response_model=OffboardingPublic)
def get_offboarding(
    ctx: CtxDep, session: ReadSessionDep, actor: CurrentActor, name: str
) -> OffboardingPublic:
    return offboarding.get_offboarding(session, actor=actor, tenant=name, now=ctx.now())


# --- policy and authorisations -----------------------------------------------------------------


@router.put("/{name}/policy", status_code=202, response_model=TenantChangePublic)
def propose_policy(
    ctx: CtxDep, session: SessionDep, actor: CurrentActor, name: str, body: JsonBody
) -> TenantChangePublic:
    change, dry_run = tenant_policy.propose_restrictions(
        session, actor=actor, policy=ctx.policy, tenant=name, body=body, now=ctx.now()
    )
    return changes.to_public(change, _tenant(session, change.tenant_id), dry_run)


@router.post("/{name}/policy/approve", response_model=TenantChangePublic)
def approve_policy(
    ctx: CtxDep, session: SessionDep, actor: CurrentActor, name: str, body: ChangeApprove
) -> TenantChangePublic:
    change = tenant_policy.approve_restrictions(
        session, actor=actor, policy=ctx.policy, tenant=name, change_id=body.change_id,
        now=ctx.now(),
    )  # fmt: skip
    return changes.to_public(change, _tenant(session, change.tenant_id))


@router.get("/{name}/policy", response_model=TenantPolicyPublic)
def get_policy(
    ctx: CtxDep, session: ReadSessionDep, actor: CurrentActor, name: str
) -> TenantPolicyPublic:
    return tenant_policy.get_policy(
        session, actor=actor, policy=ctx.policy, tenant=name, now=ctx.now()
    )


@router.put("/{name}/authorisations", status_code=202, response_model=TenantChangePublic)
def propose_authorisations(
    ctx: CtxDep, session: SessionDep, actor: CurrentActor, name: str, body: JsonBody
) -> TenantChangePublic:
    change = tenant_policy.propose_authorisations(
        session, actor=actor, tenant=name, body=body, now=ctx.now()
    )
    return changes.to_public(change, _tenant(session, change.tenant_id))


@router.post("/{name}/authorisations/approve", response_model=TenantChangePublic)
def approve_authorisations(
    ctx: CtxDep, session: SessionDep, actor: CurrentActor, name: str, body: ChangeApprove
) -> TenantChangePublic:
    change = tenant_policy.approve_authorisations(
        session, actor=actor, tenant=name, change_id=body.change_id, now=ctx.now()
    )
    return changes.to_public(change, _tenant(session, change.tenant_id))


def _tenant(session: Any, tenant_id: Any) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    assert tenant is not None
    return tenant
