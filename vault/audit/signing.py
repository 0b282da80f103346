"""The one recipe for documents signed with the audit key: tree heads, legacy checkpoints, erasure
receipts, disposal records, redaction manifests, evidence reports.

A signed document is the canonical JSON (:func:`vault.audit.chain.canonical_json`) of its body
plus two mandatory fields, ``type`` and ``version``, so what a signature covers always says what
it is. Every verifier names the one type it accepts and the versions it reads: a document of
another type signed with the same key (a receipt presented as a checkpoint, say) is refused, as
is any text that is not exactly canonical.

Documents signed before ``type``/``version`` existed are read through :data:`LEGACY`, the only
place that knows their shapes: a checkpoint statement with ``"format": "callvault-checkpoint/1"``
and no ``type`` is checkpoint v1; a receipt whose ``type`` is ``"callvault.erasure-receipt/v1"``
and that has no ``version`` is erasure-receipt v1.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault.audit.chain import canonical_json, hash_canonical
from vault.errors import IntegrityError

__all__ = [
    "CHECKPOINT",
    "DISCLOSURE_MANIFEST",
    "DISPOSAL_RECORD",
    "ERASURE_RECEIPT",
    "EVIDENCE_REPORT",
    "LEGACY",
    "REDACTION_MANIFEST",
    "TREE_HEAD",
    "LegacyForm",
    "SignedDocument",
    "SignedDocumentError",
    "prepare_document",
    "sign_canonical",
    "sign_document",
    "verify_document",
]  # fmt: skip

#: Document types. A new kind of signed document gets a new constant here, never a reused one.
CHECKPOINT = "callvault.audit-checkpoint"
TREE_HEAD = "callvault.audit-tree-head"  # a signed tree head of the Merkle log (version 1)
ERASURE_RECEIPT = "callvault.erasure-receipt"
REDACTION_MANIFEST = "callvault.redaction-manifest"
DISPOSAL_RECORD = "callvault.disposal-record"
EVIDENCE_REPORT = "callvault.evidence-report"  # the privacy office's evidence report (version 1)
DISCLOSURE_MANIFEST = "callvault.disclosure-manifest"  # what a legal disclosure handed out (v1)

_RESERVED = ("type", "version")


@dataclass(frozen=True, slots=True)
class LegacyForm:
    """How a type's documents signed before ``type``/``version`` existed are recognised.

    Such a document has no ``version``, and its field ``field`` holds exactly ``value`` (and it has
    no ``type`` at all unless ``field`` is ``type``). It is read as ``version``: the marker field is
    dropped and ``type``/``version`` are set. ``typed`` says whether that version has also been
    written with an explicit type and version; when not, an explicit claim to it is refused.
    """

    field: str
    value: str
    version: int
    typed: bool


#: The legacy reader: the one place that knows the shapes of pre-``type`` documents.
LEGACY: Mapping[str, LegacyForm] = {
    CHECKPOINT: LegacyForm("format", "callvault-checkpoint/1", version=1, typed=False),
    ERASURE_RECEIPT: LegacyForm("type", "callvault.erasure-receipt/v1", version=1, typed=True),
}


class SignedDocumentError(IntegrityError):
    """A signed document failed verification; ``reason`` says why, in a few words."""

    title = "A signed document failed verification"

    def __init__(self, reason: str, *, doc_type: str) -> None:
        super().__init__(f"{doc_type} document rejected: {reason}", reason=reason)
        self.reason = reason
        self.doc_type = doc_type


class _Signer(Protocol):  # the signing half of crypto.keys.base.Signer
    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class SignedDocument:
    """The exact signed text and its Ed25519 signature (hex). Store ``canonical`` verbatim."""

    canonical: str
    signature: str

    @property
    def sha256(self) -> str:
        """SHA-256 (hex) of the canonical text, hashed as audit events are."""
        return hash_canonical(self.canonical)


def _check_version(version: object) -> int:
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"version must be an int >= 1, not {version!r}")
    return version


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse_canonical(text: str) -> dict[str, Any]:
    """The object ``text`` is the canonical form of; ValueError when it is not exactly that."""
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    if canonical_json(doc) != text:  # also catches duplicate keys and re-spelt numbers
        raise ValueError("not canonical JSON")
    return doc


def sign_document(
    signer: _Signer, *, doc_type: str, version: int, body: Mapping[str, Any]
) -> SignedDocument:
    """Sign ``{**body, "type": doc_type, "version": version}`` in its canonical form."""
    return sign_canonical(signer, prepare_document(doc_type=doc_type, version=version, body=body))


def sign_canonical(signer: _Signer, canonical: str) -> SignedDocument:
    """Sign a text :func:`prepare_document` made (kept apart so that a caller can store the text
    in a transaction and sign it once that transaction is over)."""
    signature = signer.sign(canonical.encode("utf-8"))
    return SignedDocument(canonical=canonical, signature=bytes(signature).hex())


def prepare_document(*, doc_type: str, version: int, body: Mapping[str, Any]) -> str:
    """The canonical text of ``{**body, "type": doc_type, "version": version}``, to be signed."""
    if not isinstance(doc_type, str) or not doc_type:
        raise ValueError("doc_type must be a non-empty string")
    _check_version(version)
    clash = [k for k in _RESERVED if k in body]
    if clash:
        raise ValueError(f"body must not carry {', '.join(clash)}: sign_document sets them")
    canonical = canonical_json({**body, "type": doc_type, "version": version})
    try:  # never sign a text that no verifier would accept (NaN, non-string keys, ...)
        _parse_canonical(canonical)
    except ValueError as exc:
        raise ValueError(f"body does not survive canonical JSON: {exc}") from None
    return canonical


def _read_legacy(doc: dict[str, Any], doc_type: str) -> dict[str, Any] | None:
    """``doc`` read as its pre-``type`` version of ``doc_type``, or None if it is not one."""
    legacy = LEGACY.get(doc_type)
    if legacy is None or "version" in doc or doc.get(legacy.field) != legacy.value:
        return None
    if legacy.field != "type" and "type" in doc:
        return None
    rest = {k: v for k, v in doc.items() if k != legacy.field}
    return {**rest, "type": doc_type, "version": legacy.version}


def verify_document(
    public_key: bytes | Ed25519PublicKey,
    canonical: str,
    signature_hex: str,
    *,
    doc_type: str,
    versions: Collection[int],
) -> dict[str, Any]:
    """The verified document, always with ``type`` == ``doc_type`` and ``version`` in ``versions``.

    Raises :class:`SignedDocumentError` when the signature does not verify under ``public_key``
    (raw 32 bytes, or a key object), the text is not canonical JSON, or the type or version is
    not the one asked for. Legacy documents come back in their typed reading (see :data:`LEGACY`).
    """

    def reject(reason: str) -> SignedDocumentError:
        return SignedDocumentError(reason, doc_type=doc_type)

    key = (
        public_key
        if isinstance(public_key, Ed25519PublicKey)
        else Ed25519PublicKey.from_public_bytes(public_key)  # ValueError: not a key at all
    )
    try:
        key.verify(bytes.fromhex(signature_hex), canonical.encode("utf-8"))
    except (InvalidSignature, ValueError, TypeError):
        raise reject("signature does not verify under the trusted public key") from None
    try:
        doc = _parse_canonical(canonical)
    except ValueError as exc:
        raise reject(f"signed text is {exc}") from None

    legacy = _read_legacy(doc, doc_type)
    if legacy is not None:
        doc = legacy
    elif "type" not in doc:
        raise reject(f"type is missing, expected {doc_type!r}")
    elif doc["type"] != doc_type:
        raise reject(f"type is {doc['type']!r}, expected {doc_type!r}")
    version = doc.get("version")
    accepted = ", ".join(str(v) for v in sorted(versions))
    if not isinstance(version, int) or isinstance(version, bool) or version not in versions:
        raise reject(f"version {version!r} is not one of the accepted versions ({accepted})")
    form = LEGACY.get(doc_type)
    if legacy is None and form is not None and not form.typed and version == form.version:
        raise reject(f"version {version} exists only in its legacy form (no type)")
    return doc
