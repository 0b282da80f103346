"""Signed audit checkpoints: Ed25519 statements over the chain head, exported to the object store.

The hash chain alone cannot see a truncated tail, nor a chain rewritten from some event onward
with every later hash recomputed. A checkpoint closes both gaps: it signs (chain_id, head_seq,
head_hash), so a verifier holding the *trusted* public key can prove that the event at head_seq
still has that hash and that the chain still reaches it. Checkpoints link to their predecessor,
so a deleted or reordered checkpoint row is caught too.

Each checkpoint is anchored in the chain itself: its ``audit.checkpoint`` event is written first
and is the head the statement signs. Re-running with no new events is therefore a no-op.

Statements are signed documents (:mod:`vault.audit.signing`) of type ``CHECKPOINT``: version 2
today; version 1 is the legacy form (``"format": "callvault-checkpoint/1"``, no type) that older
rows still carry, and is verified as before.

Copies go to ``audit/checkpoints/{chain_id}/{head_seq:020d}.json`` (COMPLIANCE retention where the
bucket has Object Lock) for outsiders, with the signer's public key beside them in
``audit/checkpoints/public-key.json``. Verification never trusts either copy: the key comes from
the key provider or from ``CALLVAULT_AUDIT_PUBLIC_KEY`` (:func:`trusted_public_key`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlmodel import Session, col, select

from vault import audit
from vault.audit import signing
from vault.config import ConfigError
from vault.context import Context
from vault.errors import IntegrityError, InvalidInputError, StorageError
from vault.models import AuditCheckpoint, AuditCheckpointPublic, AuditEvent
from vault.tags import AuditAction

log = logging.getLogger("callvault.audit")

DOC_TYPE, VERSION = signing.CHECKPOINT, 2
ACTOR = "system:audit-checkpoint"
EXPORT_PREFIX = "audit/checkpoints"
PUBLIC_KEY_OBJECT = f"{EXPORT_PREFIX}/public-key.json"
# Exports outlive any audit-log retention an operator is likely to choose; COMPLIANCE mode means
# nobody (root credential included) can shorten this, so keep it finite.
EXPORT_RETENTION = timedelta(days=3650)
MAX_LIST_LIMIT, VERIFY_BATCH = 1000, 500
_BODY_FIELDS = frozenset({"chain_id", "head_seq", "head_hash", "ts", "prev_checkpoint"})
# The exact fields of a verified statement, per version. v1 rows carry "format" instead of
# type/version; signing.LEGACY reads that marker as type + version, so both look alike here.
_STATEMENT_FIELDS: dict[int, frozenset[str]] = {
    1: _BODY_FIELDS | {"type", "version"},
    2: _BODY_FIELDS | {"type", "version"},
}


def export_key(chain_id: str, head_seq: int) -> str:
    return f"{EXPORT_PREFIX}/{chain_id}/{head_seq:020d}.json"


# Statements are canonical JSON like audit events, hashed the same way.
statement_hash = audit.hash_canonical


def _prev_link(prev: AuditCheckpoint | None) -> dict[str, Any] | None:
    return None if prev is None else {"seq": prev.head_seq, "hash": statement_hash(prev.statement)}


def _latest(session: Session, chain_id: str) -> AuditCheckpoint | None:
    query = select(AuditCheckpoint).where(AuditCheckpoint.chain_id == chain_id)
    order = (col(AuditCheckpoint.head_seq).desc(), col(AuditCheckpoint.id).desc())
    return session.exec(query.order_by(*order).limit(1)).first()


def _event_hash(session: Session, chain_id: str, seq: int) -> str | None:
    query = select(AuditEvent.hash).where(AuditEvent.chain_id == chain_id, AuditEvent.seq == seq)
    return session.exec(query).first()


# --- writing -------------------------------------------------------------------------------------


def write_checkpoint(ctx: Context, *, now: datetime) -> AuditCheckpoint | None:
    """Checkpoint the global chain's head; None when the newest checkpoint already covers it.

    No transaction is open while the key provider signs: the ``audit.checkpoint`` event and the
    statement are committed first (the row waiting for its signature), then the statement is
    signed and the signature recorded. A run that dies in between is finished by the next one,
    which signs what is waiting before it writes anything new. Exports that failed earlier are
    retried either way.
    """
    chain_id = audit.GLOBAL_CHAIN
    sign_pending(ctx)
    public_key = ctx.keys.signing_public_key().hex()
    pending: AuditCheckpoint | None = None
    with ctx.db.transaction() as session:
        # The append lock keeps the head still, and serialises two workers.
        audit.acquire_append_lock(session)
        head_seq, head_hash = audit.head(session, chain_id)
        prev = _latest(session, chain_id)
        # Never sign a chain that contradicts the last signature: refuse loudly instead.
        if prev is not None and _event_hash(session, chain_id, prev.head_seq) != prev.head_hash:
            raise IntegrityError(
                f"audit chain no longer matches checkpoint {prev.id} at seq {prev.head_seq}; "
                "run `callvault audit verify`"
            )
        waiting = prev is not None and prev.signature is None  # another run is signing it
        covered = prev is not None and (prev.head_seq, prev.head_hash) == (head_seq, head_hash)
        if not waiting and not covered:
            event = audit.record(
                session, action=AuditAction.audit_checkpoint, actor=ACTOR, now=now,
                details={"public_key": public_key,
                         "prev_checkpoint_seq": None if prev is None else prev.head_seq},
            )  # fmt: skip
            statement = signing.prepare_document(
                doc_type=DOC_TYPE, version=VERSION,
                body={"chain_id": chain_id, "head_seq": event.seq, "head_hash": event.hash,
                      "ts": audit.format_ts(now), "prev_checkpoint": _prev_link(prev)},
            )  # fmt: skip
            pending = AuditCheckpoint(
                chain_id=chain_id, head_seq=event.seq, head_hash=event.hash, created_at=now,
                public_key=public_key, signature=None, statement=statement,
            )  # fmt: skip
            session.add(pending)
            session.flush()
    signed = sign_pending(ctx)
    exported = export_pending(ctx, now=now)
    if pending is None:
        return None
    checkpoint = signed.get(pending.id or 0, pending)
    if checkpoint.id in exported:
        checkpoint.object_key, checkpoint.version_id = exported[checkpoint.id]
    return checkpoint


def sign_pending(ctx: Context) -> dict[int, AuditCheckpoint]:
    """Sign every statement still waiting for its signature (outside any transaction), and
    record each signature with a compare-and-set; returns the rows signed, by id."""
    with ctx.db.reading() as session:
        waiting = session.exec(
            select(AuditCheckpoint)
            .where(col(AuditCheckpoint.signature).is_(None))
            .order_by(col(AuditCheckpoint.id))
        ).all()
    done: dict[int, AuditCheckpoint] = {}
    for row in waiting:
        signature = signing.sign_canonical(ctx.keys, row.statement).signature
        with ctx.db.transaction() as session:
            session.execute(
                sa.update(AuditCheckpoint)
                .where(col(AuditCheckpoint.id) == row.id, col(AuditCheckpoint.signature).is_(None))
                .values(signature=signature)
            )
        row.signature = signature
        done[int(row.id or 0)] = row
    return done


def export_document(checkpoint: AuditCheckpoint) -> bytes:
    """What outsiders get: the exact signed bytes, the signature and the signer's key (hex)."""
    doc = {
        "statement": checkpoint.statement,
        "signature": checkpoint.signature,
        "public_key": checkpoint.public_key,
    }
    return (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode("utf-8")


def export_pending(ctx: Context, *, now: datetime) -> dict[int, tuple[str, str | None]]:
    """Upload every checkpoint not yet exported; {id: (object_key, version_id)} of those done.

    A store outage is logged and left for the next run: the DB checkpoint stands on its own.
    """
    with ctx.db.reading() as session:
        pending = session.exec(
            select(AuditCheckpoint)
            .where(
                col(AuditCheckpoint.object_key).is_(None),
                col(AuditCheckpoint.signature).is_not(None),
            )
            .order_by(col(AuditCheckpoint.id))
        ).all()
    done: dict[int, tuple[str, str | None]] = {}
    if not pending:
        return done
    try:
        publish_public_key(ctx)
        for row in pending:
            key = export_key(row.chain_id, row.head_seq)
            version = export_signed(ctx, AuditCheckpoint, row.id, key, export_document(row), now)
            assert row.id is not None
            done[row.id] = (key, version)
    except StorageError as exc:
        log.warning("audit checkpoint export failed (will retry next run): %s", exc)
    return done


def export_signed(
    ctx: Context, table: Any, row_id: Any, key: str, data: bytes, now: datetime
) -> str | None:
    """Put one signed document under COMPLIANCE retention (no transaction open), then record
    where on its row (``object_key``, ``version_id``); the version id. Checkpoints and the
    retention records (:mod:`vault.retention.records`) are exported this one way."""
    version = ctx.store.put_bytes(key, data, retention_until=now + EXPORT_RETENTION)
    with ctx.db.transaction() as session:
        session.execute(
            sa.update(table).where(table.id == row_id).values(object_key=key, version_id=version)
        )
    return version


def publish_public_key(ctx: Context) -> None:
    """Overwrite the published key (no retention: it must follow a key change)."""
    doc = {"algorithm": "ed25519", "public_key": ctx.keys.signing_public_key().hex()}
    ctx.store.put_bytes(PUBLIC_KEY_OBJECT, (json.dumps(doc, sort_keys=True) + "\n").encode())


# --- trust -----------------------------------------------------------------------------------


def trusted_public_key(ctx: Context) -> bytes:
    """The pinned key if configured, else the key provider's; never a copy from DB or store."""
    pinned = ctx.settings.audit_public_key
    if pinned:
        try:
            key = bytes.fromhex(pinned.strip())
        except ValueError:
            key = b""
        if len(key) != 32:
            raise ConfigError("CALLVAULT_AUDIT_PUBLIC_KEY must be 64 hex digits (Ed25519)")
        return key
    return ctx.keys.signing_public_key()


# --- verification --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckpointVerifyResult:
    """``ok`` only when the chain and every checkpoint hold; else the earliest finding."""

    ok: bool
    chain: audit.VerifyResult
    checkpoints_checked: int
    latest_checkpoint_seq: int | None
    first_bad_seq: int | None = None
    checkpoint_id: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class _Finding:
    seq: int
    checkpoint_id: int | None
    reason: str
    rank: int = 1  # at equal seqs the chain's own finding (rank 0) is the more precise one


def _checkpoints(session: Session, chain_id: str) -> Iterator[AuditCheckpoint]:
    """Checkpoints by (head_seq, id), in keyset batches: constant memory."""
    last: tuple[int, int] | None = None
    while True:
        query = select(AuditCheckpoint).where(AuditCheckpoint.chain_id == chain_id)
        if last is not None:
            key = sa.tuple_(col(AuditCheckpoint.head_seq), col(AuditCheckpoint.id))
            query = query.where(key > sa.tuple_(*last))
        order = (col(AuditCheckpoint.head_seq), col(AuditCheckpoint.id))
        rows = session.exec(query.order_by(*order).limit(VERIFY_BATCH)).all()
        yield from rows
        if len(rows) < VERIFY_BATCH:
            return
        last = (rows[-1].head_seq, int(rows[-1].id or 0))


def _parse_statement(cp: AuditCheckpoint, verifier: Ed25519PublicKey) -> dict[str, Any] | str:
    """The signed statement (v1 read through the legacy rule), or why it cannot be trusted."""
    try:
        stmt = signing.verify_document(
            verifier, cp.statement, cp.signature,
            doc_type=DOC_TYPE, versions=_STATEMENT_FIELDS.keys(),
        )  # fmt: skip
    except signing.SignedDocumentError as exc:
        return exc.reason
    if set(stmt) != _STATEMENT_FIELDS[stmt["version"]]:
        return "statement does not have the checkpoint fields"
    signed = (stmt["chain_id"], stmt["head_seq"], stmt["head_hash"])
    if signed != (cp.chain_id, cp.head_seq, cp.head_hash):
        return "checkpoint columns differ from the signed statement"
    return stmt


def _check_one(
    session: Session, cp: AuditCheckpoint, chain_head: int, good: int
) -> tuple[int, str] | None:
    """(bad seq, reason) when the chain contradicts this authentic checkpoint."""
    if cp.head_seq > chain_head:
        # The tail was cut below a signed head: the first missing seq is the bad one.
        return chain_head + 1, (
            f"events deleted: the chain ends at seq {chain_head} but checkpoint {cp.id} "
            f"signs seq {cp.head_seq}"
        )
    row = session.exec(
        select(AuditEvent.hash, AuditEvent.action).where(
            AuditEvent.chain_id == cp.chain_id, AuditEvent.seq == cp.head_seq
        )
    ).first()
    if row is None:
        return cp.head_seq, f"event signed by checkpoint {cp.id} is missing"
    if row[0] != cp.head_hash:
        # Hashes alone cannot say which event changed: only that it lies after the last match.
        return cp.head_seq, (
            f"event hash differs from signed checkpoint {cp.id}: the chain was rewritten "
            f"after seq {good}"
        )
    if row[1] != AuditAction.audit_checkpoint.value:
        return cp.head_seq, f"checkpoint {cp.id} does not sign an audit.checkpoint event"
    return None


def _check_checkpoints(
    session: Session, chain_id: str, verifier: Ed25519PublicKey, chain_head: int
) -> tuple[int, int | None, list[_Finding]]:
    checked, good, findings = 0, 0, []
    prev: AuditCheckpoint | None = None
    unsigned: AuditCheckpoint | None = None
    for cp in _checkpoints(session, chain_id):
        if unsigned is not None:  # only the newest may still wait for its signature
            findings.append(_Finding(unsigned.head_seq, unsigned.id, "checkpoint was never signed"))
            unsigned = None
        if cp.signature is None:
            unsigned = cp  # its run is signing it now, or died before: the next run signs it
            continue
        checked += 1
        stmt = _parse_statement(cp, verifier)
        if isinstance(stmt, str):
            # Not authentic: it must not become the link the next genuine checkpoint is held to.
            findings.append(_Finding(cp.head_seq, cp.id, stmt))
            continue
        if stmt["prev_checkpoint"] != _prev_link(prev):
            where = "nothing" if prev is None else f"checkpoint {prev.id} (seq {prev.head_seq})"
            reason = f"prev_checkpoint does not link to {where}: a checkpoint is missing"
            findings.append(_Finding(cp.head_seq, cp.id, reason))
        prev = cp
        problem = _check_one(session, cp, chain_head, good)
        if problem is None:
            good = cp.head_seq
        else:
            findings.append(_Finding(problem[0], cp.id, problem[1]))
    # Each audit.checkpoint event was written with its row: a missing row was deleted.
    orphan = session.exec(
        select(sa.func.min(AuditEvent.seq)).where(
            AuditEvent.chain_id == chain_id,
            AuditEvent.action == AuditAction.audit_checkpoint.value,
            ~sa.exists().where(
                AuditCheckpoint.chain_id == AuditEvent.chain_id,
                AuditCheckpoint.head_seq == AuditEvent.seq,
            ),
        )
    ).first()
    if orphan is not None:
        findings.append(_Finding(int(orphan), None, "the checkpoint of this event was deleted"))
    return checked, None if prev is None else prev.head_seq, findings


def verify_all(
    session: Session, *, public_key: bytes, chain_id: str = audit.GLOBAL_CHAIN
) -> CheckpointVerifyResult:
    """Verify the chain, then every checkpoint under ``public_key`` (pass
    :func:`trusted_public_key`); the earliest problem found is reported."""
    verifier = Ed25519PublicKey.from_public_bytes(public_key)
    chain = audit.verify(session, chain_id=chain_id)
    chain_head, _ = audit.head(session, chain_id)
    checked, latest, findings = _check_checkpoints(session, chain_id, verifier, chain_head)
    if not chain.ok:
        assert chain.first_bad_seq is not None
        findings.append(_Finding(chain.first_bad_seq, None, chain.reason or "chain broken", 0))
    if not findings:
        return CheckpointVerifyResult(True, chain, checked, latest)
    first = min(findings, key=lambda f: (f.seq, f.rank))
    return CheckpointVerifyResult(
        False, chain, checked, latest, first.seq, first.checkpoint_id, first.reason
    )


# --- listing ---------------------------------------------------------------------------------


def list_checkpoints(
    session: Session, *, limit: int = 100, after_id: int = 0
) -> list[AuditCheckpointPublic]:
    if after_id < 0:
        raise InvalidInputError("after_id must be >= 0")
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidInputError(f"limit must be between 1 and {MAX_LIST_LIMIT}")
    query = select(AuditCheckpoint).where(col(AuditCheckpoint.id) > after_id)
    rows = session.exec(query.order_by(col(AuditCheckpoint.id)).limit(limit)).all()
    return [AuditCheckpointPublic.model_validate(r, from_attributes=True) for r in rows]
