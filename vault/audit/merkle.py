"""RFC 6962 Merkle tree hashing and proofs, pure (no database).

Leaf hash ``SHA-256(0x00 || bytes)``, node hash ``SHA-256(0x01 || left || right)``, the empty
tree's root ``SHA-256("")``; the tree over n leaves splits at the largest power of two below n
(RFC 6962 section 2.1, unchanged in RFC 9162). Proof generation follows the RFC's recursive
definitions (PATH, SUBPROOF); verification follows RFC 9162 sections 2.1.3.2 and 2.1.4.2.

Storage follows Go's ``golang.org/x/mod/sumdb/tlog`` "stored hashes": every complete subtree's
hash is kept once, numbered in the order appends create them (:func:`stored_hash_index`), so
the hashes a batch of appends creates are one contiguous run of indices, and any root or proof
needs O(log n) of them. Functions that need stored hashes take a :data:`Reader` and call it
once with every index they need.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "EMPTY_ROOT", "ProofError", "Reader", "Stack", "consistency_proof", "inclusion_proof",
    "leaf_hash", "node_hash", "root", "stored_hash_count", "stored_hash_index",
    "verify_consistency", "verify_inclusion",
]  # fmt: skip

EMPTY_ROOT = hashlib.sha256(b"").digest()
HASH_SIZE = 32

#: Reads stored hashes by stored-hash index, in the order asked.
Reader = Callable[[Sequence[int]], Sequence[bytes]]


class ProofError(ValueError):
    """A proof does not verify, or its sizes make no sense."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


# --- stored hashes (tlog numbering) ----------------------------------------------------------


def stored_hash_index(level: int, n: int) -> int:
    """Where the hash of the level-``level`` subtree number ``n`` is stored."""
    # Level L's n'th hash is written right after level L-1's (2n+1)'th hash.
    for _ in range(level):
        n = 2 * n + 1
    i = 0
    while n > 0:  # level 0's n'th hash sits at n + n/2 + n/4 + ...
        i += n
        n >>= 1
    return i + level


def stored_hash_count(n: int) -> int:
    """How many hashes a tree of ``n`` leaves stores."""
    if n == 0:
        return 0
    count = stored_hash_index(0, n - 1) + 1
    i = n - 1
    while i & 1:  # each trailing one bit completes a subtree
        count += 1
        i >>= 1
    return count


class Stack:
    """The complete subtrees of a growing tree, largest first (a "compact range"): appending a
    leaf yields the hashes to store, in stored-hash order."""

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        levels = [lvl for lvl, _ in _pieces(0, size)]
        if len(levels) != len(hashes):
            raise ValueError("one hash per complete subtree of the tree is needed")
        self.size = size
        self._stack: list[tuple[int, bytes]] = list(zip(levels, hashes, strict=True))

    @staticmethod
    def indices(size: int) -> list[int]:
        """The stored hashes a :class:`Stack` of ``size`` leaves starts from."""
        return [stored_hash_index(lvl, idx) for lvl, idx in _pieces(0, size)]

    def append(self, leaf: bytes) -> list[bytes]:
        created = [leaf]
        self._stack.append((0, leaf))
        while len(self._stack) >= 2 and self._stack[-1][0] == self._stack[-2][0]:
            (level, right), (_, left) = self._stack.pop(), self._stack.pop()
            parent = node_hash(left, right)
            self._stack.append((level + 1, parent))
            created.append(parent)
        self.size += 1
        return created

    def root(self) -> bytes:
        return _fold([h for _, h in self._stack]) if self._stack else EMPTY_ROOT


# --- roots and proofs ------------------------------------------------------------------------


