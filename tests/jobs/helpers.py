"""Helpers for the worker, job and KEK-lifecycle tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from crypto import streaming
from vault import audit
from vault.authz import Actor
from vault.config import Settings
from vault.context import Context
from vault.identity.tenants import create_tenant
from vault.models import AuditEvent, Recording, Tenant
from vault.recordings.ingest import ingest as ingest_recording

# --- helpers ------------------------------------------------------------------------------------


def make_tenant(ctx: Context, name: str = "acme") -> Tenant:
    with ctx.db.transaction() as s:
        return create_tenant(
            s, actor=Actor.operator(), name=name, region=None, now=ctx.now()
        )


def ingest(
    ctx: Context, tenant: Tenant, data: bytes, purposes: tuple[str, ...] = ("troubleshooting",)
) -> Recording:
    return ingest_recording(
        ctx, actor=Actor.operator(), tenant=tenant.name, purposes=list(purposes),
        call_id=f"call-{uuid.uuid4().hex[:8]}", recorded_at=None,
        content_type="application/octet-stream", chunks=[data],
    )  # fmt: skip


def row(ctx: Context, rid: uuid.UUID) -> Recording:
    with ctx.db.session() as s:
        rec = s.get(Recording, rid)
        assert rec is not None
        return rec


def events(ctx: Context, action: str, target: str | None = None) -> list[AuditEvent]:
    query = select(AuditEvent).where(AuditEvent.action == action)
    if target is not None:
        query = query.where(AuditEvent.target == target)
    with ctx.db.session() as s:
        return list(s.exec(query.order_by(col(AuditEvent.seq))).all())


def event_documents(ctx: Context, action: str) -> list[dict[str, Any]]:
    """The canonical documents of ``action``'s events, oldest first."""
    return [json.loads(e.canonical) for e in events(ctx, action)]


def assert_chain_ok(ctx: Context) -> None:
    with ctx.db.session() as s:
        result = audit.verify(s)
    assert result.ok, result


def object_bytes(ctx: Context, rec: Recording) -> bytes:
    size = ctx.store.size(rec.object_key, version_id=rec.version_id)
    return ctx.store.read_range(rec.object_key, version_id=rec.version_id, offset=0, length=size)


def decrypt(ctx: Context, rec: Recording, wrapped_dek: str | None = None) -> bytes:
    """The plaintext, decrypted with the row's wrapped DEK (or the given copy of one)."""
    text = wrapped_dek or rec.wrapped_dek
    assert text is not None and rec.ciphertext_size is not None and rec.size is not None
    dek = ctx.keys.unwrap_dek(text, tenant_id=rec.tenant_id, recording_id=rec.id)

    def read_at(offset: int, length: int) -> bytes:
        return ctx.store.read_range(
            rec.object_key, version_id=rec.version_id, offset=offset, length=length
        )

    return b"".join(
        streaming.decrypt_range(
            read_at, dek=dek, recording_id=rec.id, ciphertext_size=rec.ciphertext_size,
            start=0, end=rec.size,
        )
    )  # fmt: skip


def set_columns(ctx: Context, rid: uuid.UUID, **values: Any) -> None:
    with ctx.db.transaction() as s:
        s.exec(sa.update(Recording).where(col(Recording.id) == rid).values(**values))


# --- subprocesses ---------------------------------------------------------------------------------


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The process environment for a ``callvault`` subprocess on the same DB, store and keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLVAULT_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        text = str(value).lower() if isinstance(value, bool) else str(value)
        env[f"CALLVAULT_{name.upper()}"] = text
    env.update(extra)
    return env


def callvault() -> list[str]:
    exe = Path(sys.executable).with_name("callvault")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "vault.cli"]


def start_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*callvault(), *args], env=env, cwd=cwd, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def run_cli(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*callvault(), *args], env=env, cwd=cwd, text=True, capture_output=True,
        timeout=timeout, check=False,
    )  # fmt: skip
