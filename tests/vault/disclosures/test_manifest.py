"""The manifest as the recipient checks it: any flipped bit of the statement or the signature,
another document type signed with the same key, or a missing version is refused."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from vault.audit import signing
from vault.disclosures.disclose import DOC_TYPE, VERSION, verify_manifest

_KEY = Ed25519PrivateKey.generate()
_PUBLIC = _KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
_BODY = {
    "disclosure_id": "7b0b6f8e-3f4e-4d1c-9a59-5d0f4a3b2c1d", "revision": 1,
    "recordings": [{"recording_id": "r", "export_id": "e", "size": 1234,
                    "sha256": "ab" * 32, "plaintext_sha256": "cd" * 32}],
}  # fmt: skip
_SIGNED = signing.sign_document(_KEY, doc_type=DOC_TYPE, version=VERSION, body=_BODY)
_MANIFEST = {"statement": _SIGNED.canonical, "signature": _SIGNED.signature}


def test_a_manifest_verifies_with_its_type_and_version() -> None:
    doc = verify_manifest(_PUBLIC, _MANIFEST)
    assert (doc["type"], doc["version"]) == ("callvault.disclosure-manifest", 1)
    assert doc["recordings"] == _BODY["recordings"]


@given(field=st.sampled_from(["statement", "signature"]), where=st.integers(0, 10_000),
       bit=st.integers(0, 7))  # fmt: skip
def test_any_flipped_bit_is_refused(field: str, where: int, bit: int) -> None:
    # Bits of the signed bytes: the statement's UTF-8, the signature's raw bytes (its hex is
    # read in either case, so flipping a hex digit's case changes nothing signed).
    raw = bytearray(
        _MANIFEST[field].encode() if field == "statement" else bytes.fromhex(_MANIFEST[field])
    )
    i = where % len(raw)
    raw[i] ^= 1 << bit
    flipped = raw.decode("utf-8", "replace") if field == "statement" else raw.hex()
    try:
        verify_manifest(_PUBLIC, {**_MANIFEST, field: flipped})
    except signing.SignedDocumentError:
        return
    raise AssertionError(f"a manifest with {field}[{i}] flipped verified")


def test_another_document_type_under_the_same_key_is_refused() -> None:
    other = signing.sign_document(_KEY, doc_type=signing.EVIDENCE_REPORT, version=1, body=_BODY)
    try:
        verify_manifest(_PUBLIC, {"statement": other.canonical, "signature": other.signature})
    except signing.SignedDocumentError as exc:
        assert "type" in exc.reason
    else:
        raise AssertionError("an evidence report passed for a manifest")
