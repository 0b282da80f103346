"""``create_app(settings)``: builds the context once and wires the routers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from vault import __version__, logs
from vault.access import routes as access
from vault.allocator import freeze_startup_heap, keep_freed_memory
from vault.api import audit, docs, health, openapi, problems
from vault.api.auth_cache import AuthCache
from vault.api.limits import AuthFailures, Uploads
from vault.api.metrics import Metrics
from vault.audit import flush_denials
from vault.cli_errors import settings_from_env
from vault.config import Settings
from vault.console import oversight, pages, web
from vault.console import routes as console
from vault.context import Context, build_context
from vault.disclosures import routes as disclosures
from vault.identity import routes as tenants
from vault.privacy import routes as privacy
from vault.recordings import content
from vault.recordings import routes as recordings
from vault.redaction import routes as redaction
from vault.reports import routes as reports
from vault.retention import erasure_routes as erasure
from vault.retention import holds_routes as holds
from vault.subprocessors import routes as subprocessors
from vault.tenants import routes as tenant_routes


def create_app(settings: Settings, *, ctx: Context | None = None) -> FastAPI:
    """``ctx`` lets tests (and ``serve``) hand over an already built context."""
    context = ctx or build_context(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if ctx is None:
            with contextlib.suppress(Exception):  # best effort, like serve's own shutdown
                flush_denials(context.db, context.denials, now=context.now(), force=True)
            context.close()

    app = FastAPI(
        title="callvault",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = context
    app.state.auth_failures = AuthFailures(
        settings.auth_failure_limit, timedelta(seconds=settings.auth_failure_window_seconds)
    )
    app.state.uploads = Uploads(settings.max_uploads_per_principal)
    app.state.auth_cache = AuthCache(timedelta(seconds=settings.auth_cache_seconds))
    app.state.metrics = Metrics()
    app.state.metrics.install(app)
    problems.install(app)
    openapi.install(app)
    docs.install(app)
    web.install(app)
    routers = (
        health, tenants, recordings, content, access, audit, holds, erasure, redaction,
        console, pages, oversight, privacy, tenant_routes, reports, disclosures, subprocessors,
    )  # fmt: skip
    for module in routers:
        app.include_router(module.router)
    return app


def from_env() -> FastAPI:
    """The app of one ``callvault serve --workers N`` process: its own context, built from the
    same environment as the parent's (which initialised everything and runs the scheduler)."""
    logs.configure()
    keep_freed_memory()
    app = create_app(settings_from_env())
    freeze_startup_heap()
    return app
