"""``callvault audit verify`` in the database: the events, the tree, and every signature over them.

:func:`verify_all` walks the events and the tree (:mod:`vault.audit.walk`), taking the root and
per-tenant counts at each signed head's size, then holds every head to them under the *trusted*
key: its signature, its link to the previous head, its root, its counts and the legacy chain
head it records. Legacy chain checkpoints are checked as before. Consecutive heads are consistent
because both roots are recomputed from the same leaves (a stronger check than a proof).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlmodel import Session, col, select

from vault.audit import checkpoints, heads
from vault.audit.checkpoints import Finding
from vault.audit.walk import VerifyResult, verify
from vault.models import AuditEvent, AuditTreeHead

BATCH = 500


@dataclass(frozen=True, slots=True)
class LogVerifyResult:
    """``ok`` only when the events, the tree, every head and every checkpoint hold; else the
    earliest finding."""

    ok: bool
    events: VerifyResult
    heads_checked: int
    latest_tree_size: int | None
    checkpoints_checked: int
    latest_checkpoint_seq: int | None
    first_bad_seq: int | None = None
    head_id: int | None = None
    checkpoint_id: int | None = None
    reason: str | None = None


def _all_heads(session: Session) -> Iterator[AuditTreeHead]:
    last = 0
    while True:
        query = select(AuditTreeHead).where(col(AuditTreeHead.id) > last)
        rows = session.exec(query.order_by(col(AuditTreeHead.id)).limit(BATCH)).all()
        yield from rows
        if len(rows) < BATCH:
            return
        last = int(rows[-1].id or 0)


def _problems(
    head: AuditTreeHead, doc: dict[str, Any], prev: AuditTreeHead | None, walk: VerifyResult
) -> tuple[list[str], bool]:
    """What is wrong with an authentic head, and whether the tree matched it."""
    out = []
    if (doc["tree_size"], doc["root_hash"]) != (head.tree_size, head.root_hash):
        out.append("columns differ from the signed statement")
    if doc["prev_head"] != heads.link(prev):
        where = "nothing" if prev is None else f"head {prev.id} (size {prev.tree_size})"
        out.append(f"does not link to {where}: a head is missing")
    legacy = walk.legacy_head
    if doc["legacy_chain_head"] != (None if legacy is None else {"seq": legacy[0],
                                                                 "hash": legacy[1]}):  # fmt: skip
        out.append("records another legacy chain head: the chain was cut or rewritten")
    size, root = head.tree_size, walk.roots.get(head.tree_size)
    if size > walk.tree_size:
        out.append(f"signs {size} leaves but the tree has {walk.tree_size}: events were deleted")
    elif root is None:
        pass  # the walk stopped before this size: its own finding is the earlier one
    elif root.hex() != doc["root_hash"]:
        out.append(f"the tree's root at size {size} differs: the log was rewritten")
    elif walk.tenant_leaves.get(size) != doc["tenant_leaves"]:
        out.append(f"per-tenant leaf counts at size {size} differ")
    return out, root is not None and not out


def _check_heads(
    rows: list[AuditTreeHead], verifier: Ed25519PublicKey, walk: VerifyResult
) -> tuple[int, int | None, list[Finding]]:
    checked, findings = 0, []
    prev: AuditTreeHead | None = None
    good = 0  # the largest size whose head matched the tree
    for i, head in enumerate(rows):
        # A rewrite after the last good head begins at the first leaf past it; a cut tail at
        # the first event missing.
        seq = walk.leaf_seqs.get(good, walk.head_seq + 1)
        if head.tree_size > walk.tree_size:
            seq = walk.head_seq + 1
        if head.signature is None:
            if i < len(rows) - 1:  # only the newest may still wait for its signature
                findings.append(Finding(seq, None, f"tree head {head.id} was never signed"))
            continue
        checked += 1
        doc = heads.parse_statement(head.statement, head.signature, verifier)
        if isinstance(doc, str):  # not authentic: never the link the next head is held to
            findings.append(Finding(seq, None, f"tree head {head.id}: {doc}", head_id=head.id))
            continue
        problems, matched = _problems(head, doc, prev, walk)
        findings += [Finding(seq, None, f"tree head {head.id}: {p}", head_id=head.id)
                     for p in problems]  # fmt: skip
        good = head.tree_size if matched else good
        prev = head
    return checked, None if prev is None else prev.tree_size, findings


def verify_all(session: Session, *, public_key: bytes) -> LogVerifyResult:
    """Verify the log under ``public_key`` (pass :func:`checkpoints.trusted_public_key`)."""
    verifier = Ed25519PublicKey.from_public_bytes(public_key)
    rows = list(_all_heads(session))
    walk = verify(session, at_sizes={h.tree_size for h in rows})
    legacy_seq = session.exec(
        select(sa.func.max(AuditEvent.seq)).where(col(AuditEvent.prev_hash).is_not(None))
    ).one()
    legacy = int(legacy_seq or 0)
    cps, latest_cp, findings = checkpoints.check_checkpoints(session, verifier, legacy)
    n_heads, latest, head_findings = _check_heads(rows, verifier, walk)
    findings += head_findings
    if not walk.ok:
        assert walk.first_bad_seq is not None
        findings.append(Finding(walk.first_bad_seq, None, walk.reason or "log broken", 0))
    if not findings:
        return LogVerifyResult(True, walk, n_heads, latest, cps, latest_cp)
    first = min(findings, key=lambda f: (f.seq, f.rank))
    return LogVerifyResult(
        False, walk, n_heads, latest, cps, latest_cp, first.seq, first.head_id,
        first.checkpoint_id, first.reason,
    )  # fmt: skip
