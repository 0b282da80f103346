"""Legacy chain checkpoints: Ed25519 statements over the hash chain's head, from before the audit
log became a Merkle log. No longer written (signed tree heads, :mod:`vault.audit.heads`, took
their place); every existing one is still verified, and a statement still waiting for its
signature or its export at the upgrade is finished by the next ``audit-checkpoint`` run.

A checkpoint signs (chain_id, head_seq, head_hash) and links to its predecessor, so a verifier
holding the *trusted* public key proves that the event at head_seq still has that hash, that the
chain still reaches it, and that no checkpoint row went missing. Statements are signed documents
(:mod:`vault.audit.signing`) of type ``CHECKPOINT``: version 2, or version 1, the legacy form
(``"format": "callvault-checkpoint/1"``, no type), verified as before.

Copies are at ``audit/checkpoints/{chain_id}/{head_seq:020d}.json`` (COMPLIANCE retention).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlmodel import Session, col, select

from vault.audit import signed_rows, signing
from vault.audit.chain import GLOBAL_CHAIN, hash_canonical
from vault.audit.signed_rows import PUBLIC_KEY_OBJECT, trusted_public_key
from vault.context import Context
from vault.models import AuditCheckpoint, AuditCheckpointPublic, AuditEvent
from vault.tags import AuditAction

__all__ = [
    "PUBLIC_KEY_OBJECT", "Finding", "check_checkpoints", "list_checkpoints", "trusted_public_key",
]  # fmt: skip

DOC_TYPE, VERSION = signing.CHECKPOINT, 2
ACTOR = "system:audit-checkpoint"
EXPORT_PREFIX = "audit/checkpoints"
VERIFY_BATCH = 500
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
statement_hash = hash_canonical


def _prev_link(prev: AuditCheckpoint | None) -> dict[str, Any] | None:
    return None if prev is None else {"seq": prev.head_seq, "hash": statement_hash(prev.statement)}


# --- finishing what the upgrade left ----------------------------------------------------------


def sign_pending(ctx: Context) -> dict[int, AuditCheckpoint]:
    return signed_rows.sign_pending(ctx, AuditCheckpoint)


def export_pending(ctx: Context, *, now: datetime) -> dict[int, tuple[str, str | None]]:
    return signed_rows.export_pending(
        ctx, AuditCheckpoint, lambda row: export_key(row.chain_id, row.head_seq), now=now
    )


# --- verification --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """Something wrong at ``seq``; ``rank`` orders findings at the same seq (lower: the more
    precise, the event walk's own)."""

    seq: int
    checkpoint_id: int | None
    reason: str
    rank: int = 1
    head_id: int | None = None


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


def check_checkpoints(
    session: Session, verifier: Ed25519PublicKey, chain_head: int, chain_id: str = GLOBAL_CHAIN
) -> tuple[int, int | None, list[Finding]]:
    checked, good, findings = 0, 0, []
    prev: AuditCheckpoint | None = None
    unsigned: AuditCheckpoint | None = None
    for cp in _checkpoints(session, chain_id):
        if unsigned is not None:  # only the newest may still wait for its signature
            findings.append(Finding(unsigned.head_seq, unsigned.id, "checkpoint was never signed"))
            unsigned = None
        if cp.signature is None:
            unsigned = cp  # its run is signing it now, or died before: the next run signs it
            continue
        checked += 1
        stmt = _parse_statement(cp, verifier)
        if isinstance(stmt, str):
            # Not authentic: it must not become the link the next genuine checkpoint is held to.
            findings.append(Finding(cp.head_seq, cp.id, stmt))
            continue
        if stmt["prev_checkpoint"] != _prev_link(prev):
            where = "nothing" if prev is None else f"checkpoint {prev.id} (seq {prev.head_seq})"
            reason = f"prev_checkpoint does not link to {where}: a checkpoint is missing"
            findings.append(Finding(cp.head_seq, cp.id, reason))
        prev = cp
        problem = _check_one(session, cp, chain_head, good)
        if problem is None:
            good = cp.head_seq
        else:
            findings.append(Finding(problem[0], cp.id, problem[1]))
    # Each legacy audit.checkpoint event was written with its row: a missing row was deleted.
    orphan = session.exec(
        select(sa.func.min(AuditEvent.seq)).where(
            AuditEvent.chain_id == chain_id,
            col(AuditEvent.prev_hash).is_not(None),
            AuditEvent.action == AuditAction.audit_checkpoint.value,
            ~sa.exists().where(
                AuditCheckpoint.chain_id == AuditEvent.chain_id,
                AuditCheckpoint.head_seq == AuditEvent.seq,
            ),
        )
    ).first()
    if orphan is not None:
        findings.append(Finding(int(orphan), None, "the checkpoint of this event was deleted"))
    return checked, None if prev is None else prev.head_seq, findings


# --- listing ---------------------------------------------------------------------------------


def list_checkpoints(
    session: Session, *, limit: int = 100, after_id: int = 0
) -> list[AuditCheckpointPublic]:
    return signed_rows.list_page(
        session, AuditCheckpoint, AuditCheckpointPublic, after_id=after_id, limit=limit,
        signed_only=False,
    )  # fmt: skip
