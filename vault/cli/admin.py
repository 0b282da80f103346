"""Operating callvault by hand: jobs, KEKs, tenants and principals."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated

import typer

from vault.authz import Actor
from vault.cli._common import context, jobs_app, keys_app, principal_app, tenant_app
from vault.cli_errors import clean_errors, fail

# --- jobs and keys --------------------------------------------------------------------------------


@jobs_app.command("run")
@clean_errors
def jobs_run(
    name: Annotated[str, typer.Argument(help="A job name, or `all` for every job in order.")],
    force: Annotated[
        bool, typer.Option("--force", help="kek-cycle: rotate now, whatever the KEK's age.")
    ] = False,
) -> None:
    """Run one job now (or `all` of them once) and print a one-line summary per job."""
    from jobs import tasks

    # The runner's log line (with a failure's traceback) is for the worker's log; here the
    # command prints its own line per job, and an error is one line (clean_errors).
    logging.getLogger(tasks.__name__).addHandler(logging.NullHandler())
    if name != "all" and name not in tasks.JOBS:
        fail(f"unknown job {name!r}; choose one of {', '.join(tasks.JOBS)} or all")
    ctx = context()
    try:
        if name != "all":
            typer.echo(f"{name}: {tasks.run(name, ctx, ctx.now(), force=force)}")
            return
        failed = 0
        for outcome in tasks.run_all(ctx, ctx.now(), force=force):
            failed += not outcome.ok
            typer.echo(f"{outcome.name}: {'' if outcome.ok else 'FAILED: '}{outcome.summary}")
    finally:
        ctx.close()
    if failed:
        raise typer.Exit(1)


@keys_app.command("rotate")
@clean_errors
def keys_rotate(
    region: Annotated[
        str | None, typer.Option(help="Another region's key provider (default: the home one).")
    ] = None,
) -> None:
    """Add a new KEK version now (the kek-cycle job then rewraps DEKs and retires old ones)."""
    from vault import kek as keys

    ctx = context()
    try:
        key = None if region in (None, ctx.home_region) else region
        ctx.keys_for(key)  # an unknown region fails here, before any provider is asked
        version = keys.rotate(ctx, now=ctx.now(), region=key)
    finally:
        ctx.close()
    where = "" if region is None else f" in region {ctx.region_name(key)}"
    typer.echo(f"KEK rotated{where}: newest version is {version}")


@keys_app.command("retire")
@clean_errors
def keys_retire() -> None:
    """Destroy the KEK versions that no live DEK uses any more."""
    from vault import kek as keys

    ctx = context()
    try:
        retired = keys.retire_unused(ctx, now=ctx.now())
    finally:
        ctx.close()
    if retired:
        typer.echo(f"KEK versions retired (destroyed): {', '.join(map(str, retired))}")
    else:
        typer.echo("no KEK version to retire")


# --- tenants and principals -----------------------------------------------------------------------


@tenant_app.command("add")
@clean_errors
def tenant_add(name: str, region: Annotated[str | None, typer.Option()] = None) -> None:
    """Register a tenant."""
    from vault.identity.tenants import create_tenant

    ctx = context()
    with ctx.db.transaction() as session:
        tenant = create_tenant(
            session, actor=Actor.operator(), name=name, region=region, now=ctx.now(),
            regions=ctx.settings.known_regions,
        )  # fmt: skip
    typer.echo(f"tenant {tenant.name} {tenant.id}")


@principal_app.command("add")
@clean_errors
def principal_add(
    name: str,
    role: Annotated[
        str,
        typer.Option(
            help="admin|ingest|engineer|approver|security|privacy|auditor|monitor|subprocessor"
        ),
    ],
    owner: Annotated[str, typer.Option(help="The person or service behind the key (email).")],
    tenant: Annotated[
        list[str] | None, typer.Option("--tenant", help="Tenant in scope (repeat).")
    ] = None,
    all_tenants: Annotated[
        bool, typer.Option("--all-tenants", help="Scope over every tenant.")
    ] = False,
    expires_days: Annotated[float | None, typer.Option(help="Key lifetime in days.")] = None,
    region: Annotated[
        str | None,
        typer.Option(help="The region it reads from (default: the home region)."),
    ] = None,
    subprocessor: Annotated[
        str | None,
        typer.Option(help="--role subprocessor: the registry entry it is bound to (no scope)."),
    ] = None,
) -> None:
    """Create a principal and print its API key (alone on the last line)."""
    from vault.identity import principals
    from vault.identity.owners import owner_of
    from vault.subprocessors import registry

    if subprocessor is not None and (role != "subprocessor" or tenant or all_tenants):
        fail("--subprocessor goes with --role subprocessor, and without a tenant scope")
    ctx = context()
    now = ctx.now()
    expires_at = now + timedelta(days=expires_days) if expires_days else None
    owner_id = owner_of(ctx.keys, owner)  # the provider call, before the transaction
    with ctx.db.transaction() as session:
        if subprocessor is not None:
            principal, key = registry.add_principal(
                session, actor=Actor.operator(), name=name, owner=owner_id,
                subprocessor=subprocessor, now=now, expires_at=expires_at, rng=ctx.rng,
            )  # fmt: skip
        else:  # add_principal refuses a subprocessor role without its entry, and vice versa
            principal, key = principals.add_principal(
                session, actor=Actor.operator(), name=name, role=role, owner=owner_id,
                tenants=tenant or [], all_tenants=all_tenants, now=now, expires_at=expires_at,
                rng=ctx.rng, region=region, regions=ctx.settings.region_names,
            )  # fmt: skip
    typer.echo(f"principal {principal.name} ({principal.role}) {principal.id}")
    typer.echo(key)


@principal_app.command("revoke")
@clean_errors
def principal_revoke(name: str) -> None:
    """Revoke a principal and all its keys."""
    from vault.identity import principals

    ctx = context()
    with ctx.db.transaction() as session:
        principals.revoke_principal(session, actor=Actor.operator(), name=name, now=ctx.now())
    typer.echo(f"principal {name} revoked")


@principal_app.command("set-role")
@clean_errors
def principal_set_role(name: str, role: Annotated[str, typer.Option()]) -> None:
    """Change a principal's role."""
    from vault.identity import principals

    ctx = context()
    with ctx.db.transaction() as session:
        principals.set_role(session, actor=Actor.operator(), name=name, role=role, now=ctx.now())
    typer.echo(f"principal {name} now has role {role}")


