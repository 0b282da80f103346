"""Signed tree heads (and the legacy chain checkpoints before them) on SQLite+local and
PostgreSQL+SeaweedFS: signing, export under Object Lock, idempotence, and the tampering only a
signature can catch (a log cut or rewritten consistently, forged heads, a swapped published key).
"""

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
from tests.support.audit_log import append, legacy_chain, legacy_event, tamper
from tests.support.clock import FakeClock
from tests.vault.test_access import make_principal, make_tenant
from vault import audit
from vault.app import create_app
from vault.audit import checkpoints, heads, logcheck, merkle, signing, tree
from vault.cli import app as cli_app
from vault.config import ConfigError
from vault.context import Context
from vault.errors import BlobLockedError, IntegrityError, StoreUnavailableError
from vault.models import AuditCheckpoint, AuditEvent, AuditTree, AuditTreeHead
from vault.setup import initialise
from vault.tags import AuditAction

# --- helpers -------------------------------------------------------------------------------------


def head(ctx: Context) -> AuditTreeHead:
    made = heads.write_head(ctx, now=ctx.now())
    assert made is not None
    return made


def verify(ctx: Context, key: bytes | None = None) -> logcheck.LogVerifyResult:
    public_key = checkpoints.trusted_public_key(ctx) if key is None else key
    with ctx.db.reading() as s:
        return logcheck.verify_all(s, public_key=public_key)


def rebuild_tree(ctx: Context) -> None:
    """Recompute the stored hashes, size and tenant counts from the events as they now are: what
    an attacker does to make an edited log consistent again."""
    with ctx.db.reading() as s:
        rows = s.exec(
            select(AuditEvent.seq, AuditEvent.tenant_id, AuditEvent.canonical)
            .where(AuditEvent.leaf_index.is_not(None))  # type: ignore[union-attr]
            .order_by(AuditEvent.leaf_index)
        ).all()
    renumber = [("UPDATE audit_event SET leaf_index = -1 - leaf_index "
                 "WHERE leaf_index IS NOT NULL")]  # fmt: skip
    renumber += [("UPDATE audit_event SET leaf_index = :i WHERE seq = :s", {"i": i, "s": seq})
                 for i, (seq, _, _) in enumerate(rows)]  # fmt: skip
    tamper(ctx, *renumber)
    stack, stored, counts = merkle.Stack(), [], {}  # type: ignore[var-annotated]
    for _, tenant, canonical in rows:
        stored += stack.append(tree.leaf_of(canonical))
        counts[tree.tenant_key(tenant)] = counts.get(tree.tenant_key(tenant), 0) + 1
    with ctx.db.transaction() as s:
        s.execute(sa.text("DELETE FROM audit_tree_node"))
        s.execute(sa.text("DELETE FROM audit_tree_tenant"))
        s.execute(sa.text("INSERT INTO audit_tree_node (idx, hash) VALUES (:i, :h)"),
                  [{"i": i, "h": h} for i, h in enumerate(stored)])  # fmt: skip
        s.execute(sa.text("INSERT INTO audit_tree_tenant (tenant_key, leaves) VALUES (:k, :n)"),
                  [{"k": k, "n": n} for k, n in counts.items()])  # fmt: skip
        s.execute(sa.update(AuditTree).values(size=len(rows)))


def rewrite(ctx: Context, seq: int) -> None:
    """Edit event ``seq`` (canonical text, hash and column alike) and rebuild the tree: every
    check short of a signature passes."""
    with ctx.db.reading() as s:
        row = s.exec(select(AuditEvent).where(AuditEvent.seq == seq)).one()
    event = {**json.loads(row.canonical), "actor": "mallory"}
    canonical = audit.canonical_json(event)
    tamper(ctx, ("UPDATE audit_event SET actor = 'mallory', canonical = :c, hash = :h "
                 "WHERE seq = :s", {"c": canonical, "h": audit.hash_canonical(canonical),
                                    "s": seq}))  # fmt: skip
    rebuild_tree(ctx)