def _largest_power_below(n: int) -> int:
    """The RFC's split k: the largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _pieces(lo: int, hi: int) -> list[tuple[int, int]]:
    """The complete subtrees (level, index) that make up leaves [lo, hi), left to right.

    Every range the RFC recursion visits starts at a multiple of a power of two at least as large
    as the range, so each piece is an aligned, stored subtree."""
    out = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        out.append((level, lo >> level))
        lo += 1 << level
    return out


def _fold(hashes: Sequence[bytes]) -> bytes:
    """MTH over the pieces of a range: the RFC's tree joins them right to left."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def _range_hashes(ranges: Sequence[tuple[int, int]], read: Reader) -> list[bytes]:
    """MTH of each range, with one call to ``read``."""
    pieces = [_pieces(lo, hi) for lo, hi in ranges]
    wanted = sorted({stored_hash_index(lvl, i) for p in pieces for lvl, i in p})
    got = dict(zip(wanted, read(wanted), strict=True))
    return [_fold([got[stored_hash_index(lvl, i)] for lvl, i in p]) for p in pieces]


def root(size: int, read: Reader) -> bytes:
    """The root hash of the tree's first ``size`` leaves."""
    if size < 0:
        raise ValueError("size must be >= 0")
    return EMPTY_ROOT if size == 0 else _range_hashes([(0, size)], read)[0]


def _inclusion_ranges(m: int, size: int) -> list[tuple[int, int]]:
    out, lo, hi = [], 0, size
    while hi - lo > 1:
        k = _largest_power_below(hi - lo)
        if m < lo + k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
    return out[::-1]  # PATH lists the deepest sibling first


def inclusion_proof(index: int, size: int, read: Reader) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 6962 section 2.1.1."""
    if not 0 <= index < size:
        raise ValueError("index must be in [0, size)")
    return _range_hashes(_inclusion_ranges(index, size), read)


def _consistency_ranges(m: int, size: int) -> list[tuple[int, int]]:
    out, lo, hi, whole = [], 0, size, True
    while True:
        if m == hi - lo:
            if not whole:
                out.append((lo, hi))
            break
        k = _largest_power_below(hi - lo)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    return out[::-1]


def consistency_proof(first: int, second: int, read: Reader) -> list[bytes]:
    """PROOF(first, D[0:second]) of RFC 6962 section 2.1.2 (empty when first is 0 or equal)."""
    if not 0 <= first <= second:
        raise ValueError("0 <= first <= second is required")
    if first in (0, second):
        return []
    return _range_hashes(_consistency_ranges(first, second), read)


# --- verification (RFC 9162) -----------------------------------------------------------------


def _check_hashes(*hashes: bytes | Iterable[bytes]) -> None:
    for h in hashes:
        items = [h] if isinstance(h, bytes | bytearray) else list(h)
        if any(len(x) != HASH_SIZE for x in items):
            raise ProofError("every hash must be 32 bytes")


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root_hash: bytes
) -> None:
    """Raise :class:`ProofError` unless ``path`` proves leaf hash ``leaf`` at ``index`` in the
    tree of ``size`` leaves whose root is ``root_hash``."""
    _check_hashes(leaf, path, root_hash)
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    if r != root_hash:
        raise ProofError("inclusion proof does not lead to the root hash")


def verify_consistency(
    first: int, second: int, path: Sequence[bytes], first_root: bytes, second_root: bytes
) -> None:
    """Raise :class:`ProofError` unless ``path`` proves that the tree of ``second`` leaves with
    root ``second_root`` extends the tree of ``first`` leaves with root ``first_root``."""
    _check_hashes(first_root, second_root, path)
    if not 0 <= first <= second:
        raise ProofError(f"tree size {second} is smaller than {first}: the log shrank")
    if first == second:
        if path:
            raise ProofError("consistency proof between equal sizes must be empty")
        if first_root != second_root:
            raise ProofError("two roots for the same tree size")
        return
    if first == 0:
        if path:
            raise ProofError("consistency proof from the empty tree must be empty")
        return
    if not path:
        raise ProofError("consistency proof is empty")
    nodes = list(path)
    if first & (first - 1) == 0:  # a power of two: the old root is itself a node of the path
        nodes.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = nodes[0]
    for c in nodes[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != first_root:
        raise ProofError("consistency proof does not lead to the first root")
    if sr != second_root:
        raise ProofError("consistency proof does not lead to the second root")