@principal_app.command("clear-owner")
@clean_errors
def principal_clear_owner(name: str) -> None:
    """Forget the e-mail behind a principal; four-eyes and the audit chain keep its pseudonym."""
    from vault.identity import principals

    ctx = context()
    with ctx.db.transaction() as session:
        principals.clear_owner(session, actor=Actor.operator(), name=name, now=ctx.now())
    typer.echo(f"principal {name}: owner e-mail cleared")


@principal_app.command("rotate-key")
@clean_errors
def principal_rotate_key(
    name: str,
    expires_days: Annotated[float | None, typer.Option(help="New key's lifetime in days.")] = None,
) -> None:
    """Issue a new API key and revoke every old one at once (no overlap); prints the key alone
    on the last line. The key's age (CALLVAULT_MAX_KEY_AGE_DAYS) starts again now."""
    from vault.identity import principals

    ctx = context()
    now = ctx.now()
    expires_at = now + timedelta(days=expires_days) if expires_days else None
    with ctx.db.transaction() as session:
        key = principals.rotate_key(
            session, actor=Actor.operator(), name=name, now=now, expires_at=expires_at,
            rng=ctx.rng,
        )  # fmt: skip
    typer.echo(f"principal {name}: new API key issued, old keys revoked")
    typer.echo(key)
