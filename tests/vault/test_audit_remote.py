"""A tenant-scoped auditor verifies its tenant's events from outside the database, against a real
``callvault serve`` on PostgreSQL: proofs and signed tree heads over HTTP, and the attacks it must
catch (an edited, a deleted and a reordered row, a head signed by another key). Also the proof
endpoints' answers to sizes and events they do not have.

One server for the module; each attack is undone after its check.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import make_transient
from typer.testing import CliRunner, Result

from tests.support.audit_log import tamper
from tests.support.postgres import temp_database
from tests.support.server import ServeProcess, run_serve
from tests.vault.test_access import make_principal
from vault import audit
from vault.audit import heads, merkle, remote, signing, tree
from vault.cli import app as cli_app
from vault.config import Settings
from vault.context import Context, build_context
from vault.models import AuditEvent, AuditTreeHead
from vault.tags import AuditAction


@dataclass
class World:
    ctx: Context
    serve: ServeProcess
    env: dict[str, str]
    workdir: Path
    acme: uuid.UUID
    globex: uuid.UUID
    keys: dict[str, str]  # principal name -> API key
    key_file: Path  # acme's auditor key
    acme_seqs: list[int]  # the events recorded here (the API wrote some of acme's before)
    sizes: list[int]  # of the signed heads


def record(ctx: Context, tenant: uuid.UUID | None, i: int) -> int:
    with ctx.db.transaction() as s:
        return audit.record(
            s, action=AuditAction.recording_read, actor="principal-x", now=ctx.now(),
            tenant_id=tenant, target=str(uuid.uuid4()), details={"i": i},
        ).seq  # fmt: skip


@pytest.fixture(scope="module")
def world(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("remote")
    with contextlib.ExitStack() as stack:
        db_url = stack.enter_context(temp_database(pg_url))
        env = {
            "CALLVAULT_DATABASE_URL": db_url,
            "CALLVAULT_KEY_PROVIDER": f"local:{workdir / 'keys'}",
            "CALLVAULT_BLOB_STORE": f"file:{workdir / 'data' / 'blobs'}",
        }
        serve = stack.enter_context(run_serve(env, workdir))
        admin = {"Authorization": f"Bearer {serve.admin_key}"}
        ids = {}
        for name in ("acme", "globex"):
            r = httpx.post(f"{serve.url}/v1/tenants", json={"name": name}, headers=admin)
            assert r.is_success, r.text
            ids[name] = uuid.UUID(r.json()["id"])
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=db_url,
            key_provider=env["CALLVAULT_KEY_PROVIDER"],
            blob_store=env["CALLVAULT_BLOB_STORE"],
        )
        ctx = build_context(settings)
        stack.callback(ctx.close)
        keys = {
            f"{t}-auditor": make_principal(ctx, f"{t}-auditor", "auditor", tenants=[t])[1]
            for t in ("acme", "globex")
        }
        acme_seqs, sizes = [], []
        for i in range(12):  # interleaved tenants, and events of no tenant
            tenant = (ids["acme"], ids["globex"], None)[i % 3]
            seq = record(ctx, tenant, i)
            acme_seqs += [seq] if tenant == ids["acme"] else []
            if i in (4, 8, 11):
                made = heads.write_head(ctx, now=ctx.now())
                assert made is not None
                sizes.append(made.tree_size)
        key_file = workdir / "acme.key"
        key_file.write_text(keys["acme-auditor"] + "\n")
        yield World(ctx, serve, env, workdir, ids["acme"], ids["globex"], keys, key_file,
                    acme_seqs, sizes)  # fmt: skip


def check(world: World) -> remote.TenantVerifyResult:
    client = remote.Client(world.serve.url, world.keys["acme-auditor"])
    key = world.ctx.keys.signing_public_key()
    return remote.verify_tenant(client, tenant=world.acme, public_key=key)


def cli(world: World, *args: str, env: dict[str, str] | None = None) -> Result:
    """``callvault audit verify --tenant`` (in process: the same code as the command)."""
    return CliRunner().invoke(
        cli_app,
        ["audit", "verify", "--tenant", str(world.acme), "--url", world.serve.url,
         "--api-key-file", str(world.key_file), *args],
        env=world.env if env is None else env,
    )  # fmt: skip


def get(world: World, who: str, path: str, **params: Any) -> httpx.Response:
    auth = {"Authorization": f"Bearer {world.keys[who]}"}
    return httpx.get(f"{world.serve.url}{path}", params=params, headers=auth)


def row(world: World, seq: int) -> AuditEvent:
    with world.ctx.db.reading() as s:
        found = s.get(AuditEvent, seq)
        assert found is not None
        s.expunge(found)
        return found


# --- the honest log ------------------------------------------------------------------------------


def test_the_tenant_verifies_its_events_from_outside(world: World) -> None:
    result = check(world)
    assert result.ok, result.reason
    n = len(get(world, "acme-auditor", "/v1/audit", limit=1000).json())
    assert n == len(world.acme_seqs) + 1  # and the tenant's creation
    assert (result.heads, result.included, result.events) == (3, n, n)
    # The command line does the same. An outside auditor has no database and no key provider:
    # the pinned key is all it needs.
    outside = {
        "CALLVAULT_DATABASE_URL": f"sqlite:///{world.workdir / 'nothing-here' / 'x.db'}",
        "CALLVAULT_KEY_PROVIDER": f"local:{world.workdir / 'no-keys'}",
        "CALLVAULT_AUDIT_PUBLIC_KEY": world.ctx.keys.signing_public_key().hex(),
    }
    done = cli(world, env=outside)
    assert done.exit_code == 0, done.output
    assert f"{n} events included in the signed tree of size {world.sizes[-1]}" in done.output
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    forged = cli(world, "--public-key", other)
    assert forged.exit_code == 1 and "signature does not verify" in forged.output


def test_the_scoped_auditor_sees_only_its_tenant_and_gets_the_heads(world: World) -> None:
    listed = get(world, "acme-auditor", "/v1/audit", limit=1000).json()
    assert {e["tenant_id"] for e in listed} == {str(world.acme)}
    assert all(e["leaf_index"] is not None and e["canonical"] for e in listed)
    heads_seen = get(world, "acme-auditor", "/v1/audit/checkpoints").json()
    assert [h["tree_size"] for h in heads_seen] == world.sizes
    # Another tenant's event answers exactly like one that does not exist.
    theirs = next(e["seq"] for e in get(world, "globex-auditor", "/v1/audit").json())
    size = world.sizes[-1]
    foreign = get(world, "acme-auditor", "/v1/audit/proof", seq=theirs, tree_size=size)
    missing = get(world, "acme-auditor", "/v1/audit/proof", seq=10**9, tree_size=size)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()


def test_proof_endpoints_answer_bad_sizes_with_specific_problems(world: World) -> None:
    seq, (first, second, size) = world.acme_seqs[0], world.sizes
    cases = [
        (("/v1/audit/proof", {"seq": seq, "tree_size": size + 1}), 404, "audit-tree-size-unknown"),
        (("/v1/audit/consistency", {"from": 3, "to": size + 1}), 404, "audit-tree-size-unknown"),
        (("/v1/audit/consistency", {"from": second, "to": first}), 422, "audit-tree-range-invalid"),
        (("/v1/audit/proof", {"seq": seq, "tree_size": 0}), 422, "invalid-input"),
        (("/v1/audit/proof", {"seq": "x", "tree_size": 5}), 422, "invalid-input"),
    ]
    for (path, params), status, kind in cases:
        r = get(world, "acme-auditor", path, **params)
        assert r.status_code == status, (path, params, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("/" + kind)
    late = record(world.ctx, world.acme, 99)  # committed, not yet sequenced
    try:
        r = get(world, "acme-auditor", "/v1/audit/proof", seq=late, tree_size=size)
        assert r.status_code == 409 and r.json()["type"].endswith("/audit-leaf-not-in-tree")
        assert check(world).ok  # newer than the newest head: not counted, not a finding
    finally:
        tamper(world.ctx, ("DELETE FROM audit_event WHERE seq = :s", {"s": late}))
    ok = get(world, "acme-auditor", "/v1/audit/consistency", **{"from": first, "to": size})
    with world.ctx.db.reading() as s:
        roots = (tree.root_at(s, first), tree.root_at(s, size))
    path = [bytes.fromhex(h) for h in ok.json()["path"]]
    merkle.verify_consistency(first, size, path, *roots)


# --- the attacks ---------------------------------------------------------------------------------


def test_an_edited_row_is_caught(world: World) -> None:
    seq = world.acme_seqs[1]
    original = row(world, seq)
    forged = original.canonical.replace('"principal-x"', '"mallory"')
    restore = (
        "UPDATE audit_event SET actor = :a, canonical = :c, hash = :h WHERE seq = :s",
        {"a": original.actor, "c": original.canonical, "h": original.hash, "s": seq},
    )
    tamper(world.ctx, ("UPDATE audit_event SET actor = 'mallory', canonical = :c, hash = :h "
                       "WHERE seq = :s", {"c": forged, "h": audit.hash_canonical(forged),
                                          "s": seq}))  # fmt: skip
    try:
        result = check(world)
        assert not result.ok and result.first_bad_seq == seq
        assert f"not included in the signed tree of size {world.sizes[-1]}" in (result.reason or "")
        done = cli(world)
        assert done.exit_code == 1 and f"BROKEN at seq {seq}" in done.output
    finally:
        tamper(world.ctx, restore)
    assert check(world).ok


def test_a_deleted_row_is_caught(world: World) -> None:
    seq = world.acme_seqs[2]
    original = row(world, seq)
    tamper(world.ctx, ("DELETE FROM audit_event WHERE seq = :s", {"s": seq}))
    try:
        result = check(world)
        n = len(world.acme_seqs) + 1
        assert not result.ok and result.included == n - 1
        assert f"counts {n} events of this tenant, but {n - 1}" in (result.reason or "")
    finally:
        make_transient(original)  # insert it again, as it was
        with world.ctx.db.transaction() as s:
            s.add(original)
    assert check(world).ok


def test_a_reordered_row_is_caught(world: World) -> None:
    a, b = world.acme_seqs[0], world.acme_seqs[3]
    swap = [("UPDATE audit_event SET seq = -1 WHERE seq = :a", {"a": a}),
            ("UPDATE audit_event SET seq = :a WHERE seq = :b", {"a": a, "b": b}),
            ("UPDATE audit_event SET seq = :b WHERE seq = -1", {"b": b})]  # fmt: skip
    tamper(world.ctx, *swap)
    try:
        result = check(world)
        assert not result.ok and result.first_bad_seq == a
        assert "names another seq" in (result.reason or "")
    finally:
        tamper(world.ctx, *swap)  # swapping again restores
    # Moving leaves instead of seqs is caught by the proofs.
    move = [("UPDATE audit_event SET leaf_index = -1 - leaf_index WHERE seq IN (:a, :b)",
             {"a": a, "b": b}),
            ("UPDATE audit_event SET leaf_index = :l WHERE seq = :s",
             {"l": row(world, b).leaf_index, "s": a}),
            ("UPDATE audit_event SET leaf_index = :l WHERE seq = :s",
             {"l": row(world, a).leaf_index, "s": b})]  # fmt: skip
    la, lb = row(world, a).leaf_index, row(world, b).leaf_index
    tamper(world.ctx, *move)
    try:
        result = check(world)
        assert not result.ok and result.first_bad_seq == a
        assert "not included" in (result.reason or "")
    finally:
        tamper(world.ctx, move[0], ("UPDATE audit_event SET leaf_index = :l WHERE seq = :s",
                                    {"l": la, "s": a}),
               ("UPDATE audit_event SET leaf_index = :l WHERE seq = :s",
                {"l": lb, "s": b}))  # fmt: skip
    assert check(world).ok


def test_a_head_signed_by_another_key_is_caught(world: World) -> None:
    ctx = world.ctx
    record(ctx, world.acme, 100)
    tree.sequence(ctx.db, wait=True)
    attacker = Ed25519PrivateKey.generate()
    size = world.sizes[-1] + 1
    with ctx.db.reading() as s:
        root = tree.root_at(s, size).hex()
        latest = heads.list_heads(s)[-1]
        body = {"tree_size": size, "root_hash": root, "ts": audit.format_ts(ctx.now()),
                "tenant_leaves": tree.tenant_leaves(s), "prev_head": heads.link(latest),
                "legacy_chain_head": None}  # fmt: skip
    forged = signing.sign_document(attacker, doc_type=signing.TREE_HEAD, version=1, body=body)
    with ctx.db.transaction() as s:
        fake = AuditTreeHead(tree_size=size, root_hash=root, created_at=ctx.now(),
                             public_key="00" * 32, statement=forged.canonical,
                             signature=forged.signature)  # fmt: skip
        s.add(fake)
        s.flush()
        fake_id = fake.id
    result = check(world)
    assert not result.ok and f"tree head {fake_id}" in (result.reason or "")
    assert "signature does not verify" in (result.reason or "")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tenant", "acme"], "--tenant needs --url and --api-key-file"),
        (["--tenant", "acme", "--url", "http://127.0.0.1:9", "--api-key-file", "KEY"],
         "--tenant must be the tenant's id"),
        (["--tenant", str(uuid.uuid4()), "--url", "file:///etc/passwd", "--api-key-file", "KEY",
          "--public-key", "00" * 32], "must start with http:// or https://"),
        (["--tenant", str(uuid.uuid4()), "--url", "http://127.0.0.1:9", "--api-key-file", "KEY",
          "--public-key", "00" * 32], "/v1/audit/checkpoints:"),
        (["--tenant", str(uuid.uuid4()), "--url", "http://127.0.0.1:9", "--api-key-file", "KEY",
          "--public-key", "abcd"], "--public-key must be 64 hex digits"),
        (["--url", "http://127.0.0.1:9"], "--url and --api-key-file go with --tenant"),
    ],
)  # fmt: skip
def test_bad_arguments_and_an_unreachable_server_are_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    key = tmp_path / "key"
    key.write_text("cvk_not_a_real_key\n")
    argv = ["audit", "verify", *[str(key) if a == "KEY" else a for a in args]]
    done = CliRunner().invoke(cli_app, argv, env={"CALLVAULT_AUDIT_PUBLIC_KEY": ""})
    assert done.exit_code == 2, done.output
    assert message in done.output and "Traceback" not in done.output
    assert "cvk_not_a_real_key" not in done.output


def test_a_server_answering_nonsense_fails_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    """The verifier trusts nothing the server says: a reply of the wrong shape is a failure."""
    replies = iter([[{"id": 1, "signature": "00"}]])  # a head without its statement
    monkeypatch.setattr(remote.Client, "get", lambda self, path, **_: next(replies))
    client = remote.Client("http://127.0.0.1:9", "k")
    result = remote.verify_tenant(client, tenant=uuid.uuid4(), public_key=b"\x01" * 32)
    assert not result.ok and "not what it documents" in (result.reason or "")
