"""A tenant's own policy: restrictions within the global policy, and the customer's
authorisations; and the *effective* policy every domain asks for.

- **Restrictions** (``PUT /v1/tenants/{name}/policy``) may only tighten
  (:func:`vault.policy_restrictions.tightens` names the field that would loosen). They take effect
  when a privacy principal of another owner approves (:mod:`.changes`): new ingests use them at
  once; a shortening reaches recordings already stored no sooner than :data:`GRACE` (24 h) after
  the approval, by moving each affected purpose's ``expires_at`` to ``max(ingested_at + days,
  approved_at + GRACE)`` in the approval's unit of work, so the ordinary expire-purposes and
  dispose jobs do the rest. A disabled purpose ends on stored recordings at ``approved_at +
  GRACE`` and is refused for new ingests and access requests.
- **Authorisations** (sub-processor opt-ins, allowed transfers), each with the customer's
  instruction reference: four-eyes too; the sub-processor hand-offs read the opt-ins
  (:func:`authorisations_of`, :func:`opted_in_tenants`), :mod:`vault.residency` the transfers.

:func:`effective_for` is the one place the global policy and a tenant's restrictions meet.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlmodel import Session, col, select

from vault import audit
from vault.authz import Actor
from vault.errors import InvalidInputError
from vault.identity.tenants import tenant_for_read
from vault.models import (
    ChangeKind,
    Recording,
    RecordingPurpose,
    Tenant,
    TenantChange,
    TenantPolicy,
    TenantPolicyPublic,
)
from vault.policy import Policy
from vault.policy_restrictions import TenantRestrictions, effective, tightens
from vault.tenants import changes

__all__ = [
    "GRACE", "Authorisations", "apply_restrictions", "approve_authorisations",
    "approve_restrictions", "authorisations_of", "dry_run", "effective_for", "get_policy",
    "opted_in", "opted_in_tenants", "parse_authorisations",
    "parse_restrictions", "propose_authorisations", "propose_restrictions", "restrictions_of",
]  # fmt: skip

# A shortening approved now reaches stored recordings no sooner than this: the customer and the
# operator have a day to notice a mistake before anything is disposed of because of it.
GRACE = timedelta(hours=24)


def _first_error(exc: ValidationError) -> InvalidInputError:
    err = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in err["loc"]) or "<body>"
    return InvalidInputError(f"{field}: {err['msg']}", field=field)


def parse_restrictions(policy: Policy, raw: object) -> TenantRestrictions:
    """Validated restrictions, or ``InvalidInputError``/``PolicyLoosensError`` naming the field."""
    try:
        restrictions = TenantRestrictions.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(exc) from None
    tightens(policy, restrictions)
    return restrictions


def restrictions_of(session: Session, tenant_id: uuid.UUID) -> TenantRestrictions | None:
    row = session.get(TenantPolicy, tenant_id)
    if row is None or row.restrictions is None:
        return None
    return TenantRestrictions.model_validate(json.loads(row.restrictions))


def effective_for(session: Session, policy: Policy, tenant_ids: Iterable[uuid.UUID]) -> Policy:
    """The policy for work on these tenants' recordings: the global one with each tenant's
    approved restrictions applied (several tenants: the strictest of each rule)."""
    found = [r for t in sorted(set(tenant_ids)) if (r := restrictions_of(session, t)) is not None]
    return effective(policy, *found) if found else policy


# --- shortening stored recordings ---------------------------------------------------------------


def _shortenings(
    session: Session, tenant_id: uuid.UUID, restrictions: TenantRestrictions, at: datetime
) -> list[tuple[RecordingPurpose, datetime]]:
    """(active purpose row, its new expiry) for every purpose the restrictions shorten."""
    rules = {
        name: r for name, r in restrictions.purposes.items()
        if r.disabled or r.retention_days is not None
    }  # fmt: skip
    if not rules:
        return []
    rows = session.exec(
        select(RecordingPurpose, Recording.ingested_at)
        .join(Recording, col(Recording.id) == col(RecordingPurpose.recording_id))
        .where(
            Recording.tenant_id == tenant_id,
            col(RecordingPurpose.purpose).in_(sorted(rules)),
            RecordingPurpose.active_at(at),
        )
        .order_by(col(RecordingPurpose.recording_id), col(RecordingPurpose.purpose))
    ).all()
    earliest = at + GRACE
    out = []
    for purpose, ingested_at in rows:
        r = rules[purpose.purpose]
        if r.disabled:
            target = earliest
        else:
            assert r.retention_days is not None
            target = max(ingested_at + timedelta(days=r.retention_days), earliest)
        if target < purpose.expires_at:
            out.append((purpose, target))
    return out


def dry_run(
    session: Session, tenant_id: uuid.UUID, restrictions: TenantRestrictions, now: datetime
) -> dict[str, Any]:
    """What approving now would shorten: recordings, and purposes per name."""
    found = _shortenings(session, tenant_id, restrictions, now)
    per: dict[str, int] = {}
    for purpose, _ in found:
        per[purpose.purpose] = per.get(purpose.purpose, 0) + 1
    return {
        "recordings_shortened": len({p.recording_id for p, _ in found}),
        "purposes_shortened": dict(sorted(per.items())),
        "earliest_effect_on_stored": audit.format_ts(now + GRACE),
    }


def apply_restrictions(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    change_id: uuid.UUID,
    restrictions: TenantRestrictions,
    now: datetime,
) -> dict[str, Any]:
    """Make approved restrictions the tenant's, and shorten stored recordings (not before
    ``now + GRACE``); the audit details for the approval."""
    row = session.get(TenantPolicy, tenant_id) or TenantPolicy(tenant_id=tenant_id)
    row.restrictions = restrictions.model_dump_json(exclude_defaults=True)
    row.restrictions_change, row.restrictions_approved_at = change_id, now
    session.add(row)
    found = _shortenings(session, tenant_id, restrictions, now)
    for purpose, target in found:
        purpose.expires_at = target
        session.add(purpose)
    session.flush()
    return {
        "recordings_shortened": len({p.recording_id for p, _ in found}),
        "effective_on_stored_from": audit.format_ts(now + GRACE),
    }


# --- authorisations ---------------------------------------------------------------------------

_REF = Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")


class SubprocessorOptIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    subprocessor: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    opted_in: bool
    instruction_ref: str = _REF


class TransferPermission(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    destination: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    mechanism: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    instruction_ref: str = _REF


class Authorisations(BaseModel):
    """The customer's documented instructions; every entry cites its instruction reference."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    subprocessors: list[SubprocessorOptIn] = Field(default_factory=list, max_length=100)
    transfers: list[TransferPermission] = Field(default_factory=list, max_length=100)


