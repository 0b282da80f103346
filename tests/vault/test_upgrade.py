"""Upgrade test: a populated database at the released schema ("0003") migrates to head intact.

Every 0003 table gets realistic rows, written with plain SQL against the tables as *reflected*
at 0003 (never today's ORM models, which follow the newest schema). Upgraded to whatever head is,
on SQLite and on PostgreSQL: the database stands at the script head; every 0003 row reads back
with every 0003 column value unchanged, NULLs included (new columns are fine, a dropped or renamed
one must be declared in COLUMN_CHANGES); today's models load the rows with aware UTC times; the
audit hash chain and its checkpoint still verify; and audit_event is still append-only.
While head is "0003" the upgrade is a no-op; the test earns its keep from 0004 on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

import vault.db
import vault.models as m
from vault.errors import MisconfiguredError

RELEASED = "0003"
GENESIS_HASH = "0" * 64
# Changes after 0003 that the read-back must know about; none today. A migration that renames a
# table adds {"old": "new"} to RENAMED_TABLES; one that renames a column adds
# {"table": {"old": "new"}} to COLUMN_CHANGES, one that drops a column {"table": {"col": None}},
# each with a comment saying where the data went (0003 table and column names are the keys).
RENAMED_TABLES: dict[str, str] = {}
COLUMN_CHANGES: dict[str, dict[str, str | None]] = {}
# Columns whose *values* a migration converts on purpose: (table, column) -> the principal-id
# column of the same row. 0005 replaced the owner e-mails copied into the access tables with the
# keyed pseudonym of that principal's owner (vault.identity.owners); the e-mail stays only on the
# principal row, which gained owner_ref.
PSEUDONYMISED: dict[tuple[str, str], str] = {
    ("access_request", "requester_owner"): "requester_id",
    ("review", "reviewer_owner"): "reviewer_id",
    ("access_grant", "owner"): "principal_id",
}
PSEUDONYM_KEY = b"upgrade-test-pseudonym-key-32byt"
OWNER_DOMAIN = b"callvault/v1/owner\x00"
# Central models read back through the ORM, by their name in vault.models and 0003 table.
CENTRAL_MODELS = {
    "Tenant": "tenant", "Principal": "principal", "Recording": "recording",
    "RecordingPurpose": "recording_purpose", "AuditEvent": "audit_event", "Grant": "access_grant",
    "LegalHold": "legal_hold", "ErasureRequest": "erasure_request",
}  # fmt: skip

Row = dict[str, Any]
T0 = datetime(2026, 11, 20, 9, 30, 15, 123456, tzinfo=UTC)
DAY = 24 * 60


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# --- the audit chain's rules, restated here (sha256 over canonical JSON, as vault writes it) ------


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pseudonym(owner: str) -> str:
    """The owner_ref rule, restated: hex HMAC-SHA256 of the domain-separated normalised owner."""
    return hmac.new(PSEUDONYM_KEY, OWNER_DOMAIN + owner.encode("utf-8"), hashlib.sha256).hexdigest()


def owner_refs(owners: Iterable[str]) -> dict[str, str]:
    return {o: pseudonym(o) for o in owners}


def expected(name: str, column: str, row: Row, seeded: dict[str, list[Row]]) -> Any:
    """A seeded value as it must read after the upgrade."""
    principal_id = PSEUDONYMISED.get((name, column))
    if principal_id is None:
        return row[column]
    [owner] = [p["owner"] for p in seeded["principal"] if norm(p["id"]) == norm(row[principal_id])]
    return pseudonym(owner)


def format_ts(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def audit_chain(specs: Sequence[Row]) -> list[Row]:
    """audit_event rows forming a valid chain from genesis, one per spec."""
    rows: list[Row] = []
    prev = GENESIS_HASH
    for seq, spec in enumerate(specs, start=1):
        f: Row = {"actor": None, "outcome": "ok", "tenant_id": None, "target": None,
                  "purpose": None, "grant_id": None, "details": {}, **spec}  # fmt: skip
        event = {k: f[k] for k in ("actor", "action", "outcome", "target", "purpose", "details")}
        event |= {"seq": seq, "chain_id": "global", "ts": format_ts(f["ts"]), "prev_hash": prev}
        event |= {k: None if f[k] is None else str(f[k]) for k in ("tenant_id", "grant_id")}
        canonical = canonical_json(event)
        row = {k: v for k, v in f.items() if k != "details"}
        row |= {"seq": seq, "chain_id": "global", "prev_hash": prev, "hash": sha256_hex(canonical),
                "canonical": canonical}  # fmt: skip
        rows.append(row)
        prev = row["hash"]
    return rows


# --- the data set -----------------------------------------------------------------------------


# Data tables read better dense than one key per line.
# fmt: off
def seed() -> dict[str, list[Row]]:
    """Realistic rows for every 0003 table, as Python values (UUIDs, aware UTC datetimes)."""
    new, hexes = uuid.uuid4, secrets.token_hex
    acme, globex, admin, ingest, engineer, approver, security, leaver = (new() for _ in range(8))
    r_pending, r_failed, r_stored, r_derived, r_bad, r_disposing, r_disposed = (
        new() for _ in range(7)
    )
    req_ok, req_open, g_req, g_bg, hold, hold_old, er_done, er_held = (new() for _ in range(8))
    pub, jo, day30, gone = hexes(32), "eng-jo@acme.example", at(30 * DAY), at(-60)

    people = [(admin, "admin", "admin", True), (ingest, "recorder", "ingest", True),
              (engineer, "eng-jo", "engineer", False), (approver, "appr-sam", "approver", False),
              (security, "sec-kim", "security", True), (leaver, "eng-old", "engineer", False)]
    principals: list[Row] = [
        {"id": i, "name": n, "role": r, "owner": f"{n}@acme.example", "all_tenants": a,
         "created_at": at(k - 990)} for k, (i, n, r, a) in enumerate(people)]
    principals[-1]["revoked_at"] = gone  # a revoked principal

    def recording(rid: uuid.UUID, status: str, tenant: uuid.UUID = acme, **kw: Any) -> Row:
        return {"id": rid, "tenant_id": tenant, "call_id": f"call-{rid.hex[:12]}",
                "status": status, "content_type": "audio/ogg", "object_key": f"{tenant}/{rid}",
                "recorded_at": at(-720), "ingested_at": at(-719), "updated_at": at(-700),
                "created_by": ingest} | kw

    def sealed(n: int, kek: int) -> Row:  # n=4: a size beyond 32 bits (BigInteger)
        return {"size": 1_250_000_000 * n, "ciphertext_size": 1_250_000_000 * n + 2_048,
                "sha256": hexes(32), "ciphertext_sha256": hexes(32), "version_id": hexes(16),
                "kek_version": kek, "wrapped_dek": f"cvk1:{kek}:{secrets.token_urlsafe(60)}"}

    disposed = sealed(1, 1) | {"call_id": None, "sha256": None, "wrapped_dek": None,
                               "disposed_at": at(-30), "dek_destroyed_at": at(-31),
                               "disposal_reason": f"erasure request {er_done}"}
    recordings = [
        recording(r_pending, "pending", recorded_at=at(-3), ingested_at=at(-2), updated_at=at(-2)),
        recording(r_failed, "failed", globex, content_type="video/webm"),
        recording(r_stored, "stored", **sealed(1, 2)),
        recording(r_derived, "stored", content_type="text/vtt", parent_id=r_stored, **sealed(2, 2)),
        recording(r_bad, "integrity_failed", globex, **sealed(3, 2)),
        recording(r_disposing, "disposing", **sealed(4, 2), disposal_reason="all purposes ended"),
        recording(r_disposed, "disposed", **disposed),
    ]
    call_id = recordings[2]["call_id"]
    receipt = canonical_json({
        "type": "callvault.erasure-receipt/v1", "request_id": str(er_done), "on_time": True,
        "tenant_id": str(acme), "created_at": format_ts(at(-100)), "due_at": format_ts(day30),
        "completed_at": format_ts(at(-29)), "holds_checked": [],
        "items": [{"recording_id": str(r_disposed), "kek_version": 1, "deferred_by": None,
                   "ciphertext_sha256": disposed["ciphertext_sha256"], "holds_checked": []}],
    })
    events = audit_chain([
        {"ts": at(-990), "actor": "system:setup", "action": "tenant.create", "tenant_id": acme,
         "target": str(acme), "details": {"name": "acme", "region": "eu-central-1"}},
        {"ts": at(-719), "actor": str(ingest), "action": "recording.ingest", "tenant_id": acme,
         "target": str(r_stored), "purpose": "support", "details": {"size": 1_250_000_000}},
        {"ts": at(-280), "actor": str(approver), "action": "access.approve",
         "target": str(req_ok), "details": {"comment": "Geprüft, ok ✓"}},
        {"ts": at(-55), "action": "auth.denied", "outcome": "denied",
         "details": {"reason": "unknown key prefix"}},
        {"ts": at(-50), "actor": str(security), "action": "grant.break_glass", "grant_id": g_bg,
         "tenant_id": globex, "target": str(r_bad), "purpose": "legal"},
        {"ts": at(-29), "actor": "system:erasure", "action": "erasure.complete",
         "tenant_id": acme, "target": str(er_done), "details": {"items": 1, "on_time": True}},
        {"ts": at(-28), "actor": "system:audit-checkpoint", "action": "audit.checkpoint",
         "details": {"public_key": pub, "prev_checkpoint_seq": None}},
    ])
    head = events[-1]
    statement = canonical_json({
        "chain_id": "global", "head_seq": head["seq"], "head_hash": head["hash"],
        "ts": format_ts(at(-28)), "prev_checkpoint": None, "format": "callvault-checkpoint/1",
    })
    return {
        "tenant": [{"id": acme, "name": "acme", "region": "eu-central-1", "created_at": at(-999)},
                   {"id": globex, "name": "globex.us", "region": None, "created_at": at(-998)}],
        "principal": principals,
        "principal_tenant": [{"principal_id": p, "tenant_id": t} for p, t in [
            (engineer, acme), (engineer, globex), (approver, acme), (leaver, acme)]],
        "api_key": [{"id": new(), "principal_id": p, "prefix": f"cv_{hexes(5)}",
                     "key_hash": hexes(32), "created_at": at(-980), **extra} for p, extra in [
            (admin, {}), (ingest, {"expires_at": at(365 * DAY)}), (leaver, {"revoked_at": gone})]],
        "kek_version": [{"version": 1, "created_at": at(-400 * DAY), "retired_at": at(-29.5)},
                        {"version": 2, "created_at": day30 - timedelta(days=60)}],
        "recording": recordings,
        "recording_purpose": [
            {"recording_id": r_stored, "purpose": "support", "expires_at": at(90 * DAY)},
            {"recording_id": r_stored, "purpose": "quality", "expires_at": day30,
             "ended_at": at(-120), "ended_reason": "consent withdrawn"},
            {"recording_id": r_derived, "purpose": "support", "expires_at": at(90 * DAY)},
            {"recording_id": r_bad, "purpose": "legal", "expires_at": at(-DAY)},  # expired
            {"recording_id": r_pending, "purpose": "training", "expires_at": at(7 * DAY)},
            {"recording_id": r_disposed, "purpose": "support", "expires_at": at(90 * DAY),
             "ended_at": at(-32), "ended_reason": f"erasure request {er_done}"},
        ],
        "access_request": [
            {"id": req_ok, "purpose": "support", "reason": "Customer disputes a refund.",
             "ticket": "SUP-4711", "duration_minutes": 90.0, "requester_id": engineer,
             "requester_owner": jo, "status": "approved", "approvals_required": 1,
             "created_at": at(-300), "expires_at": at(DAY - 300), "decided_at": at(-280),
             "grant_id": g_req},
            {"id": req_open, "purpose": "quality", "reason": "Audio dropouts.", "ticket": "QA-17",
             "duration_minutes": 30.5, "requester_id": engineer, "requester_owner": jo,
             "status": "pending", "approvals_required": 2, "created_at": at(-20),
             "expires_at": at(DAY - 20)},
        ],
        "access_request_recording": [{"request_id": q, "recording_id": r} for q, r in
                                     [(req_ok, r_stored), (req_ok, r_derived), (req_open, r_bad)]],
        "review": [{"id": new(), "request_id": req_ok, "reviewer_id": approver,
                    "reviewer_owner": "appr-sam@acme.example", "decision": "approve",
                    "comment": "Ticket checked.", "created_at": at(-280)}],
        "access_grant": [
            {"id": g_req, "kind": "request", "principal_id": engineer, "owner": jo,
             "purpose": "support", "request_id": req_ok, "not_before": at(-280),
             "expires_at": at(-190), "created_at": at(-280), "expired_at": at(-189),
             "needs_review": False},
            {"id": g_bg, "kind": "break_glass", "principal_id": security, "purpose": "legal",
             "owner": "sec-kim@acme.example", "not_before": at(-50), "expires_at": at(-20),
             "created_at": at(-50), "revoked_at": at(-25), "revoked_by": admin,
             "incident_ref": "INC-2026-118", "reason": "Fraud case, bank asked within the hour.",
             "needs_review": True, "reviewed_at": at(-10), "reviewed_by": approver,
             "review_comment": "Justified.", "overdue_flagged_at": at(-12)},
        ],
        "grant_recording": [{"grant_id": g, "recording_id": r} for g, r in
                            [(g_req, r_stored), (g_req, r_derived), (g_bg, r_bad)]],
        "audit_event": events,
        "audit_checkpoint": [  # id left to the database (autoincrement)
            {"chain_id": "global", "head_seq": head["seq"], "head_hash": head["hash"],
             "created_at": at(-28), "public_key": pub, "signature": hexes(64),
             "statement": statement, "version_id": hexes(16),
             "object_key": f"audit/checkpoints/global/{head['seq']:020d}.json"}],
        "legal_hold": [
            {"id": hold, "case_ref": "CASE-2026-0042 Müller v. Acme", "created_by": str(admin),
             "reason": "Litigation hold on the disputed contract.", "created_at": at(-200),
             "tenant_id": acme, "call_id": call_id, "selects_future": True,
             "recorded_from": at(-30 * DAY), "recorded_to": at(DAY)},
            {"id": hold_old, "case_ref": "CASE-2025-0007", "reason": "Regulator inquiry.",
             "created_by": str(admin), "created_at": at(-400), "released_at": at(-20),
             "released_by": str(admin), "release_reason": "Closed.", "selects_future": False},
        ],
        "hold_membership": [{"hold_id": h, "recording_id": r, "created_at": at(t)} for h, r, t in
                            [(hold, r_stored, -200), (hold, r_derived, -200),
                             (hold_old, r_disposing, -400)]],
        "erasure_request": [
            {"id": er_done, "status": "complete", "tenant_id": acme, "call_id": None,
             "reason": "data subject deletion request", "created_by": str(admin),
             "created_at": at(-100), "due_at": day30, "completed_at": at(-29),
             "receipt": receipt, "receipt_signature": hexes(64)},
            {"id": er_held, "status": "deferred", "tenant_id": acme, "call_id": call_id,
             "reason": "Art. 17 GDPR request", "created_by": str(admin), "created_at": at(-50),
             "due_at": day30 - timedelta(minutes=50)},
        ],
        "erasure_item": [
            {"request_id": er_done, "recording_id": r_disposed, "kek_version": 1,
             "ciphertext_sha256": disposed["ciphertext_sha256"], "dek_destroyed_at": at(-31),
             "media_destroyed_at": at(-30), "kek_retired_at": at(-29.5)},
            {"request_id": er_held, "recording_id": r_stored, "deferred_by": hold}],
        "job_lease": [
            {"name": "kek-cycle", "holder": f"worker-a:4026531836:4242:{hexes(4)}",
             "expires_at": at(5), "last_run_at": at(-29.5)},
            {"name": "audit-checkpoint", "holder": "worker-b:4026531836:77:9f3c",
             "expires_at": at(-27)}],
    }
# fmt: on


# --- plain SQL helpers ----------------------------------------------------------------------


def to_db(dialect: str, value: Any) -> Any:
    """What the app's column types bind: on SQLite a UUID is 32 hex digits, a time naive UTC."""
    if dialect == "sqlite" and isinstance(value, uuid.UUID):
        return value.hex
    if dialect == "sqlite" and isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def norm(value: Any) -> Any:
    """One comparable form on both dialects: UUIDs as hex, timestamps as aware UTC."""
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def reflect(engine: Engine) -> sa.MetaData:
    meta = sa.MetaData()
    meta.reflect(engine)
    return meta


