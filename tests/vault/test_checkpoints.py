"""Signed audit checkpoints on SQLite+local and PostgreSQL+SeaweedFS: signing, export under
Object Lock, idempotence, and the tampering that only checkpoints can catch (truncated tails,
chains rewritten with consistent hashes, forged signatures and a swapped published key)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi.testclient import TestClient
from sqlmodel import func, select
from typer.testing import CliRunner

from crypto.keys.transit import TransitKeyProvider
from tests.conftest import Bao
from tests.support.clock import FakeClock
from vault import audit
from vault.app import create_app
from vault.audit import checkpoints, signing
from vault.authz import Actor
from vault.cli import app as cli_app
from vault.config import ConfigError
from vault.context import Context
from vault.errors import BlobLockedError, IntegrityError, StoreUnavailableError
from vault.identity import principals
from vault.identity.owners import owner_of
from vault.models import AuditCheckpoint, AuditEvent
from vault.setup import initialise
from vault.tags import AuditAction

# --- helpers -------------------------------------------------------------------------------------


def append(ctx: Context, n: int) -> None:
    clock = ctx.clock
    for i in range(n):
        if isinstance(clock, FakeClock):
            clock.advance(seconds=1)
        with ctx.db.transaction() as s:
            audit.record(
                s,
                action=AuditAction.recording_read,
                actor=f"principal-{i % 3}",
                now=ctx.now(),
                tenant_id=uuid.uuid4(),
                target=str(uuid.uuid4()),
                purpose="troubleshooting",
                details={"i": i},
            )


def checkpoint(ctx: Context) -> AuditCheckpoint:
    cp = checkpoints.write_checkpoint(ctx, now=ctx.now())
    assert cp is not None
    return cp


def verify(ctx: Context, key: bytes | None = None) -> checkpoints.CheckpointVerifyResult:
    public_key = checkpoints.trusted_public_key(ctx) if key is None else key
    with ctx.db.session() as s:
        return checkpoints.verify_all(s, public_key=public_key)


def tamper(ctx: Context, *statements: str | tuple[str, dict[str, Any]]) -> None:
    """SQL as an attacker with DB superuser powers: the append-only triggers are bypassed
    (replica mode on PostgreSQL for this transaction only; dropped triggers on SQLite)."""
    with ctx.db.engine.begin() as conn:
        if ctx.db.is_postgres:
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        else:
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_event_no_update")
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_event_no_delete")
        for stmt in statements:
            sql, params = (stmt, {}) if isinstance(stmt, str) else stmt
            conn.execute(sa.text(sql), params)


def rewrite_from(ctx: Context, k: int) -> None:
    """Edit event ``k`` and recompute every later canonical text, prev_hash and hash, so the
    rewritten chain is internally consistent: the chain check alone passes."""
    with ctx.db.session() as s:
        rows = s.exec(select(AuditEvent).where(AuditEvent.seq >= k).order_by(AuditEvent.seq)).all()
        prev = s.exec(select(AuditEvent.hash).where(AuditEvent.seq == k - 1)).first()
    prev_hash = prev or audit.GENESIS_HASH
    updates: list[tuple[str, dict[str, Any]]] = []
    for row in rows:
        event = json.loads(row.canonical)
        if row.seq == k:
            event["actor"] = "mallory"
        event["prev_hash"] = prev_hash
        canonical = audit.canonical_json(event)
        digest = audit.hash_canonical(canonical)
        updates.append(
            (
                "UPDATE audit_event SET actor = :a, canonical = :c, hash = :h, prev_hash = :p "
                "WHERE seq = :s",
                {"a": event["actor"], "c": canonical, "h": digest, "p": prev_hash, "s": row.seq},
            )
        )
        prev_hash = digest
    tamper(ctx, *updates)


def raw_public(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def read_object(ctx: Context, key: str, version_id: str | None = None) -> bytes:
    return ctx.store.read_range(key, version_id=version_id, offset=0, length=1 << 20)


def count_checkpoints(ctx: Context) -> int:
    with ctx.db.session() as s:
        return int(s.exec(select(func.count()).select_from(AuditCheckpoint)).one())


# --- writing and exporting -----------------------------------------------------------------------


def test_checkpoint_is_signed_exported_and_verifies(ctx: Context) -> None:
    append(ctx, 5)
    cp = checkpoint(ctx)
    assert cp.head_seq == 6  # its own audit.checkpoint event is the head it signs
    with ctx.db.session() as s:
        event = audit.list_events(s, after_seq=5, limit=1)[0]
    assert event.action == AuditAction.audit_checkpoint and cp.head_hash == event.hash

    # The exact signed bytes, written out by hand rather than by the serializer under test:
    # sorted keys, no spaces, and the document type and version inside what is signed.
    assert len(event.hash) == 64 and set(event.hash) <= set("0123456789abcdef")
    assert cp.statement == (
        '{"chain_id":"global","head_hash":"' + event.hash + '","head_seq":6,'
        '"prev_checkpoint":null,"ts":"2026-11-25T12:00:05.000000Z",'
        '"type":"callvault.audit-checkpoint","version":2}'
    )
    public = ctx.keys.signing_public_key()
    assert cp.public_key == public.hex()
    Ed25519PublicKey.from_public_bytes(public).verify(
        bytes.fromhex(cp.signature), cp.statement.encode()
    )

    # The export holds the exact signed bytes; the public key is published beside it.
    assert cp.object_key == "audit/checkpoints/global/00000000000000000006.json"
    doc = json.loads(read_object(ctx, cp.object_key, cp.version_id))
    assert doc == {"statement": cp.statement, "signature": cp.signature, "public_key": public.hex()}
    published = json.loads(read_object(ctx, checkpoints.PUBLIC_KEY_OBJECT))
    assert published == {"algorithm": "ed25519", "public_key": public.hex()}
    with ctx.db.session() as s:
        row = s.get(AuditCheckpoint, cp.id)
        assert row is not None and (row.object_key, row.version_id) == (
            cp.object_key,
            cp.version_id,
        )

    result = verify(ctx)
    assert result.ok and result.checkpoints_checked == 1 and result.latest_checkpoint_seq == 6


def test_export_is_under_compliance_retention_on_s3(make_ctx: Callable[..., Context]) -> None:
    # Not the ``ctx`` fixture: a skip on the local store would count as a failure in CI.
    ctx = make_ctx(db="postgres", store="s3", clock=FakeClock())
    assert ctx.store.supports_object_lock()
    append(ctx, 2)
    cp = checkpoint(ctx)
    assert cp.object_key and cp.version_id
    client, bucket = ctx.store.client, ctx.store.bucket  # type: ignore[attr-defined]
    retention = client.get_object_retention(bucket, cp.object_key, version_id=cp.version_id)
    assert retention.mode == "COMPLIANCE"
    assert retention.retain_until_date > ctx.now() + timedelta(days=3000)
    with pytest.raises(BlobLockedError):
        ctx.store.delete_all_versions(cp.object_key)
    assert ctx.store.exists(cp.object_key, version_id=cp.version_id)


def test_idempotent_for_the_same_head_and_linked(ctx: Context) -> None:
    append(ctx, 3)
    first = checkpoint(ctx)
    assert checkpoints.write_checkpoint(ctx, now=ctx.now()) is None
    assert checkpoints.write_checkpoint(ctx, now=ctx.now()) is None
    assert count_checkpoints(ctx) == 1
    with ctx.db.session() as s:
        assert audit.head(s)[0] == first.head_seq  # no event appended by the no-op runs
    append(ctx, 1)
    second = checkpoint(ctx)
    assert second.head_seq == first.head_seq + 2
    assert json.loads(second.statement)["prev_checkpoint"] == {
        "seq": first.head_seq,
        "hash": hashlib.sha256(first.statement.encode()).hexdigest(),
    }
    assert verify(ctx).ok


def test_failed_export_is_retried_next_run(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    append(ctx, 2)

    def down(*_: Any, **__: Any) -> None:
        raise StoreUnavailableError("store down")

    with monkeypatch.context() as m:
        m.setattr(ctx.store, "put_bytes", down)
        cp = checkpoint(ctx)
    assert cp.object_key is None and count_checkpoints(ctx) == 1
    assert verify(ctx).ok  # the DB checkpoint stands on its own
    assert checkpoints.write_checkpoint(ctx, now=ctx.now()) is None  # same head: only exports
    with ctx.db.session() as s:
        row = s.get(AuditCheckpoint, cp.id)
    assert row is not None and row.object_key == checkpoints.export_key("global", cp.head_seq)
    assert json.loads(read_object(ctx, row.object_key, row.version_id))["statement"] == cp.statement


def test_list_checkpoints(ctx: Context) -> None:
    ids = []
    for _ in range(3):
        append(ctx, 1)
        ids.append(checkpoint(ctx).id)
    with ctx.db.session() as s:
        page = checkpoints.list_checkpoints(s, limit=2)
        assert [c.id for c in page] == ids[:2] and page[0].object_key
        assert [c.id for c in checkpoints.list_checkpoints(s, after_id=ids[1])] == ids[2:]


def test_concurrent_writers_make_one_checkpoint(ctx: Context) -> None:
    append(ctx, 3)
    barrier = threading.Barrier(4)
    results: list[AuditCheckpoint | None] = []

    def run() -> None:
        barrier.wait()
        results.append(checkpoints.write_checkpoint(ctx, now=ctx.now()))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 1 and count_checkpoints(ctx) == 1
    assert verify(ctx).ok


def test_verify_pages_through_many_checkpoints(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoints, "VERIFY_BATCH", 2)
    cps = []
    for _ in range(5):
        append(ctx, 1)
        cps.append(checkpoint(ctx))
    result = verify(ctx)
    assert result.ok and result.checkpoints_checked == 5
    assert result.latest_checkpoint_seq == cps[-1].head_seq
    tamper(ctx, ("DELETE FROM audit_checkpoint WHERE id = :i", {"i": cps[2].id}))
    result = verify(ctx)
    assert not result.ok and result.first_bad_seq == cps[2].head_seq


# --- tampering -----------------------------------------------------------------------------------


def test_altered_event_row_is_caught(ctx: Context) -> None:
    append(ctx, 10)
    checkpoint(ctx)
    tamper(ctx, "UPDATE audit_event SET actor = 'mallory' WHERE seq = 4")
    result = verify(ctx)
    assert not result.ok and result.first_bad_seq == 4 and "actor" in (result.reason or "")


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("UPDATE audit_checkpoint SET head_hash = :h", "columns differ"),
        ("UPDATE audit_checkpoint SET statement = replace(statement, '\"ts\":\"2', '\"ts\":\"3')",
         "signature"),
        ("UPDATE audit_checkpoint SET signature = :s", "signature"),
    ],
)  # fmt: skip
def test_altered_checkpoint_row_is_caught(ctx: Context, sql: str, reason: str) -> None:
    append(ctx, 4)
    cp = checkpoint(ctx)
    tamper(ctx, (sql, {"h": "ab" * 32, "s": "cd" * 64}))
    result = verify(ctx)
    assert not result.ok and result.first_bad_seq == cp.head_seq
    assert result.checkpoint_id == cp.id and reason in (result.reason or "")


@pytest.mark.parametrize("keep", [7, 10])
def test_events_deleted_after_a_checkpoint_are_caught(ctx: Context, keep: int) -> None:
    append(ctx, 10)
    cp = checkpoint(ctx)  # seq 11
    tamper(ctx, ("DELETE FROM audit_event WHERE seq > :k", {"k": keep}))
    with ctx.db.session() as s:
        assert audit.verify(s).ok  # the chain alone cannot see a cut tail
    result = verify(ctx)
    assert not result.ok and result.first_bad_seq == keep + 1
    assert result.checkpoint_id == cp.id and "deleted" in (result.reason or "")


def test_deleted_checkpoint_rows_are_caught(ctx: Context) -> None:
    append(ctx, 3)
    first = checkpoint(ctx)
    append(ctx, 3)
    second = checkpoint(ctx)
    tamper(ctx, ("DELETE FROM audit_checkpoint WHERE id = :i", {"i": second.id}))
    result = verify(ctx)
    assert not result.ok and result.first_bad_seq == second.head_seq
    assert "deleted" in (result.reason or "")
    # With the first one gone as well, the earliest deleted checkpoint is named.
    tamper(ctx, ("DELETE FROM audit_checkpoint WHERE id = :i", {"i": first.id}))
    assert verify(ctx).first_bad_seq == first.head_seq


@pytest.mark.parametrize(("k", "expected"), [(3, 0), (15, 1), (11, 0)])
def test_chain_rewritten_with_consistent_hashes_is_caught(
    ctx: Context, k: int, expected: int
) -> None:
    append(ctx, 10)
    cps = [checkpoint(ctx)]  # seq 11
    append(ctx, 10)
    cps.append(checkpoint(ctx))  # seq 22
    append(ctx, 3)
    rewrite_from(ctx, k)
    with ctx.db.session() as s:
        chain = audit.verify(s)
        assert chain.ok and chain.head_seq == 25  # internally consistent
    result = verify(ctx)
    bad = cps[expected]
    good = 0 if expected == 0 else cps[expected - 1].head_seq
    assert not result.ok
    assert (result.first_bad_seq, result.checkpoint_id) == (bad.head_seq, bad.id)
    assert f"rewritten after seq {good}" in (result.reason or "")
    # The signer refuses to extend a chain that contradicts its last signature.
    with pytest.raises(IntegrityError):
        checkpoints.write_checkpoint(ctx, now=ctx.now())


def test_forged_checkpoint_signed_by_another_key_is_rejected(ctx: Context) -> None:
    append(ctx, 5)
    genuine = checkpoint(ctx)
    append(ctx, 2)
    attacker = Ed25519PrivateKey.generate()
    with ctx.db.session() as s:
        head_seq, head_hash = audit.head(s)
    statement = audit.canonical_json(
        {"chain_id": "global", "head_seq": head_seq, "head_hash": head_hash,
         "ts": audit.format_ts(ctx.now()), "format": "callvault-checkpoint/1",
         "prev_checkpoint": {"seq": genuine.head_seq,
                             "hash": checkpoints.statement_hash(genuine.statement)}}
    )  # fmt: skip
    with ctx.db.transaction() as s:
        forged = AuditCheckpoint(
            chain_id="global", head_seq=head_seq, head_hash=head_hash, created_at=ctx.now(),
            public_key=raw_public(attacker).hex(), statement=statement,
            signature=attacker.sign(statement.encode()).hex(),
        )  # fmt: skip
        s.add(forged)
        s.flush()
        forged_id = forged.id
    result = verify(ctx)
    assert not result.ok and result.checkpoint_id == forged_id
    assert result.first_bad_seq == head_seq and "signature" in (result.reason or "")


def test_verify_ignores_the_published_key_and_the_exports(ctx: Context) -> None:
    """Rewrite the chain, re-sign every checkpoint with an attacker key, replace the exports
    and the published public key: a perfect forgery except for the trust anchor."""
    append(ctx, 5)
    cps = [checkpoint(ctx)]
    append(ctx, 5)
    cps.append(checkpoint(ctx))
    rewrite_from(ctx, 2)
    attacker = Ed25519PrivateKey.generate()
    attacker_hex = raw_public(attacker).hex()
    prev: dict[str, Any] | None = None
    with ctx.db.session() as s:
        hashes = {cp.id: audit.list_events(s, after_seq=cp.head_seq - 1)[0].hash for cp in cps}
    for cp in cps:
        stmt = {**json.loads(cp.statement), "head_hash": hashes[cp.id], "prev_checkpoint": prev}
        text = audit.canonical_json(stmt)
        sig = attacker.sign(text.encode()).hex()
        tamper(
            ctx,
            ("UPDATE audit_checkpoint SET statement = :t, signature = :g, public_key = :k, "
             "head_hash = :h WHERE id = :i",
             {"t": text, "g": sig, "k": attacker_hex, "h": hashes[cp.id], "i": cp.id}),
        )  # fmt: skip
        doc = {"statement": text, "signature": sig, "public_key": attacker_hex}
        assert cp.object_key is not None
        ctx.store.put_bytes(cp.object_key, json.dumps(doc).encode())
        prev = {"seq": cp.head_seq, "hash": checkpoints.statement_hash(text)}
    ctx.store.put_bytes(
        checkpoints.PUBLIC_KEY_OBJECT,
        json.dumps({"algorithm": "ed25519", "public_key": attacker_hex}).encode(),
    )
    assert verify(ctx, raw_public(attacker)).ok  # under the attacker's key it all holds...
    trusted = checkpoints.trusted_public_key(ctx)
    assert trusted == ctx.keys.signing_public_key() != raw_public(attacker)
    result = verify(ctx)  # ...but that key is never the trusted one
    assert not result.ok and result.checkpoint_id == cps[0].id
    assert "signature" in (result.reason or "")


def test_pinned_key_overrides_the_provider(ctx: Context) -> None:
    append(ctx, 3)
    checkpoint(ctx)
    provider_key = ctx.keys.signing_public_key()

    def pinned(value: str) -> Context:
        settings = ctx.settings.model_copy(update={"audit_public_key": value})
        return dataclasses.replace(ctx, settings=settings)

    other = raw_public(Ed25519PrivateKey.generate())
    assert checkpoints.trusted_public_key(pinned(other.hex())) == other
    result = verify(pinned(other.hex()))
    assert not result.ok and "signature" in (result.reason or "")
    assert verify(pinned(provider_key.hex().upper())).ok
    with pytest.raises(ConfigError):
        checkpoints.trusted_public_key(pinned("abcd"))


# --- document type and version; statements from before they existed -----------------------------


def legacy_checkpoint(ctx: Context, prev: AuditCheckpoint | None) -> AuditCheckpoint:
    """A checkpoint as written before signed documents carried a type: ``"format"`` instead of
    type/version. Its statement is written out by hand and signed with the provider's key."""
    public_key = ctx.keys.signing_public_key().hex()
    with ctx.db.transaction() as s:
        audit.acquire_append_lock(s)
        event = audit.record(
            s, action=AuditAction.audit_checkpoint, actor=checkpoints.ACTOR, now=ctx.now(),
            details={"public_key": public_key,
                     "prev_checkpoint_seq": None if prev is None else prev.head_seq},
        )  # fmt: skip
        head_seq, head_hash = event.seq, event.hash
    link = "null"
    if prev is not None:
        prev_hash = hashlib.sha256(prev.statement.encode()).hexdigest()
        link = '{"hash":"' + prev_hash + '","seq":' + str(prev.head_seq) + "}"
    statement = (
        '{"chain_id":"global","format":"callvault-checkpoint/1","head_hash":"' + head_hash
        + '","head_seq":' + str(head_seq) + ',"prev_checkpoint":' + link
        + ',"ts":"' + audit.format_ts(ctx.now()) + '"}'
    )  # fmt: skip
    signature = ctx.keys.sign(statement.encode()).hex()  # no key call inside a transaction
    with ctx.db.transaction() as s:
        row = AuditCheckpoint(
            chain_id="global", head_seq=head_seq, head_hash=head_hash, created_at=ctx.now(),
            public_key=public_key, statement=statement, signature=signature,
        )  # fmt: skip
        s.add(row)
        s.flush()
        s.expunge(row)
    return row