def raw_public(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def read_object(ctx: Context, key: str, version_id: str | None = None) -> bytes:
    return ctx.store.read_range(key, version_id=version_id, offset=0, length=1 << 20)


def count_heads(ctx: Context) -> int:
    with ctx.db.reading() as s:
        return int(s.exec(select(func.count()).select_from(AuditTreeHead)).one())


def resign(ctx: Context, row: AuditTreeHead, old: str, new: str) -> None:
    """Edit the statement and sign the result with the *trusted* key: only the document's own
    checks can refuse it."""
    assert old in row.statement
    text = row.statement.replace(old, new)
    signature = ctx.keys.sign(text.encode()).hex()
    tamper(ctx, ("UPDATE audit_tree_head SET statement = :t, signature = :g WHERE id = :i",
                 {"t": text, "g": signature, "i": row.id}))  # fmt: skip


# --- writing and exporting -----------------------------------------------------------------------


def test_tree_head_is_signed_exported_and_verifies(ctx: Context) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    events = append(ctx, 5, tenants=[a, a, b, None, a])
    made = head(ctx)  # sequences the committed events first
    assert made.tree_size == 5
    # The root, computed here from the events' canonical texts alone.
    stack = merkle.Stack()
    for e in events:
        stack.append(merkle.leaf_hash(e.canonical.encode()))
    root = stack.root().hex()
    assert made.root_hash == root
    # The exact signed bytes, written out by hand: sorted keys, no spaces, type and version.
    leaves = ",".join(f'"{k}":{n}' for k, n in sorted({str(a): 3, str(b): 1, "none": 1}.items()))
    assert made.statement == (
        '{"legacy_chain_head":null,"prev_head":null,"root_hash":"' + root + '",'
        '"tenant_leaves":{' + leaves + '},"tree_size":5,"ts":"' + audit.format_ts(ctx.now())
        + '","type":"callvault.audit-tree-head","version":1}'
    )  # fmt: skip
    public = ctx.keys.signing_public_key()
    assert made.public_key == public.hex() and made.signature
    Ed25519PublicKey.from_public_bytes(public).verify(
        bytes.fromhex(made.signature), made.statement.encode()
    )
    # The export holds the exact signed bytes; the public key is published beside it.
    assert made.object_key == "audit/tree-heads/00000000000000000005.json"
    doc = json.loads(read_object(ctx, made.object_key, made.version_id))
    assert doc == {"statement": made.statement, "signature": made.signature,
                   "public_key": public.hex()}  # fmt: skip
    published = json.loads(read_object(ctx, checkpoints.PUBLIC_KEY_OBJECT))
    assert published == {"algorithm": "ed25519", "public_key": public.hex()}
    result = verify(ctx)
    assert result.ok, result.reason
    assert (result.heads_checked, result.latest_tree_size, result.checkpoints_checked) == (1, 5, 0)


def test_export_is_under_compliance_retention_on_s3(make_ctx: Callable[..., Context]) -> None:
    # Not the ``ctx`` fixture: a skip on the local store would count as a failure in CI.
    ctx = make_ctx(db="postgres", store="s3", clock=FakeClock())
    assert ctx.store.supports_object_lock()
    append(ctx, 2)
    made = head(ctx)
    assert made.object_key and made.version_id
    client, bucket = ctx.store.client, ctx.store.bucket  # type: ignore[attr-defined]
    retention = client.get_object_retention(bucket, made.object_key, version_id=made.version_id)
    assert retention.mode == "COMPLIANCE"
    assert retention.retain_until_date > ctx.now() + timedelta(days=3000)
    with pytest.raises(BlobLockedError):
        ctx.store.delete_all_versions(made.object_key)
    assert ctx.store.exists(made.object_key, version_id=made.version_id)


def test_idempotent_for_the_same_tree_and_linked(ctx: Context) -> None:
    assert heads.write_head(ctx, now=ctx.now()) is None  # an empty log: nothing to sign
    append(ctx, 3)
    first = head(ctx)
    assert heads.write_head(ctx, now=ctx.now()) is None
    assert heads.write_head(ctx, now=ctx.now()) is None
    assert count_heads(ctx) == 1
    with ctx.db.reading() as s:
        assert audit.head(s)[0] == 3  # a head is about the log, never an event in it
    append(ctx, 1)
    second = head(ctx)
    assert second.tree_size == 4
    assert json.loads(second.statement)["prev_head"] == {
        "tree_size": 3, "hash": hashlib.sha256(first.statement.encode()).hexdigest(),
    }  # fmt: skip
    assert verify(ctx).ok


def test_failed_export_is_retried_next_run(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    append(ctx, 2)

    def down(*_: Any, **__: Any) -> None:
        raise StoreUnavailableError("store down")

    with monkeypatch.context() as m:
        m.setattr(ctx.store, "put_bytes", down)
        made = head(ctx)
    assert made.object_key is None and made.signature and count_heads(ctx) == 1
    assert verify(ctx).ok  # the DB head stands on its own
    assert heads.write_head(ctx, now=ctx.now()) is None  # same tree: only exports
    with ctx.db.reading() as s:
        row = s.get(AuditTreeHead, made.id)
    assert row is not None and row.object_key == heads.export_key(2)
    assert json.loads(read_object(ctx, row.object_key, row.version_id))["statement"] == (
        made.statement
    )


def test_list_heads_pages(ctx: Context) -> None:
    ids = []
    for _ in range(3):
        append(ctx, 1)
        ids.append(head(ctx).id)
    with ctx.db.reading() as s:
        page = heads.list_heads(s, limit=2)
        assert [h.id for h in page] == ids[:2] and page[0].object_key and page[0].statement
        assert [h.id for h in heads.list_heads(s, after_id=ids[1])] == ids[2:]


def test_concurrent_writers_make_one_head(ctx: Context) -> None:
    append(ctx, 3)
    barrier = threading.Barrier(4)
    results: list[AuditTreeHead | None] = []

    def run() -> None:
        barrier.wait()
        results.append(heads.write_head(ctx, now=ctx.now()))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 1 and count_heads(ctx) == 1
    assert verify(ctx).ok


# --- tampering -----------------------------------------------------------------------------------


def test_altered_event_row_is_caught(ctx: Context) -> None:
    append(ctx, 10)
    head(ctx)
    tamper(ctx, "UPDATE audit_event SET actor = 'mallory' WHERE seq = 4")
    result = verify(ctx)
    assert not result.ok and result.first_bad_seq == 4 and "actor" in (result.reason or "")


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("UPDATE audit_tree_head SET root_hash = :h", "columns differ"),
        ("UPDATE audit_tree_head SET statement = replace(statement, '\"ts\":\"2', '\"ts\":\"3')",
         "signature"),
        ("UPDATE audit_tree_head SET signature = :s", "signature"),
    ],
)  # fmt: skip
def test_altered_head_row_is_caught(
    make_ctx: Callable[..., Context], sql: str, reason: str
) -> None:
    ctx = make_ctx(clock=FakeClock())  # the statement's own checks: one backend is enough
    append(ctx, 4)
    made = head(ctx)
    tamper(ctx, (sql, {"h": "ab" * 32, "s": "cd" * 64}))
    result = verify(ctx)
    assert not result.ok and result.first_bad_seq == 1 and result.head_id == made.id
    assert reason in (result.reason or "")


