"""Staff e-mails: a revoked principal's owner e-mail is cleared by the clear-revoked-owners job
once the retention period has passed; the pseudonym stays. Both databases."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from jobs import tasks
from tests.vault.privacy.conftest import Vault
from vault.authz import Actor
from vault.identity import principals
from vault.models import Principal


def _row(v: Vault, name: str) -> Principal:
    with v.ctx.db.session() as s:
        row = s.exec(select(Principal).where(Principal.name == name)).one()
        s.expunge(row)
        return row


def _revoke(v: Vault, name: str, days_ago: float) -> None:
    with v.ctx.db.transaction() as s:
        principals.revoke_principal(
            s, actor=Actor.operator(), name=name, now=v.clock() - timedelta(days=days_ago)
        )


def test_only_revoked_principals_past_the_period_lose_their_email(vault: Vault) -> None:
    assert vault.ctx.settings.revoked_owner_retention_days == 90  # the default
    before = {n: _row(vault, n) for n in ("eng", "approver", "security")}
    assert all(p.owner for p in before.values())
    _revoke(vault, "eng", days_ago=91)  # past the period
    _revoke(vault, "approver", days_ago=89)  # not yet
    # "security" stays active, its e-mail too

    summary = tasks.run("clear-revoked-owners", vault.ctx, vault.clock())
    assert summary.startswith("1 ")
    after = {n: _row(vault, n) for n in before}
    assert after["eng"].owner is None
    assert after["approver"].owner == before["approver"].owner
    assert after["security"].owner == before["security"].owner
    # The pseudonym stays: four-eyes and the audit chain keep working.
    assert all(after[n].owner_ref == before[n].owner_ref for n in before)
    (event,) = vault.events("principal.clear_owner")
    assert event["actor"] == "system:clear-revoked-owners"
    assert event["target"] == str(before["eng"].id)
    assert event["details"]["owner_ref"] == before["eng"].owner_ref
    assert "@" not in vault.audit_text()  # no e-mail anywhere in the chain

    # Idempotent: a second run clears nothing and writes nothing.
    assert tasks.run("clear-revoked-owners", vault.ctx, vault.clock()).startswith("0 ")
    assert len(vault.events("principal.clear_owner")) == 1
    # Two days later the other one is due.
    vault.clock.advance(days=2)
    assert tasks.run("clear-revoked-owners", vault.ctx, vault.clock()).startswith("1 ")
    assert _row(vault, "approver").owner is None
