"""RFC 6962 hashing and proofs (vault.audit.merkle), pure: published test vectors, and properties
over random trees checked against a naive recursive implementation of the RFC's definitions.

The vectors are the values published by transparency-dev/merkle (testonly/constants.go and
proof/verify_test.go, Apache-2.0), the same as certificate-transparency-go's: the eight
standard leaves, the root at every size 0..8, the stored node hashes, and inclusion and
consistency proofs. Only the values are copied here.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.audit import merkle

LEAF_HEX = ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
            "606162636465666768696a6b6c6d6e6f")  # fmt: skip
LEAVES = [bytes.fromhex(h) for h in LEAF_HEX]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# Level 0 (leaf hashes) and level 1 node hashes of the 8-leaf tree.
LEAF_HASHES = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
]
# (leaf index, tree size, path); proof/verify_test.go numbers leaves from 1, these from 0.
INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (0, 1, []),
]  # fmt: skip
CONSISTENCY = [
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (1, 1, []),
]  # fmt: skip


class Tree:
    """An in-memory store of a tree's stored hashes, filled by :class:`merkle.Stack`."""

    def __init__(self, leaf_hashes: list[bytes]) -> None:
        self.stored: list[bytes] = []
        stack = merkle.Stack()
        for h in leaf_hashes:
            self.stored += stack.append(h)
        self.stack = stack

    def read(self, indices: list[int]) -> list[bytes]:  # type: ignore[override]
        return [self.stored[i] for i in indices]


def naive_root(hashes: list[bytes]) -> bytes:
    """MTH straight from RFC 6962 section 2.1."""
    if not hashes:
        return merkle.EMPTY_ROOT
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return merkle.node_hash(naive_root(hashes[:k]), naive_root(hashes[k:]))


REFERENCE = Tree([merkle.leaf_hash(x) for x in LEAVES])


def hexes(hashes: list[bytes]) -> list[str]:
    return [h.hex() for h in hashes]


# --- the published vectors -----------------------------------------------------------------------


def test_leaf_hashes_and_roots_at_every_size_match_rfc6962() -> None:
    assert hexes([merkle.leaf_hash(x) for x in LEAVES]) == LEAF_HASHES
    assert [merkle.root(n, REFERENCE.read).hex() for n in range(9)] == ROOTS
    assert merkle.EMPTY_ROOT.hex() == ROOTS[0] and REFERENCE.stack.root().hex() == ROOTS[8]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_proofs_match_the_vectors(index: int, size: int, path: list[str]) -> None:
    assert hexes(merkle.inclusion_proof(index, size, REFERENCE.read)) == path
    proof = [bytes.fromhex(p) for p in path]
    root = bytes.fromhex(ROOTS[size])
    merkle.verify_inclusion(merkle.leaf_hash(LEAVES[index]), index, size, proof, root)
    for wrong_index in {index - 1, index + 1, index ^ 2} - {index}:  # another leaf's place
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(merkle.leaf_hash(LEAVES[index]), wrong_index, size, proof,
                                    root)  # fmt: skip
    with pytest.raises(merkle.ProofError):  # a wrong leaf
        merkle.verify_inclusion(merkle.leaf_hash(b"WrongLeaf"), index, size, proof, root)
    with pytest.raises(merkle.ProofError):  # trailing garbage
        merkle.verify_inclusion(merkle.leaf_hash(LEAVES[index]), index, size, [*proof, root],
                                root)  # fmt: skip


@pytest.mark.parametrize(("first", "second", "path"), CONSISTENCY)
def test_consistency_proofs_match_the_vectors(first: int, second: int, path: list[str]) -> None:
    assert hexes(merkle.consistency_proof(first, second, REFERENCE.read)) == path
    proof = [bytes.fromhex(p) for p in path]
    old, new = bytes.fromhex(ROOTS[first]), bytes.fromhex(ROOTS[second])
    merkle.verify_consistency(first, second, proof, old, new)
    if first == second:
        return
    for a, b, p, r1, r2 in [
        (first, second, proof, new, old),  # swapped roots
        (first, second, proof[:-1], old, new),  # truncated
        (first, second, [*proof, new], old, new),  # trailing garbage
        (first - 1, second, proof, old, new),
        (first, second * 2, proof, old, new),
        (first, second, [], old, new),
    ]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(a, b, p, r1, r2)


