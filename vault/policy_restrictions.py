"""A tenant's own restrictions of the global policy, and the rule that they only ever tighten it.

:func:`tightens` refuses (naming the exact field) anything not stricter than the global policy;
:func:`effective` is the global policy with a tenant's restrictions applied. Where they are
stored and approved (four-eyes) is :mod:`vault.tenants.policy`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from vault.errors import PolicyLoosensError
from vault.policy import (
    _CONFIG,
    _MAX_DAYS,
    JOB_SLACK_DAYS,
    Policy,
    PurposeName,
    Role,
    _show,
)

__all__ = ["PurposeRestriction", "TenantRestrictions", "effective", "tightens"]


class PurposeRestriction(BaseModel):
    """A tenant's restriction of one purpose; unset fields keep the global rule."""

    model_config = _CONFIG  # strict: a boolean is never a number of days

    retention_days: float | None = Field(None, ge=1, le=_MAX_DAYS, allow_inf_nan=False)
    approvals: int | None = Field(None, ge=1, le=10)
    approver_roles: list[Role] | None = Field(None, min_length=1)
    disabled: bool = False


class TenantRestrictions(BaseModel):
    """What a tenant (the controller) asks of the operator within the global policy."""

    model_config = _CONFIG

    purposes: dict[PurposeName, PurposeRestriction] = Field(default_factory=dict)
    erasure_deadline_days: float | None = Field(None, gt=0, le=_MAX_DAYS, allow_inf_nan=False)


def tightens(policy: Policy, restrictions: TenantRestrictions) -> None:
    """Refuse (``PolicyLoosensError`` naming the field) anything not stricter than ``policy``:
    a tenant may shorten, add approvals, narrow roles or disable, never the reverse."""

    def refuse(field: str, why: str) -> PolicyLoosensError:
        return PolicyLoosensError(f"{field}: {why}", field=field)

    for name, r in sorted(restrictions.purposes.items()):
        at = f"purposes.{name}"
        rules = policy.purposes.get(name)
        if rules is None:
            known = ", ".join(policy.names)
            raise refuse(at, f"not a purpose of the global policy ({known})")
        if r.retention_days is not None and r.retention_days > rules.retention_days:
            raise refuse(
                f"{at}.retention_days",
                f"must be <= {_show(rules.retention_days)}, the global retention "
                f"(got {_show(r.retention_days)})",
            )
        if r.approvals is not None and r.approvals < rules.approvals:
            raise refuse(
                f"{at}.approvals",
                f"must be >= {rules.approvals}, the global approvals (got {r.approvals})",
            )
        if r.approver_roles is not None:
            extra = sorted(set(r.approver_roles) - set(rules.approver_roles))
            if extra:
                allowed = ", ".join(rules.approver_roles)
                raise refuse(
                    f"{at}.approver_roles",
                    f"{extra[0]} is not a global approver role of {name} ({allowed})",
                )
    if restrictions.purposes and all(
        restrictions.purposes.get(n, PurposeRestriction()).disabled for n in policy.names
    ):
        raise refuse("purposes", "at least one purpose must stay enabled")
    days = restrictions.erasure_deadline_days
    if days is not None:
        floor = policy.kek_rotation_days + JOB_SLACK_DAYS
        if days > policy.erasure_deadline_days:
            raise refuse(
                "erasure_deadline_days",
                f"must be <= {_show(policy.erasure_deadline_days)}, the global deadline "
                f"(got {_show(days)})",
            )
        if days <= floor:
            raise refuse(
                "erasure_deadline_days",
                f"must be > {_show(floor)} (kek_rotation_days + {JOB_SLACK_DAYS} day of job "
                f"slack), or crypto-shredding cannot finish in time (got {_show(days)})",
            )


def effective(policy: Policy, *restrictions: TenantRestrictions) -> Policy:
    """The policy with each tenant's restrictions applied (already checked by
    :func:`tightens`). Several tenants (a request over recordings of two) compose to the
    strictest of each: shortest retention, most approvals, common approver roles; a purpose any
    of them disabled is gone."""
    purposes = dict(policy.purposes)
    deadline = policy.erasure_deadline_days
    disabled = set(policy.tenant_disabled)
    for r in restrictions:
        for name, pr in r.purposes.items():
            rules = purposes.get(name)
            if rules is None:
                continue
            if pr.disabled:
                del purposes[name]
                disabled.add(name)
                continue
            update: dict[str, Any] = {}
            if pr.retention_days is not None:
                update["retention_days"] = min(rules.retention_days, pr.retention_days)
            if pr.approvals is not None:
                update["approvals"] = max(rules.approvals, pr.approvals)
            if pr.approver_roles is not None:
                keep = pr.approver_roles
                update["approver_roles"] = [x for x in rules.approver_roles if x in keep]
            purposes[name] = rules.model_copy(update=update)
        if r.erasure_deadline_days is not None:
            deadline = min(deadline, r.erasure_deadline_days)
    return policy.model_copy(
        update={
            "purposes": purposes, "erasure_deadline_days": deadline,
            "tenant_disabled": tuple(sorted(disabled)),
        }
    )  # fmt: skip
