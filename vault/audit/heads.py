"""Signed tree heads: Ed25519 statements over the Merkle log's size and root, exported to the store.

A head is a signed document (:mod:`vault.audit.signing`) of type ``TREE_HEAD``, version 1::

    {"legacy_chain_head": {"hash": ..., "seq": ...} | null, "prev_head": {"hash": ...,
     "tree_size": ...} | null, "root_hash": "<hex>", "tenant_leaves": {"<tenant id>": n,
     "none": m}, "tree_size": N, "ts": "...Z", "type": "callvault.audit-tree-head", "version": 1}

``tenant_leaves`` counts each tenant's leaves among the first N (events without a tenant under
``"none"``), so a tenant-scoped auditor that sees its own events can tell that none is missing.
``prev_head`` links to the previous head (its size and the SHA-256 of its statement), so a deleted
head row is caught. ``legacy_chain_head`` is the hash chain's last (seq, hash) when the log
became a Merkle log: every head carries it, the first one included.

Heads are not themselves audit events (as in CT and Trillian, a head is about the log, not in
it): a run with no new leaves is a no-op. Copies go to ``audit/tree-heads/{size:020d}.json``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlmodel import Session, col, select

from vault.audit import checkpoints, signed_rows, signing, tree
from vault.audit.chain import format_ts, hash_canonical
from vault.context import Context
from vault.errors import IntegrityError
from vault.models import AuditTreeHead, AuditTreeHeadPublic

DOC_TYPE, VERSION = signing.TREE_HEAD, 1
EXPORT_PREFIX = "audit/tree-heads"
FIELDS = frozenset({"tree_size", "root_hash", "ts", "tenant_leaves", "prev_head",
                    "legacy_chain_head", "type", "version"})  # fmt: skip


def export_key(tree_size: int) -> str:
    return f"{EXPORT_PREFIX}/{tree_size:020d}.json"


def link(head: Any) -> dict[str, Any] | None:
    """How the next head names this one (anything with ``tree_size`` and ``statement``)."""
    return None if head is None else {"tree_size": head.tree_size, "hash": hash_canonical(
        head.statement)}  # fmt: skip


def _latest(session: Session) -> AuditTreeHead | None:
    query = select(AuditTreeHead).order_by(col(AuditTreeHead.tree_size).desc()).limit(1)
    return session.exec(query).first()


# --- writing -------------------------------------------------------------------------------------


def write_head(ctx: Context, *, now: datetime) -> AuditTreeHead | None:
    """Sequence what is committed, then sign a head over the whole tree; None when the newest
    head already covers it (or the log is empty).

    No transaction is open while the key provider signs: the statement is committed first (the
    row waiting for its signature), then signed. A run that dies in between is finished by the
    next one, which signs what is waiting before it writes anything new. Exports that failed
    earlier are retried either way (legacy checkpoints' too).
    """
    sign_pending(ctx)
    checkpoints.sign_pending(ctx)
    tree.sequence(ctx.db, wait=True)
    public_key = ctx.keys.signing_public_key().hex()
    pending: AuditTreeHead | None = None
    with ctx.db.transaction() as session:
        state = tree.state(session, lock=True)  # the sequencer's lock: the tree stays still
        assert state is not None
        prev = _latest(session)
        waiting = prev is not None and prev.signature is None  # another run is signing it
        covered = state.size == (0 if prev is None else prev.tree_size)
        if not waiting and not covered:
            # Never sign a tree that contradicts the last signature: refuse loudly instead.
            if prev is not None and (
                state.size < prev.tree_size
                or tree.root_at(session, prev.tree_size).hex() != prev.root_hash
            ):
                raise IntegrityError(
                    f"the audit tree no longer matches signed head {prev.id} at size "
                    f"{prev.tree_size}; run `callvault audit verify`"
                )
            root = tree.root_at(session, state.size).hex()
            legacy = (
                None
                if state.legacy_head_seq is None
                else {"seq": state.legacy_head_seq, "hash": state.legacy_head_hash}
            )
            statement = signing.prepare_document(
                doc_type=DOC_TYPE, version=VERSION,
                body={"tree_size": state.size, "root_hash": root, "ts": format_ts(now),
                      "tenant_leaves": tree.tenant_leaves(session), "prev_head": link(prev),
                      "legacy_chain_head": legacy},
            )  # fmt: skip
            pending = AuditTreeHead(
                tree_size=state.size, root_hash=root, created_at=now, public_key=public_key,
                signature=None, statement=statement,
            )  # fmt: skip
            session.add(pending)
            session.flush()
    signed = sign_pending(ctx)
    exported = export_pending(ctx, now=now)
    checkpoints.export_pending(ctx, now=now)
    if pending is None:
        return None
    head = signed.get(pending.id or 0, pending)
    if head.id in exported:
        head.object_key, head.version_id = exported[head.id]
    return head


def sign_pending(ctx: Context) -> dict[int, AuditTreeHead]:
    return signed_rows.sign_pending(ctx, AuditTreeHead)


def export_pending(ctx: Context, *, now: datetime) -> dict[int, tuple[str, str | None]]:
    return signed_rows.export_pending(
        ctx, AuditTreeHead, lambda row: export_key(row.tree_size), now=now
    )


# --- reading -------------------------------------------------------------------------------------


def parse_statement(
    statement: str, signature: str | None, verifier: Ed25519PublicKey
) -> dict[str, Any] | str:
    """The verified statement, or why it cannot be trusted (shared with the HTTP verifier)."""
    if signature is None:
        return "tree head was never signed"
    try:
        doc = signing.verify_document(
            verifier, statement, signature, doc_type=DOC_TYPE, versions=(VERSION,)
        )
    except signing.SignedDocumentError as exc:
        return exc.reason
    if set(doc) != FIELDS:
        return "statement does not have the tree head fields"
    size, root, leaves = doc["tree_size"], doc["root_hash"], doc["tenant_leaves"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return "tree_size is not a size"
    if not isinstance(root, str) or len(root) != 64:
        return "root_hash is not a SHA-256 in hex"
    if not isinstance(leaves, dict) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in leaves.values()
    ):
        return "tenant_leaves is not a map of counts"
    if sum(leaves.values()) != size:
        return "tenant_leaves does not add up to tree_size"
    return doc


def list_heads(
    session: Session, *, limit: int = 100, after_id: int = 0
) -> list[AuditTreeHeadPublic]:
    """Signed heads, oldest first (ids grow with tree size: one writer, sizes only grow)."""
    return signed_rows.list_page(
        session, AuditTreeHead, AuditTreeHeadPublic, after_id=after_id, limit=limit,
        signed_only=True,
    )  # fmt: skip
