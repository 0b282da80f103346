"""Schemathesis over the app's own OpenAPI, authenticated as every role, on PostgreSQL (which
refuses what SQLite lets through, such as NUL in text): no input may answer 5xx, and every error
is ``application/problem+json`` with a ``type``. Bounded: a few examples per role and operation.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from vault.app import create_app
from vault.authz import Actor
from vault.context import Context
from vault.identity import principals
from vault.identity.owners import owner_of
from vault.identity.tenants import create_tenant
from vault.models import Role, SubprocessorCreate
from vault.recordings.ingest import ingest
from vault.setup import initialise
from vault.subprocessors import registry

EXAMPLES = int(os.environ.get("CALLVAULT_FUZZ_EXAMPLES", "5"))  # per role, operation, mode
PROBLEM = "application/problem+json"
# A fixed, public age X25519 recipient (no identity for it exists in the repository).
AGE_RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"


@dataclass
class Target:
    app: FastAPI
    schema: Any
    keys: dict[Role, str]


@pytest.fixture(scope="module")
def target(
    pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    from tests.support.postgres import temp_database
    from vault.config import Settings
    from vault.context import build_context
    from vault.db import migrate

    tmp = tmp_path_factory.mktemp("fuzz")
    with temp_database(pg_url) as url:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=url, blob_store=f"file:{tmp / 'data' / 'blobs'}",
            key_provider=f"local:{tmp / 'keys'}", max_ingest_bytes=100_000,
        )  # fmt: skip
        ctx = build_context(settings, create_keys=True)
        migrate(ctx.db.engine)
        initialise(ctx, now=ctx.now())
        keys = _populate(ctx)
        app = create_app(settings, ctx=ctx)
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        yield Target(app=app, schema=schema, keys=keys)
        ctx.close()


def _populate(ctx: Context) -> dict[Role, str]:
    op = Actor.operator()
    owners = {role: owner_of(ctx.keys, f"{role}@example.com") for role in Role}
    with ctx.db.transaction() as s:
        create_tenant(s, actor=op, name="acme", region=None, now=ctx.now())
        keys = {}
        sp = registry.add_subprocessor(
            s, actor=op, policy=ctx.policy, now=ctx.now(),
            body=SubprocessorCreate(name="scribe", purpose="transcription", region="eu",
                                    contract_ref="DPA-1", age_recipient=AGE_RECIPIENT),
        )  # fmt: skip
        for role in Role:
            if role is Role.subprocessor:
                _, keys[role] = registry.add_principal(
                    s, actor=op, name="fuzz-subprocessor", owner=owners[role],
                    subprocessor=sp.name, now=ctx.now(),
                )  # fmt: skip
                continue
            everywhere = role in (Role.admin, Role.auditor)
            _, keys[role] = principals.add_principal(
                s, actor=op, name=f"fuzz-{role}", role=role, owner=owners[role],
                tenants=[] if everywhere else ["acme"], all_tenants=everywhere, now=ctx.now(),
            )  # fmt: skip
    ingest(ctx, actor=op, tenant="acme", purposes=["troubleshooting"], call_id="c-1",
           recorded_at=None, content_type="video/mp4", chunks=[b"media" * 100])  # fmt: skip
    return keys


def _operations(target: Target) -> list[Any]:
    return [result.ok() for result in target.schema.get_all_operations()]


@pytest.mark.parametrize("role", list(Role), ids=str)
def test_no_input_answers_5xx_and_every_error_is_a_problem(target: Target, role: Role) -> None:
    headers = {"Authorization": f"Bearer {target.keys[role]}"}
    failures: list[str] = []
    check = _checker(headers, failures)
    for operation in _operations(target):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, check)
    assert not failures, "\n".join(failures[:20])


def _fuzz(operation: Any, mode: GenerationMode, check: Callable[[Any], None]) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        check(case)

    try:
        run()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE  # nothing to get wrong (no parameters)


def _checker(headers: dict[str, str], failures: list[str]) -> Callable[[Any], None]:
    def check(case: Any) -> None:
        response = case.call(headers={**(case.headers or {}), **headers})
        where = f"{case.method} {case.formatted_path} -> {response.status_code}"
        if response.status_code >= 500:
            failures.append(f"{where}: {response.text[:200]}")
        elif response.status_code >= 400:
            ctype = response.headers.get("content-type", "")
            ctype = ctype[0] if isinstance(ctype, list) else ctype
            body = response.json() if ctype == PROBLEM else {}
            if ctype != PROBLEM or not str(body.get("type", "")).startswith("https://"):
                failures.append(f"{where}: not problem+json ({ctype})")

    return check