def resign(ctx: Context, cp: AuditCheckpoint, old: str, new: str) -> None:
    """Edit the statement text and sign the result with the *trusted* key: only the document's
    own checks can refuse it."""
    assert old in cp.statement
    text = cp.statement.replace(old, new)
    signature = ctx.keys.sign(text.encode()).hex()
    tamper(ctx, ("UPDATE audit_checkpoint SET statement = :t, signature = :g WHERE id = :i",
                 {"t": text, "g": signature, "i": cp.id}))  # fmt: skip


def test_checkpoints_written_in_the_v1_format_still_verify(ctx: Context) -> None:
    append(ctx, 3)
    first = legacy_checkpoint(ctx, None)
    append(ctx, 2)
    second = legacy_checkpoint(ctx, first)
    assert '"format":"callvault-checkpoint/1"' in second.statement
    assert '"type"' not in second.statement and '"version"' not in second.statement
    result = verify(ctx)
    assert result.ok, result.reason
    assert result.checkpoints_checked == 2 and result.latest_checkpoint_seq == second.head_seq

    # After the upgrade new checkpoints are v2 and link to the last v1 one.
    append(ctx, 2)
    third = checkpoint(ctx)
    assert '"type":"callvault.audit-checkpoint","version":2}' in third.statement
    assert json.loads(third.statement)["prev_checkpoint"] == {
        "seq": second.head_seq, "hash": hashlib.sha256(second.statement.encode()).hexdigest(),
    }  # fmt: skip
    result = verify(ctx)
    assert result.ok and result.checkpoints_checked == 3

    # A v1 statement still does its job: a rewrite it covers is caught at it.
    rewrite_from(ctx, 2)
    result = verify(ctx)
    assert not result.ok and result.checkpoint_id == first.id
    assert "rewritten after seq 0" in (result.reason or "")


