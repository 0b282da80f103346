"""Issuing an evidence report: compute in a read-only session, sign with no transaction open,
audit the issue in a short unit of work of its own. Shared by the API and the CLI."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from vault import audit
from vault.audit import signed_rows
from vault.authz import Actor
from vault.context import Context
from vault.reports import evidence
from vault.tags import AuditAction


def issue(
    ctx: Context,
    *,
    actor: Actor,
    tenant: str | None,
    start: datetime,
    end: datetime,
    now: datetime,
    fmt: str,
) -> tuple[dict[str, Any], dict[str, str]]:
    """(the verified-shape body, the signed report file ``{statement, signature}``)."""
    public_key = signed_rows.trusted_public_key(ctx)  # may ask the provider: before any session
    # A read-only session: on SQLite a long verification of the log does not block writers.
    with ctx.db.reading() as session:
        body = evidence.compute(
            session, actor=actor, tenant=tenant, start=start, end=end, now=now,
            public_key=public_key,
            max_key_age=timedelta(days=ctx.settings.max_key_age_days),
        )  # fmt: skip
    signed = evidence.sign(ctx.keys, body)
    with ctx.db.transaction() as session:
        tenant_id = body["scope"]["tenant"]
        audit.record(
            session, action=AuditAction.report_evidence, actor=actor.audit_name, now=now,
            tenant_id=tenant_id,
            details={"from": body["period"]["from"], "to": body["period"]["to"], "format": fmt,
                     "statement_hash": evidence.statement_sha256(signed)},
        )  # fmt: skip
    return body, signed
