"""Backups and restore: signed erasure receipts and disposal records go to the store as they
happen, and `callvault restore reconcile` re-applies them to a database restored from an older
dump (real PostgreSQL with pg_dump/pg_restore, real SeaweedFS)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from click.testing import Result
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import select
from typer.testing import CliRunner

import vault.db
from tests.support.clock import FakeClock
from tests.support.postgres import find_pg_bin, temp_database, to_libpq
from tests.support.txguard import guard
from tests.support.weed import WeedServer
from tests.vault.test_recordings import CALL_ID, actor_for, assert_chain_ok, make_tenant
from tests.vault.test_retention import audit_texts, ingest, kek_cycle, privacy, row
from vault.cli import app as cli_app
from vault.context import Context, build_context
from vault.errors import (
    GoneError,
    InvalidKeyError,
    KeyProviderUnavailableError,
    NotFoundError,
    StoreUnavailableError,
)
from vault.models import AuditEvent, ErasureRequest, Recording, RetentionRecord
from vault.recordings import metadata, playback
from vault.retention import disposal, erasure, reconcile, records
from vault.storage import BlobStore, S3BlobStore

OTHER_CALL = "call-kept-7"


def _pg(tool: str, *args: str) -> None:
    out = subprocess.run([find_pg_bin(tool), *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def _exported(ctx: Context) -> dict[str, bytes]:
    """Every exported record (latest version), by key."""
    found = {}
    for prefix in records.PREFIXES.values():
        for key, _ in ctx.store.list_versions(prefix):
            found[key] = ctx.store.read_range(key, version_id=None, offset=0, length=1 << 20)
    return found


def _cli(ctx: Context, *args: str, **extra: str) -> Result:
    """The command in process (typer's runner), with exactly ``ctx``'s settings in the env."""
    s = ctx.settings
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CALLVAULT_")}
    env.update({
        "CALLVAULT_DATABASE_URL": s.database_url,
        "CALLVAULT_BLOB_STORE": s.blob_store,
        "CALLVAULT_KEY_PROVIDER": s.key_provider,
        "CALLVAULT_S3_ENDPOINT": s.s3_endpoint,
        "CALLVAULT_S3_ACCESS_KEY": s.s3_access_key,
        "CALLVAULT_S3_SECRET_KEY": s.s3_secret_key,
        **extra,
    })  # fmt: skip
    return CliRunner().invoke(cli_app, list(args), env=env)


def _events(ctx: Context, action: str) -> list[dict[str, Any]]:
    with ctx.db.session() as s:
        rows = s.exec(select(AuditEvent.canonical).where(AuditEvent.action == action)).all()
    return [json.loads(r) for r in rows]


@pytest.fixture
def restored(pg_url: str, tmp_path: Path) -> Iterator[Callable[[Context, Path], Context]]:
    """Restore a dump into a fresh database, as a context on the same keys and bucket."""
    stack = contextlib.ExitStack()

    def restore(source: Context, dump: Path) -> Context:
        url = stack.enter_context(temp_database(pg_url))
        _pg("pg_restore", "--no-owner", "--exit-on-error", "-d", to_libpq(url), str(dump))
        settings = source.settings.model_copy(update={"database_url": url})
        ctx = build_context(settings, clock=source.clock)
        stack.callback(ctx.close)
        violations = guard(ctx)  # no store or key call inside a transaction here either
        stack.callback(lambda: not violations or pytest.fail("\n".join(violations)))
        return ctx

    yield restore
    stack.close()


def test_reconcile_reapplies_erasure_and_disposal_to_an_older_dump(
    make_ctx: Callable[..., Context],
    clock: FakeClock,
    restored: Callable[[Context, Path], Context],
    weed: WeedServer,
    tmp_path: Path,
) -> None:
    ctx = make_ctx(db="postgres", store="s3", clock=clock)
    tenant = make_tenant(ctx)
    kek_cycle(ctx, clock())
    erased = ingest(ctx, tenant)  # CALL_ID
    expired = ingest(ctx, tenant, call_id=OTHER_CALL)
    kept = ingest(ctx, tenant, call_id=OTHER_CALL)
    with ctx.db.transaction() as s:  # requested before the backup, carried out after it
        req = erasure.create_request(
            s, actor=privacy(), policy=ctx.policy, tenant=tenant.name, call_id=CALL_ID,
            reason="data subject request", now=clock(),
        )  # fmt: skip

    dump = tmp_path / "callvault.dump"
    _pg("pg_dump", "-Fc", "-f", str(dump), to_libpq(ctx.settings.database_url))

    # After the backup: the erasure completes (KEK retired) and `expired` is disposed.
    clock.advance(minutes=5)
    erasure.process(ctx, now=clock())
    kek_cycle(ctx, clock(), force=True)
    assert erasure.process(ctx, now=clock()) == 1
    with ctx.db.transaction() as s:
        metadata.end_purpose(
            s, actor=privacy(), recording_id=expired.id, purpose="troubleshooting",
            reason="no longer needed", now=clock(),
        )  # fmt: skip
    assert disposal.dispose(ctx, now=clock()).disposed == 1

    # Exported as they happened: ids and hashes, never the call id or a plaintext hash.
    exported = _exported(ctx)
    assert records.object_key(records.ERASURE, req.id) in exported
    assert sum(k.startswith(records.PREFIXES[records.DISPOSAL]) for k in exported) == 2
    for data in exported.values():
        assert CALL_ID.encode() not in data and OTHER_CALL.encode() not in data
        assert erased.sha256 is not None and erased.sha256.encode() not in data
    with ctx.db.session() as s:
        assert all(r.object_key for r in s.exec(select(RetentionRecord)))

    # The older dump brings the erased call id and both recordings back as live.
    back = restored(ctx, dump)
    assert row(back, erased.id).call_id == CALL_ID and row(back, erased.id).wrapped_dek
    assert row(back, expired.id).status == "stored"
    before = len(audit_texts(back))

    result = reconcile.reconcile(back, now=clock())
    assert result.ok and result.verified == 3
    assert (result.recordings, result.requests) == (2, 1)

    with back.db.session() as s:
        assert not s.exec(select(Recording).where(Recording.call_id == CALL_ID)).all()
        restored_req = s.get(ErasureRequest, req.id)
        assert restored_req is not None and restored_req.call_id is None
        assert restored_req.status == "complete" and restored_req.receipt_signature
    for rid in (erased.id, expired.id):
        tomb = row(back, rid)
        assert tomb.status == "disposed"
        assert tomb.wrapped_dek is None and tomb.call_id is None and tomb.sha256 is None
        with pytest.raises((GoneError, NotFoundError)):
            playback.open_read(
                back, actor=actor_for(tenant), recording_id=rid, grant_id=None,
                range_header=None, now=clock(),
            )  # fmt: skip
    assert row(back, kept.id).status == "stored" and row(back, kept.id).call_id == OTHER_CALL
    with back.db.session() as s:
        live = metadata.list_recordings(
            s, actor=privacy(), tenant=None, purpose=None, call_id=None, status="stored",
            cursor=None, limit=100, now=clock(),
        )  # fmt: skip
    assert [r.id for r in live.items] == [kept.id]

    # Audited with opaque ids only, and the chain still verifies.
    (event,) = _events(back, "restore.reconcile")
    assert event["actor"] == reconcile.RECONCILE_ACTOR
    assert f"{records.ERASURE} {req.id}" in event["details"]["records_applied"]
    shredded = {e["target"] for e in _events(back, "dek.destroy") if e["actor"] == event["actor"]}
    assert shredded == {str(erased.id), str(expired.id)}
    assert not any(CALL_ID in t or OTHER_CALL in t for t in audit_texts(back)[before:])
    assert_chain_ok(back)

    # A second run (the CLI) changes nothing.
    count = len(audit_texts(back))
    out = _cli(back, "restore", "reconcile")
    assert out.exit_code == 0, out.stderr
    assert out.stdout.strip().splitlines() == [
        "restore reconcile: 4 signed record(s) verified, 0 refused; 0 recording(s) re-erased or "
        "re-disposed, 0 erasure request(s) completed from their receipts"
    ]  # the fourth: the re-disposal of the first run, exported as it happened
    assert len(audit_texts(back)) == count

    # Trust is the pinned key (or the provider's): under another key nothing verifies; a
    # malformed pinned key is one line and exit 2.
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    out = _cli(back, "restore", "reconcile", CALLVAULT_AUDIT_PUBLIC_KEY=other)
    assert out.exit_code == 1 and "0 signed record(s) verified, 4 refused" in out.stdout
    out = _cli(back, "restore", "reconcile", CALLVAULT_AUDIT_PUBLIC_KEY="not-hex")
    assert out.exit_code == 2 and out.stdout == "" and isinstance(out.exception, SystemExit)
    assert [line for line in out.stderr.splitlines() if line.startswith("error: ")] == [
        "error: CALLVAULT_AUDIT_PUBLIC_KEY must be 64 hex digits (Ed25519)"
    ]

    # A flipped byte in an exported record, and a forged record naming a live recording:
    # both reported, neither applied, exit 1.
    assert isinstance(ctx.store, S3BlobStore)
    key = records.object_key(records.ERASURE, req.id)
    body = json.loads(exported[key])
    body["document"] = body["document"].replace('"on_time":true', '"on_time":fals3', 1)
    client = weed.client()
    client.put_object(ctx.store.bucket, key, *_stream(json.dumps(body).encode()))  # new version
    forged = next(
        doc
        for k, data in exported.items()
        if k.startswith(records.PREFIXES[records.DISPOSAL])
        and str(expired.id) in (doc := json.loads(data))["document"]
    )
    forged["document"] = forged["document"].replace(str(expired.id), str(kept.id))
    forged_key = f"{records.PREFIXES[records.DISPOSAL]}{uuid.uuid4()}.json"
    client.put_object(ctx.store.bucket, forged_key, *_stream(json.dumps(forged).encode()))
    out = _cli(back, "restore", "reconcile")
    assert out.exit_code == 1, out.stderr
    refused = [line for line in out.stderr.splitlines() if line.startswith("refused: ")]
    assert len(refused) == 2 and all("signature does not verify" in line for line in refused)
    assert "2 refused" in out.stdout and isinstance(out.exception, SystemExit)  # no traceback
    assert row(back, kept.id).status == "stored" and row(back, kept.id).wrapped_dek


def _stream(data: bytes) -> tuple[io.BytesIO, int]:
    return io.BytesIO(data), len(data)


def test_a_failed_signature_or_export_is_retried_on_the_next_run(
    make_ctx: Callable[..., Context], clock: FakeClock
) -> None:
    ctx = make_ctx(clock=clock)  # SQLite and a local directory: the rule is the same
    tenant = make_tenant(ctx)
    rec = ingest(ctx, tenant)
    with ctx.db.transaction() as s:
        metadata.end_purpose(
            s, actor=privacy(), recording_id=rec.id, purpose="troubleshooting", reason="done",
            now=clock(),
        )  # fmt: skip
    real_store, real_keys = ctx.store, ctx.keys
    ctx.store = _Down(real_store, "put_bytes", StoreUnavailableError("store down"))  # type: ignore[assignment]
    ctx.keys = _Down(real_keys, "sign", KeyProviderUnavailableError("provider down"))  # type: ignore[assignment]
    assert disposal.dispose(ctx, now=clock()).disposed == 1  # disposal itself does not wait
    with ctx.db.session() as s:
        (pending,) = s.exec(select(RetentionRecord)).all()
    assert pending.signature is None and pending.object_key is None

    ctx.keys = real_keys
    assert disposal.dispose(ctx, now=clock()).disposed == 0
    with ctx.db.session() as s:
        (pending,) = s.exec(select(RetentionRecord)).all()
    assert pending.signature and pending.object_key is None
    assert _exported(ctx) == {}

    ctx.store = real_store
    assert disposal.dispose(ctx, now=clock()).disposed == 0
    (data,) = _exported(ctx).values()
    document, signature = records.parse_export(data)
    doc = records.verify_record(
        records.DISPOSAL, ctx.keys.signing_public_key(), document, signature
    )
    assert [i["recording_id"] for i in doc["items"]] == [str(rec.id)]
    assert CALL_ID not in document


class _Down:
    """Delegates to ``inner``, except that ``method`` raises ``error``."""

    def __init__(self, inner: Any, method: str, error: Exception) -> None:
        self.inner, self.method, self.error = inner, method, error

    def __getattr__(self, name: str) -> Any:
        if name == self.method:
            raise self.error
        return getattr(self.inner, name)


def test_list_versions_lists_every_version_under_a_prefix_only(store: BlobStore) -> None:
    store.put_bytes("retention/a/1.json", b"one")
    store.put_bytes("retention/a/1.json", b"two")  # a second version on S3, an overwrite here
    store.put_bytes("retention/a/sub/2.json", b"x")
    store.put_bytes("retention/ab.json", b"not under retention/a/")
    store.put_bytes("other/3.json", b"y")
    store.delete_all_versions("other/3.json")
    found = store.list_versions("retention/a/")
    keys = [k for k, _ in found]
    if isinstance(store, S3BlobStore):
        assert keys == ["retention/a/1.json", "retention/a/1.json", "retention/a/sub/2.json"]
        assert all(v for _, v in found) and len({v for _, v in found}) == 3
    else:
        assert found == [("retention/a/1.json", None), ("retention/a/sub/2.json", None)]
    assert store.list_versions("nothing/") == [] and store.list_versions("other/") == []
    with pytest.raises(InvalidKeyError):
        store.list_versions("../")


def test_receipts_completed_before_the_upgrade_are_exported_too(
    make_ctx: Callable[..., Context], clock: FakeClock
) -> None:
    ctx = make_ctx(clock=clock)
    tenant = make_tenant(ctx)
    kek_cycle(ctx, clock())
    rec = ingest(ctx, tenant)
    with ctx.db.transaction() as s:
        req = erasure.create_request(
            s, actor=privacy(), policy=ctx.policy, recording_ids=[rec.id], reason="request",
            now=clock(),
        )  # fmt: skip
    erasure.process(ctx, now=clock())
    kek_cycle(ctx, clock(), force=True)
    assert erasure.process(ctx, now=clock()) == 1
    for key in list(_exported(ctx)):
        ctx.store.delete_all_versions(key)  # as if exports had not existed yet (local store)
    cfg = vault.db._alembic_config(ctx.db.engine)
    command.downgrade(cfg, "0010-1")  # before this revision: no retention records at all
    command.upgrade(cfg, "head")
    with ctx.db.session() as s:
        (queued,) = s.exec(select(RetentionRecord)).all()
        done = s.get(ErasureRequest, req.id)
    assert done is not None and (queued.id, queued.kind) == (req.id, records.ERASURE)
    assert (queued.document, queued.signature) == (done.receipt, done.receipt_signature)
    assert queued.object_key is None
    erasure.process(ctx, now=clock())
    assert list(_exported(ctx)) == [records.object_key(records.ERASURE, req.id)]