def read_all(conn: sa.Connection, table: sa.Table) -> list[Row]:
    return [{k: norm(v) for k, v in r.items()} for r in conn.execute(sa.select(table)).mappings()]


def index_by(rows: list[Row], key: list[str]) -> dict[tuple[Any, ...], Row]:
    return {tuple(norm(r[c]) for c in key): r for r in rows}


@dataclass(frozen=True)
class Upgraded:
    engine: Engine
    seeded: dict[str, list[Row]]  # as written, in Python values
    before: dict[str, list[Row]]  # every 0003 row as read back at 0003, normalised
    primary_keys: dict[str, list[str]]  # per 0003 table


@pytest.fixture(params=["sqlite", "postgres"])
def upgraded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Upgraded]:
    """A database populated at 0003, then upgraded to head."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'callvault.db'}"
    else:
        url = request.getfixturevalue("pg_database")
    engine = vault.db.create_engine(url)
    try:
        cfg = vault.db._alembic_config(engine)
        command.upgrade(cfg, RELEASED)
        assert vault.db.current_revision(engine) == RELEASED
        meta = reflect(engine)
        tables = {n: t for n, t in meta.tables.items() if n != "alembic_version"}
        seeded = seed()
        assert set(seeded) <= set(tables), f"not in {RELEASED}: {set(seeded) - set(tables)}"
        with engine.begin() as conn:
            for table in meta.sorted_tables:  # parents first; within a table, list order
                for row in seeded.get(table.name, []):
                    values = {k: to_db(engine.dialect.name, v) for k, v in row.items()}
                    result = conn.execute(table.insert().values(values))
                    pk = zip(table.primary_key.columns, result.inserted_primary_key, strict=True)
                    for column, value in pk:
                        row.setdefault(column.name, value)  # autoincrement ids
        keys = {n: [c.name for c in t.primary_key.columns] for n, t in tables.items()}
        with engine.connect() as conn:
            before = {n: read_all(conn, t) for n, t in tables.items()}
        empty = sorted(n for n, rows in before.items() if not rows)
        assert not empty, f"{RELEASED} tables without rows: {empty}; add them to seed()"
        for name, rows in seeded.items():  # the rows went in as meant
            stored = index_by(before[name], keys[name])
            for row in rows:
                got = stored[tuple(norm(row[c]) for c in keys[name])]
                assert {k: got[k] for k in row} == {k: norm(v) for k, v in row.items()}, name
        vault.db.migrate(engine, owner_refs=owner_refs)  # the upgrade path `callvault init` takes
        yield Upgraded(engine, seeded, before, keys)
    finally:
        engine.dispose()


# --- tests ----------------------------------------------------------------------------------


def test_upgrade_reaches_script_head(upgraded: Upgraded) -> None:
    cfg = vault.db._alembic_config(upgraded.engine)
    head = ScriptDirectory.from_config(cfg).get_current_head()  # raises on several heads
    assert head is not None
    assert vault.db.current_revision(upgraded.engine) == head


def test_every_0003_row_reads_back_unchanged(upgraded: Upgraded) -> None:
    after = reflect(upgraded.engine)
    problems: set[str] = set()
    with upgraded.engine.connect() as conn:
        for name, rows in upgraded.before.items():
            table = after.tables.get(RENAMED_TABLES.get(name, name))
            if table is None:
                problems.add(f"table {name} is gone (declare it in RENAMED_TABLES)")
                continue
            changes = COLUMN_CHANGES.get(name, {})
            now = read_all(conn, table)
            if len(now) != len(rows):
                problems.add(f"{name}: {len(rows)} rows before, {len(now)} after")
            by_key = index_by(now, [changes.get(c) or c for c in upgraded.primary_keys[name]])
            for row in rows:
                key = tuple(row[c] for c in upgraded.primary_keys[name])
                got = by_key.get(key)
                if got is None:
                    problems.add(f"{name} {key}: row lost")
                    continue
                for column in row:
                    value = norm(expected(name, column, row, upgraded.before))
                    target = changes.get(column, column)
                    if target is None:
                        continue  # dropped on purpose, see COLUMN_CHANGES
                    if target not in got:
                        problems.add(f"{name}.{column} is gone (declare it in COLUMN_CHANGES)")
                    elif got[target] != value:
                        problems.add(f"{name}.{column} {key}: {value!r} became {got[target]!r}")
    assert not problems, "\n".join(sorted(problems))


def test_models_load_upgraded_rows(upgraded: Upgraded) -> None:
    models = {name: getattr(m, name) for name in CENTRAL_MODELS}  # whatever module defines them
    with Session(upgraded.engine) as session:
        for model_name, table in CENTRAL_MODELS.items():
            model = models[model_name]
            changes = COLUMN_CHANGES.get(table, {})
            for row in upgraded.seeded[table]:
                ident = {changes.get(c) or c: row[c] for c in upgraded.primary_keys[table]}
                obj = session.get(model, ident)
                assert obj is not None, f"{model_name} {ident} not found"
                for column in row:
                    value = expected(table, column, row, upgraded.seeded)
                    attr = changes.get(column, column)
                    if attr is None:
                        continue
                    got = getattr(obj, attr)
                    if isinstance(got, datetime):
                        assert got.utcoffset() == timedelta(0), f"{model_name}.{attr} not UTC"
                    assert norm(got) == norm(value), f"{model_name}.{attr} of {ident}"
        recordings = session.exec(select(models["Recording"])).all()
        by_status = {r.status: r for r in recordings}
        assert set(by_status) >= {"pending", "stored", "integrity_failed", "disposing", "disposed"}
        disposed = by_status["disposed"]
        assert (disposed.call_id, disposed.sha256, disposed.wrapped_dek) == (None, None, None)
        child = next(r for r in recordings if r.parent_id is not None)  # the derivative
        assert session.get(models["Recording"], child.parent_id).status == "stored"
        grants = {g.kind: g for g in session.exec(select(models["Grant"])).all()}
        assert grants["break_glass"].needs_review and grants["break_glass"].incident_ref
        done = next(e for e in session.exec(select(models["ErasureRequest"])).all()
                    if e.status == "complete")  # fmt: skip
        assert json.loads(done.receipt)["type"] == "callvault.erasure-receipt/v1"


def test_audit_chain_still_verifies(upgraded: Upgraded) -> None:
    after = reflect(upgraded.engine)
    ae, cp = after.tables["audit_event"], after.tables["audit_checkpoint"]
    with upgraded.engine.connect() as conn:
        events = read_all(conn, ae)
        checkpoint = read_all(conn, cp)
    assert len(events) == len(upgraded.seeded["audit_event"])
    prev = GENESIS_HASH
    for seq, row in enumerate(sorted(events, key=lambda r: r["seq"]), start=1):
        event = json.loads(row["canonical"])
        assert canonical_json(event) == row["canonical"]
        assert sha256_hex(row["canonical"]) == row["hash"]
        assert row["seq"] == event["seq"] == seq
        assert row["prev_hash"] == event["prev_hash"] == prev
        assert event["ts"] == format_ts(row["ts"])
        for column in ("tenant_id", "grant_id"):
            value = row[column]
            assert event[column] == (None if value is None else str(uuid.UUID(str(value))))
        prev = row["hash"]
    [cp_row] = checkpoint
    statement = json.loads(cp_row["statement"])
    assert (statement["head_seq"], statement["head_hash"]) == (len(events), prev)
    assert (cp_row["head_seq"], cp_row["head_hash"]) == (len(events), prev)


def test_the_chain_becomes_the_first_leaves_of_the_merkle_log(upgraded: Upgraded) -> None:
    """0008: the chain's head is recorded; the sequencer takes its events in seq order, new
    events follow them, and the whole log verifies."""
    from vault import audit
    from vault.audit import tree
    from vault.tags import AuditAction

    db = vault.db.Database(upgraded.engine)
    events = sorted(upgraded.seeded["audit_event"], key=lambda r: r["seq"])
    with db.reading() as s:
        state = tree.state(s)
        assert state is not None
        assert (state.legacy_head_seq, state.legacy_head_hash) == (len(events), events[-1]["hash"])
    with db.transaction() as s:
        new = audit.record(s, action=AuditAction.recording_read, actor="a", now=datetime.now(UTC))
    assert new.seq == len(events) + 1
    assert tree.sequence(db, wait=True) == len(events) + 1
    with db.reading() as s:
        result = audit.verify(s)
        assert result.ok, result.reason
        assert result.legacy_head == (len(events), events[-1]["hash"])
        leaves = s.exec(select(m.AuditEvent.seq, m.AuditEvent.leaf_index)).all()
    assert sorted(leaves) == [(seq, seq - 1) for seq in range(1, len(events) + 2)]


def test_audit_event_stays_append_only(upgraded: Upgraded) -> None:
    engine = upgraded.engine
    ae = reflect(engine).tables["audit_event"]
    refused: list[sa.Executable] = [
        sa.update(ae).where(ae.c.seq == 1).values(outcome="denied"),
        sa.delete(ae).where(ae.c.seq == 1),
    ]
    if engine.dialect.name == "postgresql":
        refused.append(sa.text("TRUNCATE audit_event"))
    for statement in refused:
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(statement)
    with engine.connect() as conn:  # and nothing of the refused statements stuck
        now = {r["seq"]: r for r in read_all(conn, ae)}
    assert len(now) == len(upgraded.before["audit_event"])
    assert all({k: now[r["seq"]][k] for k in r} == r for r in upgraded.before["audit_event"])


def test_owners_are_pseudonymised_and_the_emails_stay_on_the_principal_row(
    upgraded: Upgraded,
) -> None:
    """0005: every owner copy outside the principal row became its keyed pseudonym."""
    after = reflect(upgraded.engine)
    emails = {p["owner"] for p in upgraded.seeded["principal"]}
    with upgraded.engine.connect() as conn:
        principals = read_all(conn, after.tables["principal"])
        assert {(p["owner"], p["owner_ref"]) for p in principals} == {
            (e, pseudonym(e)) for e in emails
        }
        for (table, column), _ in PSEUDONYMISED.items():
            values = {r[column] for r in read_all(conn, after.tables[table])}
            assert values and not values & emails, f"{table}.{column} still holds e-mails"
            assert values <= {pseudonym(e) for e in emails}


def test_upgrade_without_the_key_provider_refuses_and_changes_nothing(tmp_path: Path) -> None:
    engine = vault.db.create_engine(f"sqlite:///{tmp_path / 'callvault.db'}")
    try:
        command.upgrade(vault.db._alembic_config(engine), RELEASED)
        principal = reflect(engine).tables["principal"]
        with engine.begin() as conn:
            conn.execute(principal.insert().values(
                id=str(uuid.uuid4()).replace("-", ""), name="jo", role="engineer",
                owner="jo@acme.example", all_tenants=False, created_at=T0,
            ))  # fmt: skip
        with pytest.raises(MisconfiguredError, match="key provider"):
            vault.db.migrate(engine)  # no owner_refs: e-mails would stay in the access tables
        assert vault.db.current_revision(engine) == RELEASED
    finally:
        engine.dispose()