def test_a_log_cut_back_consistently_is_caught_by_the_head(ctx: Context) -> None:
    append(ctx, 10)
    made = head(ctx)
    tamper(ctx, "DELETE FROM audit_event WHERE seq > 7")
    rebuild_tree(ctx)
    with ctx.db.reading() as s:
        assert audit.verify(s).ok  # events and tree agree with each other...
    result = verify(ctx)  # ...but not with what was signed
    assert not result.ok and result.first_bad_seq == 8 and result.head_id == made.id
    assert "events were deleted" in (result.reason or "")
    append(ctx, 1)
    with pytest.raises(IntegrityError, match="no longer matches signed head"):
        heads.write_head(ctx, now=ctx.now())  # the signer never signs the shorter log


def test_a_deleted_head_row_is_caught_by_the_next(ctx: Context) -> None:
    rows = []
    for _ in range(3):
        append(ctx, 2)
        rows.append(head(ctx))
    tamper(ctx, ("DELETE FROM audit_tree_head WHERE id = :i", {"i": rows[1].id}))
    result = verify(ctx)
    assert not result.ok and result.head_id == rows[2].id
    assert "a head is missing" in (result.reason or "")


@pytest.mark.parametrize(("seq", "bad_head"), [(2, 0), (8, 1), (12, None)])
def test_a_log_rewritten_consistently_is_caught_by_the_head_covering_it(
    ctx: Context, seq: int, bad_head: int | None
) -> None:
    append(ctx, 5)
    made = [head(ctx)]  # leaves 0..4 (seqs 1..5)
    append(ctx, 5)
    made.append(head(ctx))  # leaves 5..9
    append(ctx, 3)
    tree.sequence(ctx.db, wait=True)  # leaves 10..12: no head yet
    rewrite(ctx, seq)
    with ctx.db.reading() as s:
        assert audit.verify(s).ok  # internally consistent
    result = verify(ctx)
    if bad_head is None:  # past every signed head: nothing signed contradicts it
        assert result.ok
        return
    assert not result.ok and result.head_id == made[bad_head].id
    assert result.first_bad_seq == (1 if bad_head == 0 else 6)  # first leaf after a good head
    assert "rewritten" in (result.reason or "")
    with pytest.raises(IntegrityError):  # and the signer refuses to extend it
        append(ctx, 1)
        heads.write_head(ctx, now=ctx.now())