def parse_authorisations(raw: object) -> Authorisations:
    try:
        return Authorisations.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(exc) from None


def authorisations_of(session: Session, tenant_id: uuid.UUID) -> Authorisations:
    """The tenant's approved authorisations (none approved: an empty set, which allows nothing)."""
    row = session.get(TenantPolicy, tenant_id)
    if row is None or row.authorisations is None:
        return Authorisations()
    return Authorisations.model_validate(json.loads(row.authorisations))


def opted_in(authorisations: Authorisations, subprocessor: str) -> bool:
    """Opted in to ``subprocessor`` (by name): listed, and never listed as opted out."""
    found = [o.opted_in for o in authorisations.subprocessors if o.subprocessor == subprocessor]
    return bool(found) and all(found)


def opted_in_tenants(session: Session, subprocessor: str) -> frozenset[uuid.UUID]:
    """The tenants whose approved authorisations opt in to ``subprocessor``."""
    rows = session.exec(
        select(TenantPolicy.tenant_id, TenantPolicy.authorisations).where(
            col(TenantPolicy.authorisations).is_not(None)
        )
    ).all()
    return frozenset(
        tenant_id for tenant_id, raw in rows
        if opted_in(Authorisations.model_validate(json.loads(raw)), subprocessor)
    )  # fmt: skip