def test_a_v1_statement_in_another_shape_is_rejected(ctx: Context) -> None:
    append(ctx, 3)
    cp = legacy_checkpoint(ctx, None)
    resign(ctx, cp, "callvault-checkpoint/1", "callvault-checkpoint/2")
    result = verify(ctx)
    assert not result.ok and result.checkpoint_id == cp.id
    assert "type is missing" in (result.reason or "")


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ('"type":"callvault.audit-checkpoint"', '"type":"callvault.erasure-receipt"',
         "type is 'callvault.erasure-receipt', expected 'callvault.audit-checkpoint'"),
        ('"type":"callvault.audit-checkpoint"', '"type":"callvault.audit-checkpoint/v2"',
         "type is 'callvault.audit-checkpoint/v2'"),
        ('"type":"callvault.audit-checkpoint",', "", "type is missing"),
        ('"version":2', '"version":3', "version 3 is not one of the accepted versions (1, 2)"),
        ('"version":2', '"version":1', "version 1 exists only in its legacy form"),
        ('"head_hash"', '"format":"callvault-checkpoint/1","head_hash"',
         "does not have the checkpoint fields"),
        ('"head_seq":', '"head_seq": ', "not canonical JSON"),
    ],
)  # fmt: skip
def test_a_v2_statement_with_another_type_or_version_is_rejected(
    ctx: Context, old: str, new: str, reason: str
) -> None:
    append(ctx, 3)
    cp = checkpoint(ctx)
    assert verify(ctx).ok
    resign(ctx, cp, old, new)
    result = verify(ctx)
    assert not result.ok and (result.first_bad_seq, result.checkpoint_id) == (cp.head_seq, cp.id)
    assert reason in (result.reason or "")