def test_forged_head_signed_by_another_key_is_rejected(ctx: Context) -> None:
    append(ctx, 5)
    genuine = head(ctx)
    append(ctx, 2)
    tree.sequence(ctx.db, wait=True)
    attacker = Ed25519PrivateKey.generate()
    with ctx.db.reading() as s:
        root = tree.root_at(s, 7).hex()
        leaves = tree.tenant_leaves(s)
    body = {
        "tree_size": 7,
        "root_hash": root,
        "ts": audit.format_ts(ctx.now()),
        "tenant_leaves": leaves,
        "prev_head": heads.link(genuine),
        "legacy_chain_head": None,
    }
    forged = signing.sign_document(attacker, doc_type=signing.TREE_HEAD, version=1, body=body)
    with ctx.db.transaction() as s:
        row = AuditTreeHead(
            tree_size=7, root_hash=root, created_at=ctx.now(),
            public_key=raw_public(attacker).hex(), statement=forged.canonical,
            signature=forged.signature,
        )  # fmt: skip
        s.add(row)
        s.flush()
        forged_id = row.id
    result = verify(ctx)
    assert not result.ok and result.head_id == forged_id
    assert "signature does not verify" in (result.reason or "")


def test_verify_ignores_the_published_key_and_the_exports(ctx: Context) -> None:
    """Rewrite the log, re-sign every head with an attacker key, replace the exports and the
    published key: a perfect forgery except for the trust anchor."""
    append(ctx, 4)
    made = [head(ctx)]
    append(ctx, 4)
    made.append(head(ctx))
    rewrite(ctx, 2)
    attacker = Ed25519PrivateKey.generate()
    attacker_hex = raw_public(attacker).hex()
    prev: dict[str, Any] | None = None
    for row in made:
        with ctx.db.reading() as s:
            root = tree.root_at(s, row.tree_size).hex()
        text = audit.canonical_json({**json.loads(row.statement), "root_hash": root,
                                     "prev_head": prev})  # fmt: skip
        sig = attacker.sign(text.encode()).hex()
        tamper(ctx, ("UPDATE audit_tree_head SET statement = :t, signature = :g, public_key = :k,"
                     " root_hash = :r WHERE id = :i",
                     {"t": text, "g": sig, "k": attacker_hex, "r": root, "i": row.id}))  # fmt: skip
        assert row.object_key is not None
        doc = {"statement": text, "signature": sig, "public_key": attacker_hex}
        ctx.store.put_bytes(row.object_key, json.dumps(doc).encode())
        prev = {"tree_size": row.tree_size, "hash": audit.hash_canonical(text)}
    ctx.store.put_bytes(
        checkpoints.PUBLIC_KEY_OBJECT,
        json.dumps({"algorithm": "ed25519", "public_key": attacker_hex}).encode(),
    )
    assert verify(ctx, raw_public(attacker)).ok  # under the attacker's key it all holds...
    trusted = checkpoints.trusted_public_key(ctx)
    assert trusted == ctx.keys.signing_public_key() != raw_public(attacker)
    result = verify(ctx)  # ...but that key is never the trusted one
    assert not result.ok and result.head_id == made[0].id
    assert "signature" in (result.reason or "")


