"""Verifying the audit log in the database: every event, the legacy chain, and the tree.

Two walks, each in keyset batches (constant memory, no long-lived cursor), each stopping at its
first finding; the earlier finding (by seq) is reported:

- **events**, in seq order: each row's canonical text is canonical JSON with exactly the event
  fields, its SHA-256 is the ``hash`` column, and the columns say what the text says. Legacy
  events (``prev_hash`` set) come first and form a gap-free chain from seq 1; an event in the
  legacy form after the chain ended is refused. Events after the chain may have seq gaps
  (rolled-back appends), so a deleted one is found by the tree walk.
- **the tree**, in leaf order: leaf indices run 0, 1, 2... up to the tree's size with none
  missing, and recomputing the stored hashes from the events' own canonical texts gives exactly
  the stored ones. Roots and per-tenant counts are taken at the sizes asked for (the signed
  heads, :mod:`vault.audit.logcheck`).

Without a signed head, a log rewritten wholesale (events, stored hashes and sizes together)
still verifies here: the signed tree heads are what pin it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault.audit import merkle, tree
from vault.audit.chain import (
    COLUMN_FIELDS,
    EVENT_FIELDS,
    GENESIS_HASH,
    LEGACY_FIELDS,
    canonical_json,
    format_ts,
    hash_canonical,
)
from vault.models import AuditEvent, AuditTreeNode

VERIFY_BATCH = 500

_ROW_COLUMNS = tuple(
    getattr(AuditEvent, f) for f in (*COLUMN_FIELDS, "prev_hash", "hash", "canonical")
)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """``head_*`` describe the last event that verified (the whole log when ``ok``).

    ``legacy_head`` is the legacy chain's last (seq, hash), None when there was no chain;
    ``roots``/``tenant_leaves`` hold the recomputed root and per-tenant counts at each size
    asked for (those the walk reached)."""

    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    reason: str | None = None
    tree_size: int = 0
    legacy_head: tuple[int, str] | None = None
    roots: dict[int, bytes] = field(default_factory=dict)
    tenant_leaves: dict[int, dict[str, int]] = field(default_factory=dict)
    leaf_seqs: dict[int, int] = field(default_factory=dict)


def _batches(query: Any, key: Any, session: Session) -> Iterator[sa.Row[Any]]:
    last: int | None = None
    while True:
        page = query if last is None else query.where(key > last)
        rows = session.exec(page.order_by(key).limit(VERIFY_BATCH)).all()
        yield from rows
        if len(rows) < VERIFY_BATCH:
            return
        last = int(rows[-1][0])


# --- events ------------------------------------------------------------------------------------


def _column_view(m: Any) -> dict[str, Any]:
    """The columns rendered the way the canonical text spells them."""
    view = {f: m[f] for f in COLUMN_FIELDS}
    view["ts"] = format_ts(view["ts"])
    for f in ("tenant_id", "grant_id"):
        view[f] = None if view[f] is None else str(view[f])
    return view


def _check_row(m: Any, *, legacy: bool, prev_seq: int, prev_hash: str) -> str | None:
    """Why this row is not a sound event, or None."""
    if legacy and int(m["seq"]) != prev_seq + 1:
        return f"seq gap: expected {prev_seq + 1}, found {m['seq']}"
    canonical = m["canonical"]
    if hash_canonical(canonical) != m["hash"]:
        return "hash does not match the canonical text"
    try:
        event = json.loads(canonical)
    except ValueError:
        return "canonical text is not JSON"
    fields = LEGACY_FIELDS if legacy else EVENT_FIELDS
    if not isinstance(event, dict) or set(event) != fields:
        return "canonical text does not have the event fields"
    if canonical_json(event) != canonical:
        return "canonical text is not in canonical form"
    if not isinstance(event["details"], dict):
        return "canonical details is not an object"
    columns = _column_view(m)
    for name in COLUMN_FIELDS:
        if columns[name] != event[name]:
            return f"column {name} differs from the canonical text"
    if legacy:
        if m["prev_hash"] != event["prev_hash"]:
            return "column prev_hash differs from the canonical text"
        if event["prev_hash"] != prev_hash:
            return "prev_hash does not match the previous event's hash"
    return None


def _walk_events(session: Session) -> VerifyResult:
    query = select(*_ROW_COLUMNS)
    checked, prev_seq, prev_hash = 0, 0, GENESIS_HASH
    chain_open, legacy_head = True, None
    for row in _batches(query, col(AuditEvent.seq), session):
        m = row._mapping
        legacy = m["prev_hash"] is not None
        if legacy and not chain_open:
            reason = "an event in the legacy chained form after the chain ended"
            return VerifyResult(False, checked, prev_seq, prev_hash, int(m["seq"]), reason)
        reason = _check_row(m, legacy=legacy, prev_seq=prev_seq, prev_hash=prev_hash)
        if reason is not None:
            # A chain that does not start at 1 lost its beginning: seq 1 is the first bad one.
            bad = 1 if legacy and checked == 0 and int(m["seq"]) != 1 else int(m["seq"])
            return VerifyResult(False, checked, prev_seq, prev_hash, bad, reason,
                                legacy_head=legacy_head)  # fmt: skip
        if legacy:
            legacy_head = (int(m["seq"]), str(m["hash"]))
        chain_open = chain_open and legacy
        checked += 1
        prev_seq, prev_hash = int(m["seq"]), str(m["hash"])
    return VerifyResult(True, checked, prev_seq, prev_hash, legacy_head=legacy_head)


# --- the tree ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _TreeWalk:
    finding: tuple[int, str] | None
    roots: dict[int, bytes]
    tenant_leaves: dict[int, dict[str, int]]
    leaf_seqs: dict[int, int]


def _stored(session: Session) -> Iterator[bytes]:
    query = select(AuditTreeNode.idx, AuditTreeNode.hash)
    for expected, (idx, digest) in enumerate(_batches(query, col(AuditTreeNode.idx), session)):
        if int(idx) != expected:
            return  # a missing stored hash: the walk reports the leaf whose hash it lacks
        yield bytes(digest)


def _walk_tree(session: Session, at: Collection[int]) -> _TreeWalk:
    state = tree.state(session)
    assert state is not None
    wanted = {s for s in at if 0 <= s <= state.size} | {0}
    roots: dict[int, bytes] = {0: merkle.EMPTY_ROOT} if 0 in at else {}
    counts: Counter[str] = Counter()
    tenants: dict[int, dict[str, int]] = {0: {}}
    seqs: dict[int, int] = {}
    stack, stored, last_seq = merkle.Stack(), _stored(session), 0

    def done(finding: tuple[int, str] | None) -> _TreeWalk:
        return _TreeWalk(finding, roots, tenants, seqs)

    query = select(
        AuditEvent.leaf_index, AuditEvent.seq, AuditEvent.tenant_id, AuditEvent.canonical
    ).where(col(AuditEvent.leaf_index).is_not(None))
    for leaf_index, seq, tenant_id, canonical in _batches(
        query, col(AuditEvent.leaf_index), session
    ):
        n = stack.size
        if n in wanted:
            seqs[n] = int(seq)
        if int(leaf_index) != n:
            return done((last_seq + 1, f"leaf {n} of the tree is missing: an event was deleted"))
        if n >= state.size:
            return done((int(seq), f"the event claims leaf {n}, past the tree size {state.size}"))
        for i, digest in enumerate(stack.append(tree.leaf_of(canonical))):
            if next(stored, None) != digest:
                what = (
                    f"the event differs from leaf {n} of the tree (edited, or moved)"
                    if i == 0
                    else f"a stored tree hash above leaf {n} is wrong"
                )
                return done((int(seq), what))
        counts[tree.tenant_key(tenant_id)] += 1
        last_seq = int(seq)
        if stack.size in wanted:
            roots[stack.size] = stack.root()
            tenants[stack.size] = dict(counts)
    if stack.size < state.size:
        reason = (
            f"the tree has {state.size} leaves but events hold only {stack.size}: "
            "events were deleted"
        )
        return done((last_seq + 1, reason))
    if dict(counts) != tree.tenant_leaves(session):
        return done((last_seq, "the per-tenant leaf counts differ from the tree's leaves"))
    return done(None)


def _legacy_finding(session: Session, found: tuple[int, str] | None) -> tuple[int, str] | None:
    """The chain's head must still be the one recorded when the log became a Merkle log."""
    state = tree.state(session)
    assert state is not None
    if state.legacy_head_seq is None or found == (state.legacy_head_seq, state.legacy_head_hash):
        return None
    seq = 0 if found is None else found[0]
    if seq < state.legacy_head_seq:
        return seq + 1, f"the legacy chain ends at seq {seq}, not {state.legacy_head_seq}"
    return state.legacy_head_seq, "the legacy chain's head differs from the one recorded"


def verify(session: Session, *, at_sizes: Collection[int] = ()) -> VerifyResult:
    """Walk the events, then the tree; the earliest finding (by seq) is reported."""
    events = _walk_events(session)
    walk = _walk_tree(session, at_sizes)
    if events.ok and walk.finding is None:
        walk = _TreeWalk(
            _legacy_finding(session, events.legacy_head), walk.roots, walk.tenant_leaves,
            walk.leaf_seqs,
        )  # fmt: skip
    extra = {
        "tree_size": tree.size(session), "legacy_head": events.legacy_head,
        "roots": walk.roots, "tenant_leaves": walk.tenant_leaves, "leaf_seqs": walk.leaf_seqs,
    }  # fmt: skip
    if walk.finding is not None and (events.ok or walk.finding[0] < (events.first_bad_seq or 0)):
        seq, reason = walk.finding
        return VerifyResult(False, events.checked, events.head_seq, events.head_hash, seq, reason,
                            **extra)  # fmt: skip
    return VerifyResult(
        events.ok, events.checked, events.head_seq, events.head_hash, events.first_bad_seq,
        events.reason, **extra,
    )  # fmt: skip
