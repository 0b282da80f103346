"""/v1/tenants (admin)."""

from __future__ import annotations

from fastapi import APIRouter

from vault.api.deps import CtxDep, CurrentActor, SessionDep
from vault.identity import tenants
from vault.models import TenantCreate, TenantPublic

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])


@router.post("", status_code=201, response_model=TenantPublic)
def create_tenant(
    body: TenantCreate, ctx: CtxDep, session: SessionDep, actor: CurrentActor
) -> TenantPublic:
    tenant = tenants.create_tenant(
        session, actor=actor, name=body.name, region=body.region, now=ctx.now(),
        regions=ctx.settings.known_regions,
    )  # fmt: skip
    return TenantPublic.model_validate(tenant, from_attributes=True)