def test_a_changed_type_without_the_key_fails_the_signature(ctx: Context) -> None:
    append(ctx, 3)
    cp = checkpoint(ctx)
    tamper(ctx, ("UPDATE audit_checkpoint SET statement = replace(statement, "
                 "'callvault.audit-checkpoint', 'callvault.audit-report') WHERE id = :i",
                 {"i": cp.id}))  # fmt: skip
    result = verify(ctx)
    assert not result.ok and result.checkpoint_id == cp.id
    assert "signature does not verify" in (result.reason or "")


def test_an_erasure_receipt_signed_with_the_audit_key_is_no_checkpoint(ctx: Context) -> None:
    """Same key, same fields, another document type: refused by the checkpoint verifier."""
    append(ctx, 3)
    cp = checkpoint(ctx)
    body = {k: v for k, v in json.loads(cp.statement).items() if k not in ("type", "version")}
    receipt = signing.sign_document(
        ctx.keys, doc_type=signing.ERASURE_RECEIPT, version=1, body=body
    )
    tamper(ctx, ("UPDATE audit_checkpoint SET statement = :t, signature = :g WHERE id = :i",
                 {"t": receipt.canonical, "g": receipt.signature, "i": cp.id}))  # fmt: skip
    result = verify(ctx)
    assert not result.ok and result.checkpoint_id == cp.id
    assert result.reason == (
        "type is 'callvault.erasure-receipt', expected 'callvault.audit-checkpoint'"
    )