def test_pinned_key_overrides_the_provider(ctx: Context) -> None:
    append(ctx, 3)
    head(ctx)
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


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ('"type":"callvault.audit-tree-head"', '"type":"callvault.audit-checkpoint"',
         "type is 'callvault.audit-checkpoint', expected 'callvault.audit-tree-head'"),
        ('"version":1', '"version":2', "version 2 is not one of the accepted versions (1)"),
        ('"legacy_chain_head":null,', "", "does not have the tree head fields"),
        ('"tree_size":3', '"tree_size": 3', "not canonical JSON"),
        ('"tree_size":3', '"tree_size":4', "does not add up"),
    ],
)  # fmt: skip
def test_a_head_of_another_type_version_or_shape_is_rejected(
    make_ctx: Callable[..., Context], old: str, new: str, reason: str
) -> None:
    ctx = make_ctx(clock=FakeClock())  # the statement's own checks: one backend is enough
    append(ctx, 3, tenants=[None])
    made = head(ctx)
    resign(ctx, made, old, new)
    result = verify(ctx)
    assert not result.ok and result.head_id == made.id and reason in (result.reason or "")


def test_an_erasure_receipt_signed_with_the_audit_key_is_no_head(ctx: Context) -> None:
    append(ctx, 3)
    made = head(ctx)
    body = {k: v for k, v in json.loads(made.statement).items() if k not in ("type", "version")}
    receipt = signing.sign_document(ctx.keys, doc_type=signing.ERASURE_RECEIPT, version=1,
                                    body=body)  # fmt: skip
    tamper(ctx, ("UPDATE audit_tree_head SET statement = :t, signature = :g WHERE id = :i",
                 {"t": receipt.canonical, "g": receipt.signature, "i": made.id}))  # fmt: skip
    result = verify(ctx)
    assert not result.ok and "expected 'callvault.audit-tree-head'" in (result.reason or "")


# --- the legacy chain and its checkpoints --------------------------------------------------------


def legacy_checkpoint(ctx: Context, prev: AuditCheckpoint | None, *, v1: bool) -> AuditCheckpoint:
    """A chain checkpoint as written before the Merkle log: an audit.checkpoint event chained
    onto the legacy head, and a statement over it (v1: the untyped ``"format"`` form)."""
    with ctx.db.reading() as s:
        last = audit.list_events(s, order="desc", limit=1)[0]
    event = legacy_event(last.seq + 1, last.hash, ctx.now(), actor=checkpoints.ACTOR,
                         action=AuditAction.audit_checkpoint.value)  # fmt: skip
    link = None if prev is None else {"seq": prev.head_seq, "hash": audit.hash_canonical(
        prev.statement)}  # fmt: skip
    body = {
        "chain_id": "global",
        "head_seq": event.seq,
        "head_hash": event.hash,
        "ts": audit.format_ts(ctx.now()),
        "prev_checkpoint": link,
    }
    if v1:
        statement = audit.canonical_json({**body, "format": "callvault-checkpoint/1"})
    else:
        statement = signing.prepare_document(doc_type=signing.CHECKPOINT, version=2, body=body)
    # No key call inside a transaction.
    signature, public = ctx.keys.sign(statement.encode()).hex(), ctx.keys.signing_public_key()
    with ctx.db.transaction() as s:
        s.add(event)
        s.flush()
        s.execute(sa.update(AuditTree).values(legacy_head_seq=event.seq,
                                              legacy_head_hash=event.hash))  # fmt: skip
        if ctx.db.is_postgres:
            s.execute(sa.text(f"SELECT setval('audit_event_seq', {event.seq + 1}, false)"))
        row = AuditCheckpoint(
            chain_id="global", head_seq=event.seq, head_hash=event.hash, created_at=ctx.now(),
            public_key=public.hex(), statement=statement,
            signature=signature,
        )  # fmt: skip
        s.add(row)
        s.flush()
        s.expunge(row)
    return row


