"""/v1/tenants (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from vault.api.deps import CtxDep, SessionDep, require
from vault.authz import Actor, Permission
from vault.identity import tenants
from vault.models import TenantCreate, TenantPublic

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])


@router.post("", status_code=201, response_model=TenantPublic)
def create_tenant(
    body: TenantCreate,
    ctx: CtxDep,
    session: SessionDep,
    actor: Annotated[Actor, Depends(require(Permission.tenant_create))],
) -> TenantPublic:
    tenant = tenants.create_tenant(
        session, actor=actor, name=body.name, region=body.region, now=ctx.now()
    )
    session.commit()
    return TenantPublic.model_validate(tenant, from_attributes=True)
