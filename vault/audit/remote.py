"""Verifying one tenant's audit events from outside the database, over the HTTP API.

What a tenant-scoped auditor can check with its own API key and the trusted public key (pinned,
or the key provider's; never a copy the server hands out):

1. every signed tree head (``GET /v1/audit/checkpoints``) verifies under the trusted key, links
   to the one before it, and grows: the tree of each head is consistent with the next one's
   (``GET /v1/audit/consistency``, RFC 6962 proofs checked here);
2. every event of the tenant it can see (``GET /v1/audit?tenant_id=``) is what its canonical text
   says, and each one sequenced within the newest head is included in it: the leaf hash is
   computed here from the canonical text, the path comes from ``GET /v1/audit/proof``;
3. the newest head's count of the tenant's leaves equals the events it saw included, so an
   event of its own deleted (or hidden) from the database is detected.

It sees nothing of other tenants but their leaf counts in the signed heads.
"""

from __future__ import annotations

import itertools
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault.audit import heads, merkle, tree
from vault.audit.chain import canonical_json
from vault.errors import RemoteAuditError as RemoteError

PAGE = 1000


@dataclass(frozen=True, slots=True)
class TenantVerifyResult:
    ok: bool
    heads: int
    tree_size: int
    events: int
    included: int
    first_bad_seq: int | None = None
    reason: str | None = None


class Client:
    """A minimal JSON client (stdlib only: the verifier needs nothing beyond the package)."""

    def __init__(self, url: str, api_key: str, *, timeout: float = 30.0) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise RemoteError("the API URL must start with http:// or https://")
        self.url = url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        self.timeout = timeout

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{self.url}{path}?{query}"  # http(s) only: checked in __init__
        request = urllib.request.Request(url, headers=self._auth)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                problem = json.loads(exc.read()).get("title", "")
            except ValueError:
                problem = ""
            raise RemoteError(f"{path}: HTTP {exc.code} {problem}".rstrip()) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RemoteError(f"{path}: {exc}") from None


class _Bad(Exception):
    def __init__(self, reason: str, seq: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.seq = reason, seq


def _unhex(values: Any) -> list[bytes]:
    try:
        return [bytes.fromhex(v) for v in values]
    except (TypeError, ValueError):
        raise _Bad("a proof is not a list of hex hashes") from None


def _heads(client: Client, verifier: Ed25519PublicKey) -> list[dict[str, Any]]:
    """Every signed head, authentic and linked, oldest first."""
    out: list[dict[str, Any]] = []
    after, prev = 0, None
    while True:
        page = client.get("/v1/audit/checkpoints", after_id=after, limit=PAGE)
        for row in page:
            doc = heads.parse_statement(row["statement"], row.get("signature"), verifier)
            if isinstance(doc, str):
                raise _Bad(f"tree head {row.get('id')}: {doc}")
            if doc["prev_head"] != heads.link(prev):
                raise _Bad(f"tree head {row['id']} does not link to the head before it")
            out.append(doc)
            prev = _Linked(doc["tree_size"], row["statement"])
        if len(page) < PAGE:
            return out
        after = page[-1]["id"]


@dataclass(frozen=True, slots=True)
class _Linked:  # what heads.link needs of a head
    tree_size: int
    statement: str


def _check_consistency(client: Client, docs: list[dict[str, Any]]) -> None:
    for old, new in itertools.pairwise(docs):
        a, b = old["tree_size"], new["tree_size"]
        if b <= a:
            raise _Bad(f"signed tree heads do not grow: size {a} then {b}")
        proof = client.get("/v1/audit/consistency", **{"from": a, "to": b})
        try:
            merkle.verify_consistency(
                a, b, _unhex(proof["path"]), bytes.fromhex(old["root_hash"]),
                bytes.fromhex(new["root_hash"]),
            )  # fmt: skip
        except merkle.ProofError as exc:
            raise _Bad(f"the log of size {b} is not an extension of size {a}: {exc}") from None


def _events(client: Client, tenant: str) -> Iterator[dict[str, Any]]:
    after = 0
    while True:
        page = client.get("/v1/audit", tenant_id=tenant, after_seq=after, limit=PAGE)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1]["seq"]


def _check_event(client: Client, event: dict[str, Any], tenant: str, head: dict[str, Any]) -> bool:
    """True when the event is included in ``head``; False when it is newer than the head."""
    seq, text = event["seq"], event["canonical"]
    try:
        parsed = json.loads(text)
    except (TypeError, ValueError):
        raise _Bad("the canonical text is not JSON", seq) from None
    if not isinstance(parsed, dict) or canonical_json(parsed) != text:
        raise _Bad("the canonical text is not canonical JSON", seq)
    if parsed.get("seq") != seq or parsed.get("tenant_id") != tenant:
        raise _Bad("the canonical text names another seq or tenant: moved or edited", seq)
    size, leaf = head["tree_size"], event.get("leaf_index")
    if leaf is None or leaf >= size:
        return False
    proof = client.get("/v1/audit/proof", seq=seq, tree_size=size)
    if proof.get("leaf_index") != leaf:
        raise _Bad(f"the proof is for leaf {proof.get('leaf_index')}, not {leaf}", seq)
    try:
        merkle.verify_inclusion(
            tree.leaf_of(text), leaf, size, _unhex(proof["path"]),
            bytes.fromhex(head["root_hash"]),
        )  # fmt: skip
    except merkle.ProofError as exc:
        raise _Bad(f"not included in the signed tree of size {size}: {exc}", seq) from None
    return True


def verify_tenant(client: Client, *, tenant: uuid.UUID, public_key: bytes) -> TenantVerifyResult:
    verifier = Ed25519PublicKey.from_public_bytes(public_key)
    key = str(tenant)
    docs: list[dict[str, Any]] = []
    seen = included = 0
    try:
        docs = _heads(client, verifier)
        if not docs:
            raise _Bad("no signed tree head yet: nothing to verify against")
        _check_consistency(client, docs)
        newest = docs[-1]
        for event in _events(client, key):
            seen += 1
            included += _check_event(client, event, key, newest)
        counted = newest["tenant_leaves"].get(key, 0)
        if counted != included:
            raise _Bad(
                f"the signed tree head of size {newest['tree_size']} counts {counted} events of "
                f"this tenant, but {included} are visible and included: events were deleted"
            )
    except (KeyError, TypeError, AttributeError, IndexError) as exc:  # a server's nonsense
        bad = _Bad(f"the API answered something that is not what it documents ({exc!r})")
        return TenantVerifyResult(False, len(docs), 0, seen, included, None, bad.reason)
    except _Bad as bad:
        size = docs[-1]["tree_size"] if docs else 0
        return TenantVerifyResult(False, len(docs), size, seen, included, bad.seq, bad.reason)
    return TenantVerifyResult(True, len(docs), newest["tree_size"], seen, included)