def test_legacy_checkpoints_still_verify_and_the_first_head_records_the_chain(
    ctx: Context,
) -> None:
    legacy_chain(ctx, 3)
    first = legacy_checkpoint(ctx, None, v1=True)  # seq 4
    second = legacy_checkpoint(ctx, first, v1=False)  # seq 5
    append(ctx, 3)  # seqs 6..8, the first events of the Merkle era
    made = head(ctx)
    assert made.tree_size == 8
    with ctx.db.reading() as s:
        chain_head = s.exec(select(AuditEvent.hash).where(AuditEvent.seq == 5)).one()
    assert json.loads(made.statement)["legacy_chain_head"] == {"seq": 5, "hash": chain_head}
    result = verify(ctx)
    assert result.ok, result.reason
    assert (result.checkpoints_checked, result.latest_checkpoint_seq) == (2, second.head_seq)
    assert result.heads_checked == 1

    # Rewrite the chain from seq 2 with every later hash recomputed, tree rebuilt: the first
    # legacy checkpoint catches it at its own seq, and the head's root disagrees too.
    prev = audit.GENESIS_HASH
    with ctx.db.reading() as s:
        rows = s.exec(select(AuditEvent).where(AuditEvent.prev_hash.is_not(None))  # type: ignore[union-attr]
                      .order_by(AuditEvent.seq)).all()  # fmt: skip
    updates = []
    for row in rows:
        event = {**json.loads(row.canonical), "prev_hash": prev}
        if row.seq == 2:
            event["actor"] = "mallory"
        text = audit.canonical_json(event)
        updates.append(("UPDATE audit_event SET actor = :a, canonical = :c, hash = :h, "
                        "prev_hash = :p WHERE seq = :s", {"a": event["actor"], "c": text,
                        "h": audit.hash_canonical(text), "p": prev, "s": row.seq}))  # fmt: skip
        prev = audit.hash_canonical(text)
    tamper(ctx, *updates, ("UPDATE audit_tree SET legacy_head_hash = :h", {"h": prev}))
    rebuild_tree(ctx)
    with ctx.db.reading() as s:
        assert audit.verify(s).ok
    result = verify(ctx)
    assert not result.ok and result.head_id == made.id and result.first_bad_seq == 1
    verifier = Ed25519PublicKey.from_public_bytes(ctx.keys.signing_public_key())
    with ctx.db.reading() as s:
        _, _, findings = checkpoints.check_checkpoints(s, verifier, 5)
    assert [(f.seq, f.checkpoint_id) for f in findings] == [(4, first.id), (5, second.id)]
    assert "rewritten after seq 0" in findings[0].reason


def test_a_legacy_chain_cut_at_its_head_is_caught(ctx: Context) -> None:
    legacy_chain(ctx, 4)
    append(ctx, 2)
    head(ctx)
    tamper(ctx, "DELETE FROM audit_event WHERE seq = 4",
           "UPDATE audit_tree SET legacy_head_seq = 3, legacy_head_hash = "
           "(SELECT hash FROM audit_event WHERE seq = 3)")  # fmt: skip
    rebuild_tree(ctx)
    result = verify(ctx)
    assert not result.ok and "legacy chain head" in (result.reason or "")


# --- Transit, CLI ----------------------------------------------------------------------------


def test_transit_ed25519_key_signs_heads(make_ctx: Callable[..., Context], bao: Bao) -> None:
    ctx = make_ctx(clock=FakeClock())
    local_key = ctx.keys.signing_public_key()
    ctx.keys = TransitKeyProvider(bao.url, bao.token, key_prefix=f"cp_{secrets.token_hex(4)}")
    append(ctx, 4)
    made = head(ctx)
    public = ctx.keys.signing_public_key()
    assert made.public_key == public.hex() and public != local_key and made.signature
    Ed25519PublicKey.from_public_bytes(public).verify(
        bytes.fromhex(made.signature), made.statement.encode()
    )
    assert verify(ctx).ok
    assert not verify(ctx, local_key).ok


