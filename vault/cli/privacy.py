"""``callvault subject-access``: the privacy office's answer about some calls, as JSON."""

from __future__ import annotations

import json
import uuid

import typer

from vault.authz import Actor
from vault.cli._common import app, context
from vault.cli_errors import clean_errors


@app.command("subject-access")
@clean_errors
def subject_access(
    tenant: str = typer.Option(..., "--tenant", help="The tenant the calls belong to."),
    call_id: list[str] = typer.Option(..., "--call-id", help="A call id; repeat for several."),
) -> None:
    """Print what the vault holds about these calls (JSON; audited without the call ids)."""
    from vault.privacy.subject_access import subject_access as answer

    ctx = context()
    with ctx.db.transaction() as session:
        doc = answer(
            session, actor=Actor.operator(), tenant=tenant, call_ids=call_id,
            request_id=uuid.uuid4(), now=ctx.now(),
        )  # fmt: skip
    typer.echo(json.dumps(doc, indent=2, sort_keys=True))