def test_trivial_consistency_and_the_log_shrinking() -> None:
    root = bytes.fromhex(ROOTS[3])
    merkle.verify_consistency(0, 3, [], merkle.EMPTY_ROOT, root)  # everything extends nothing
    merkle.verify_consistency(3, 3, [], root, root)
    with pytest.raises(merkle.ProofError, match="same tree size"):
        merkle.verify_consistency(3, 3, [], root, bytes.fromhex(ROOTS[4]))
    with pytest.raises(merkle.ProofError, match="shrank"):
        merkle.verify_consistency(4, 3, [], root, root)
    with pytest.raises(merkle.ProofError, match="32 bytes"):
        merkle.verify_consistency(1, 3, [b"short"], root, root)


def test_stored_hash_numbering_is_tlogs() -> None:
    # Leaf 0, leaf 1, their parent, leaf 2, leaf 3, (2,3), ((0,1),(2,3)), ... as sumdb's tlog.
    assert [merkle.stored_hash_index(0, n) for n in range(5)] == [0, 1, 3, 4, 7]
    assert [merkle.stored_hash_index(1, n) for n in range(3)] == [2, 5, 9]
    assert merkle.stored_hash_index(2, 0) == 6
    assert [merkle.stored_hash_count(n) for n in range(9)] == [0, 1, 3, 4, 7, 8, 10, 11, 15]
    assert len(REFERENCE.stored) == merkle.stored_hash_count(8)


# --- properties over random trees ------------------------------------------------------------


def flip(proof: list[bytes], data: st.DataObject) -> list[bytes]:
    """The proof with one bit of one of its hashes flipped."""
    i = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 255))
    flipped = bytearray(proof[i])
    flipped[bit // 8] ^= 1 << (bit % 8)
    return [*proof[:i], bytes(flipped), *proof[i + 1 :]]


def _tree(n: int, salt: int) -> tuple[list[bytes], Tree]:
    hashes = [merkle.leaf_hash(f"{salt}:{i}".encode()) for i in range(n)]
    return hashes, Tree(hashes)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), salt=st.integers(0, 10**6), data=st.data())
def test_every_inclusion_proof_verifies_and_flipped_bits_fail(
    n: int, salt: int, data: st.DataObject
) -> None:
    hashes, tree = _tree(n, salt)
    size = data.draw(st.integers(1, n))
    index = data.draw(st.integers(0, size - 1))
    root = merkle.root(size, tree.read)
    assert root == naive_root(hashes[:size])
    proof = merkle.inclusion_proof(index, size, tree.read)
    assert len(proof) <= size.bit_length()  # O(log n)
    merkle.verify_inclusion(hashes[index], index, size, proof, root)
    if proof:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(hashes[index], index, size, flip(proof, data), root)
    other = bytearray(hashes[index])
    other[0] ^= 1
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(bytes(other), index, size, proof, root)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), salt=st.integers(0, 10**6), data=st.data())
def test_every_consistency_proof_verifies_and_flipped_bits_fail(
    n: int, salt: int, data: st.DataObject
) -> None:
    hashes, tree = _tree(n, salt)
    second = data.draw(st.integers(1, n))
    first = data.draw(st.integers(0, second))
    old, new = merkle.root(first, tree.read), merkle.root(second, tree.read)
    proof = merkle.consistency_proof(first, second, tree.read)
    assert len(proof) <= 2 * second.bit_length()
    merkle.verify_consistency(first, second, proof, old, new)
    if proof:
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(first, second, flip(proof, data), old, new)
    if 0 < first < second:  # a log that rewrote one of the old leaves is not an extension
        forged = list(hashes[:second])
        forged[data.draw(st.integers(0, first - 1))] = merkle.leaf_hash(b"forged")
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(first, second, proof, old, naive_root(forged))


def test_a_stack_resumed_from_stored_hashes_continues_the_same_tree() -> None:
    hashes, tree = _tree(77, 1)
    resumed = merkle.Stack(50, tree.read(merkle.Stack.indices(50)))
    created = [h for leaf in hashes[50:] for h in resumed.append(leaf)]
    assert created == tree.stored[merkle.stored_hash_count(50) :]
    assert resumed.root() == naive_root(hashes)