def apply_authorisations(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    change_id: uuid.UUID,
    authorisations: Authorisations,
    now: datetime,
) -> dict[str, Any]:
    row = session.get(TenantPolicy, tenant_id) or TenantPolicy(tenant_id=tenant_id)
    row.authorisations = authorisations.model_dump_json()
    row.authorisations_change, row.authorisations_approved_at = change_id, now
    session.add(row)
    session.flush()
    return {
        "subprocessors": len(authorisations.subprocessors),
        "transfers": len(authorisations.transfers),
    }


# --- the services behind the routes --------------------------------------------------------------


def propose_restrictions(
    session: Session, *, actor: Actor, policy: Policy, tenant: str, body: object, now: datetime
) -> tuple[TenantChange, dict[str, Any]]:
    """A proposal (with its dry run) of the restrictions in ``body`` (plus ``reason``)."""
    raw, reason = _split(body)
    restrictions = parse_restrictions(policy, raw)
    change = changes.propose(
        session, actor=actor, tenant=tenant, kind=ChangeKind.policy,
        payload=restrictions.model_dump(mode="json", exclude_defaults=True), reason=reason,
        now=now,
    )  # fmt: skip
    return change, dry_run(session, change.tenant_id, restrictions, now)


def approve_restrictions(
    session: Session,
    *,
    actor: Actor,
    policy: Policy,
    tenant: str,
    change_id: uuid.UUID,
    now: datetime,
) -> TenantChange:
    def apply(s: Session, change: TenantChange, row: Tenant, payload: dict[str, Any]) -> Any:
        # Checked again: the global policy may have changed since the proposal.
        restrictions = parse_restrictions(policy, payload)
        return apply_restrictions(
            s, tenant_id=row.id, change_id=change.id, restrictions=restrictions, now=now
        )

    return changes.approve(
        session, actor=actor, tenant=tenant, kind=ChangeKind.policy, change_id=change_id,
        now=now, apply=apply,
    )  # fmt: skip


def propose_authorisations(
    session: Session, *, actor: Actor, tenant: str, body: object, now: datetime
) -> TenantChange:
    raw, reason = _split(body)
    parsed = parse_authorisations(raw)
    return changes.propose(
        session, actor=actor, tenant=tenant, kind=ChangeKind.authorisations,
        payload=parsed.model_dump(mode="json"), reason=reason, now=now,
    )  # fmt: skip


def approve_authorisations(
    session: Session, *, actor: Actor, tenant: str, change_id: uuid.UUID, now: datetime
) -> TenantChange:
    def apply(s: Session, change: TenantChange, row: Tenant, payload: dict[str, Any]) -> Any:
        return apply_authorisations(
            s, tenant_id=row.id, change_id=change.id,
            authorisations=parse_authorisations(payload), now=now,
        )  # fmt: skip

    return changes.approve(
        session, actor=actor, tenant=tenant, kind=ChangeKind.authorisations,
        change_id=change_id, now=now, apply=apply,
    )  # fmt: skip


def get_policy(
    session: Session, *, actor: Actor, policy: Policy, tenant: str, now: datetime
) -> TenantPolicyPublic:
    row = tenant_for_read(session, actor, tenant, now=now)
    stored = session.get(TenantPolicy, row.id)
    eff = effective_for(session, policy, [row.id])
    return TenantPolicyPublic(
        tenant=row.name,
        restrictions=json.loads(stored.restrictions) if stored and stored.restrictions else {},
        restrictions_approved_at=stored.restrictions_approved_at if stored else None,
        authorisations=json.loads(stored.authorisations)
        if stored and stored.authorisations else {},
        authorisations_approved_at=stored.authorisations_approved_at if stored else None,
        effective={
            "erasure_deadline_days": eff.erasure_deadline_days,
            "disabled_purposes": list(eff.tenant_disabled),
            "purposes": {
                name: p.model_dump(include={"retention_days", "approvals", "approver_roles",
                                            "max_access_minutes"})
                for name, p in sorted(eff.purposes.items())
            },
        },
    )  # fmt: skip


def _split(body: object) -> tuple[dict[str, Any], str]:
    if not isinstance(body, dict):
        raise InvalidInputError("the body must be a JSON object", field="<body>")
    raw = dict(body)
    reason = raw.pop("reason", None)
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInputError("reason: 1-2000 characters", field="reason")
    return raw, reason
