"""When a recording may go to a sub-processor: each rule written once, in SQL.

A recording is eligible for a sub-processor's hand-off while all of :data:`RULES` hold (an
original, stored, its tenant active, the sub-processor's purpose active on it, no restriction of
processing, no erasure under way), its tenant opted in to that sub-processor, and any transfer
across regions is authorised. The job claims with these conditions and checks them again when it
issues; redemption and the transcript's return check them again, so a rule that stops holding
withdraws a hand-off still open (:func:`refusal` names the first that fails).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault.models import (
    Handoff,
    Recording,
    RecordingPurpose,
    RecordingStatus,
    Subprocessor,
    Tenant,
    TenantStatus,
    restricted,
    under_erasure,
)
from vault.subprocessors.transfers import Transfer, check_transfer
from vault.tenants import policy as tenant_policy

__all__ = ["RULES", "eligible", "refusal", "transfer_for"]


def _purpose_active(purpose: str, now: datetime) -> Any:
    return sa.exists().where(
        RecordingPurpose.recording_id == Recording.id,
        RecordingPurpose.purpose == purpose,
        RecordingPurpose.active_at(now),
    )


# Each rule over ``Recording`` (joined to its ``Tenant``): name -> condition(purpose, now).
RULES: dict[str, Callable[[str, datetime], Any]] = {
    "recording-not-stored": lambda _p, _n: sa.and_(
        Recording.status == RecordingStatus.stored.value, col(Recording.wrapped_dek).is_not(None)
    ),
    "derivative": lambda _p, _n: col(Recording.parent_id).is_(None),
    "tenant-not-active": lambda _p, _n: Tenant.status == TenantStatus.active.value,
    "purpose-not-active": _purpose_active,
    "recording-restricted": lambda _p, _n: ~restricted(Recording.id),
    "under-erasure": lambda _p, _n: ~under_erasure(Recording.id),
}


def eligible(purpose: str, now: datetime) -> list[Any]:
    """Every rule, for a ``WHERE`` over ``Recording`` joined to ``Tenant``."""
    return [rule(purpose, now) for rule in RULES.values()]


def transfer_for(session: Session, tenant: Tenant, sp: Subprocessor) -> Transfer:
    return check_transfer(
        source_region=tenant.region, destination_region=sp.region,
        authorisations=tenant_policy.authorisations_of(session, tenant.id),
    )  # fmt: skip


def refusal(session: Session, handoff: Handoff, sp: Subprocessor, now: datetime) -> str | None:
    """The first rule that no longer allows ``handoff``, or None."""
    if sp.removed_at is not None:
        return "subprocessor-removed"
    checks = [rule(sp.purpose, now).label(name) for name, rule in RULES.items()]
    row = session.exec(
        select(*checks)
        .select_from(Recording)
        .join(Tenant, col(Tenant.id) == col(Recording.tenant_id))
        .where(Recording.id == handoff.recording_id)
    ).first()
    if row is None:
        return "recording-not-stored"
    for name, ok in zip(RULES, row, strict=True):
        if not ok:
            return name
    tenant = session.get(Tenant, handoff.tenant_id)
    assert tenant is not None
    if not tenant_policy.opted_in(tenant_policy.authorisations_of(session, tenant.id), sp.name):
        return "not-opted-in"
    if not transfer_for(session, tenant, sp).allowed:
        return "transfer-not-authorised"
    return None
