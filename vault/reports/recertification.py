"""Access recertification for the evidence report: who can reach the scope, with which role, how
old their key is and when they last acted. Principals appear by id and owner pseudonym only: a
principal's name may be an e-mail, and the owner's e-mail stays on the principal row."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault import authz
from vault.audit.chain import optional_ts
from vault.authz import Actor
from vault.identity import authentication, principals
from vault.models import AuditEvent, Principal, PrincipalTenant, Tenant


def section(
    session: Session, scope: Actor, now: datetime, max_key_age: timedelta
) -> dict[str, Any]:
    """Every principal not revoked that reaches the scope: by id and owner pseudonym only."""
    query = select(Principal).where(col(Principal.revoked_at).is_(None))
    if not scope.all_tenants:
        reaches = sa.exists().where(
            PrincipalTenant.principal_id == Principal.id,
            col(PrincipalTenant.tenant_id).in_(scope.tenant_ids),
        )
        query = query.where(sa.or_(col(Principal.all_tenants).is_(True), reaches))
    rows = session.exec(query.order_by(col(Principal.created_at), col(Principal.id))).all()
    oldest = principals.oldest_key_created(session, now=now)
    last_use = dict(
        session.exec(
            authz.visible(
                select(AuditEvent.actor, sa.func.max(AuditEvent.ts)).where(
                    col(AuditEvent.actor).in_([str(p.id) for p in rows])
                ), scope,
            ).group_by(col(AuditEvent.actor))
        ).all()
    ) if rows else {}  # fmt: skip
    tenants = dict(session.exec(select(Tenant.id, Tenant.name)).all())
    listed = []
    for p in rows:
        created = oldest.get(p.id)
        age = None if created is None else now - created
        scope_names = sorted(
            tenants.get(t, str(t)) for t in authentication.principal_tenant_ids(session, p.id)
        )
        used = last_use.get(str(p.id))
        listed.append({
            "principal_id": str(p.id), "owner_ref": p.owner_ref, "role": p.role,
            "scope": "all-tenants" if p.all_tenants else scope_names,
            "key_age_days": None if age is None else round(age.total_seconds() / 86400, 1),
            "key_past_max_age": age is not None and age > max_key_age,
            "last_use": optional_ts(used),
        })  # fmt: skip
    return {
        "max_key_age_days": round(max_key_age.total_seconds() / 86400, 1),
        "principals": listed,
        "keys_past_max_age": [x["principal_id"] for x in listed if x["key_past_max_age"]],
    }