# --- Transit, CLI and API ------------------------------------------------------------------------


def test_transit_ed25519_key_signs_checkpoints(make_ctx: Callable[..., Context], bao: Bao) -> None:
    ctx = make_ctx(clock=FakeClock())
    local_key = ctx.keys.signing_public_key()
    ctx.keys = TransitKeyProvider(bao.url, bao.token, key_prefix=f"cp_{secrets.token_hex(4)}")
    append(ctx, 4)
    cp = checkpoint(ctx)
    public = ctx.keys.signing_public_key()
    assert cp.public_key == public.hex() and public != local_key
    Ed25519PublicKey.from_public_bytes(public).verify(
        bytes.fromhex(cp.signature), cp.statement.encode()
    )
    assert checkpoints.trusted_public_key(ctx) == public
    assert verify(ctx).ok
    assert not verify(ctx, local_key).ok


def test_cli_audit_checkpoint_and_verify_exit_codes(
    make_ctx: Callable[..., Context], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_ctx(clock=FakeClock())
    for name in ("database_url", "blob_store", "key_provider"):
        monkeypatch.setenv(f"CALLVAULT_{name.upper()}", getattr(ctx.settings, name))
    append(ctx, 6)
    runner = CliRunner()

    made = runner.invoke(cli_app, ["audit", "checkpoint"])
    assert made.exit_code == 0, made.output
    assert "signs seq 7" in made.output and "audit/checkpoints/global/" in made.output
    again = runner.invoke(cli_app, ["audit", "checkpoint"])
    assert again.exit_code == 0 and "nothing to sign" in again.output
    ok = runner.invoke(cli_app, ["audit", "verify"])
    assert ok.exit_code == 0, ok.output
    assert "1 signed checkpoints" in ok.output

    tamper(ctx, "DELETE FROM audit_event WHERE seq > 5")
    broken = runner.invoke(cli_app, ["audit", "verify"])
    assert broken.exit_code == 1
    assert "BROKEN at seq 6" in broken.output


def test_api_lists_checkpoints_and_verifies_them(ctx: Context) -> None:
    admin = initialise(ctx, now=ctx.now())
    assert admin
    keys = {}
    for name, role in (("auditor", "auditor"), ("security", "security"), ("eng", "engineer")):
        owner = owner_of(ctx.keys, f"{name}@example.com")
        with ctx.db.transaction() as s:
            _, keys[name] = principals.add_principal(
                s, actor=Actor.operator(), name=name, role=role, owner=owner,
                tenants=[], all_tenants=True, now=ctx.now(),
            )  # fmt: skip
    cp = checkpoint(ctx)
    with TestClient(create_app(ctx.settings, ctx=ctx)) as client:

        def get(path: str, who: str) -> Any:
            return client.get(path, headers={"Authorization": f"Bearer {keys[who]}"})

        listed = get("/v1/audit/checkpoints", "auditor")
        assert listed.status_code == 200, listed.text
        assert [c["id"] for c in listed.json()] == [cp.id]
        assert listed.json()[0]["signature"] == cp.signature
        assert get("/v1/audit/checkpoints?limit=1", "security").status_code == 200
        assert get("/v1/audit/checkpoints", "eng").status_code == 403
        body = get("/v1/audit/verify", "auditor").json()
        assert body["ok"] is True and body["checkpoints_checked"] == 1
        rewrite_from(ctx, 2)
        body = get("/v1/audit/verify", "security").json()
        assert body["ok"] is False and body["first_bad_seq"] == cp.head_seq
        assert body["checkpoint_id"] == cp.id


def test_api_names_a_malformed_pinned_key_as_misconfiguration(ctx: Context) -> None:
    initialise(ctx, now=ctx.now())
    owner = owner_of(ctx.keys, "a@example.com")
    with ctx.db.transaction() as s:
        _, key = principals.add_principal(
            s, actor=Actor.operator(), name="auditor", role="auditor", owner=owner,
            tenants=[], all_tenants=True, now=ctx.now(),
        )  # fmt: skip
    settings = ctx.settings.model_copy(update={"audit_public_key": "abcd"})
    bad = dataclasses.replace(ctx, settings=settings)
    with TestClient(create_app(settings, ctx=bad)) as client:
        r = client.get("/v1/audit/verify", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("/misconfigured")
    assert "abcd" not in r.text