def test_cli_audit_checkpoint_sequence_and_verify_exit_codes(
    make_ctx: Callable[..., Context], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_ctx(clock=FakeClock())
    for name in ("database_url", "blob_store", "key_provider"):
        monkeypatch.setenv(f"CALLVAULT_{name.upper()}", getattr(ctx.settings, name))
    append(ctx, 6)
    runner = CliRunner()
    taken = runner.invoke(cli_app, ["audit", "sequence"])
    assert taken.exit_code == 0 and "6 audit event(s) sequenced" in taken.output
    made = runner.invoke(cli_app, ["audit", "checkpoint"])
    assert made.exit_code == 0, made.output
    assert "signs size 6" in made.output and "audit/tree-heads/" in made.output
    again = runner.invoke(cli_app, ["audit", "checkpoint"])
    assert again.exit_code == 0 and "nothing to sign" in again.output
    ok = runner.invoke(cli_app, ["audit", "verify"])
    assert ok.exit_code == 0, ok.output
    assert "tree size 6, 1 signed tree heads" in ok.output
    other = raw_public(Ed25519PrivateKey.generate()).hex()
    assert runner.invoke(cli_app, ["audit", "verify", "--public-key", other]).exit_code == 1

    tamper(ctx, "DELETE FROM audit_event WHERE seq = 5")
    broken = runner.invoke(cli_app, ["audit", "verify"])
    assert broken.exit_code == 1
    assert "BROKEN at seq 5" in broken.output


# --- API -------------------------------------------------------------------------------------


def test_api_lists_heads_to_every_auditor_and_verifies_for_all_tenant_ones(ctx: Context) -> None:
    admin = initialise(ctx, now=ctx.now())
    assert admin
    make_tenant(ctx, "acme")
    keys = {
        "auditor": make_principal(ctx, "auditor", "auditor", all_tenants=True)[1],
        "scoped": make_principal(ctx, "scoped", "auditor", tenants=["acme"])[1],
        "security": make_principal(ctx, "security", "security", all_tenants=True)[1],
        "eng": make_principal(ctx, "eng", "engineer", all_tenants=True)[1],
    }
    made = head(ctx)
    with TestClient(create_app(ctx.settings, ctx=ctx)) as client:

        def get(path: str, who: str) -> Any:
            return client.get(path, headers={"Authorization": f"Bearer {keys[who]}"})

        for who in ("auditor", "scoped"):
            listed = get("/v1/audit/checkpoints", who)
            assert listed.status_code == 200, listed.text
            [only] = listed.json()
            assert (only["id"], only["tree_size"]) == (made.id, made.tree_size)
            assert (only["statement"], only["signature"]) == (made.statement, made.signature)
        assert get("/v1/audit/checkpoints?limit=1", "security").status_code == 200
        assert get("/v1/audit/checkpoints", "eng").status_code == 403
        assert get("/v1/audit/checkpoints/legacy", "auditor").json() == []
        # Paging past any 32-bit id is an empty page, not a database error (a fuzz find).
        for path in ("/v1/audit/checkpoints", "/v1/audit/checkpoints/legacy"):
            for after in (2**31 - 1, 2**31, 2**63 - 1):
                page = get(f"{path}?after_id={after}", "auditor")
                assert (page.status_code, page.json()) == (200, []), (path, after, page.text)
        body = get("/v1/audit/verify", "auditor").json()
        assert body["ok"] is True and body["heads_checked"] == 1
        assert body["tree_size"] == made.tree_size
        rewrite(ctx, 2)
        body = get("/v1/audit/verify", "security").json()
        assert body["ok"] is False and body["first_bad_seq"] == 1 and body["head_id"] == made.id


def test_api_names_a_malformed_pinned_key_as_misconfiguration(ctx: Context) -> None:
    initialise(ctx, now=ctx.now())
    _, key = make_principal(ctx, "auditor", "auditor", all_tenants=True)
    settings = ctx.settings.model_copy(update={"audit_public_key": "abcd"})
    bad = dataclasses.replace(ctx, settings=settings)
    with TestClient(create_app(settings, ctx=bad)) as client:
        r = client.get("/v1/audit/verify", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("/misconfigured")
    assert "abcd" not in r.text
