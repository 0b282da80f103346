"""Signed documents: the one recipe (type and version inside what is signed), every rejection,
the legacy reading of pre-typed checkpoints and receipts, and cross-type confusion."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from vault.audit import signing
from vault.audit.signing import CHECKPOINT, ERASURE_RECEIPT, SignedDocumentError
from vault.errors import IntegrityError

BODY: dict[str, Any] = {"chain_id": "global", "head_seq": 7, "head_hash": "ab" * 32,
                        "ts": "2026-11-25T12:00:00.000000Z", "prev_checkpoint": None}  # fmt: skip
# Written by hand, byte for byte: sorted keys, no spaces, type and version among the fields.
SIGNED_TEXT = (
    '{"chain_id":"global","head_hash":"' + "ab" * 32 + '","head_seq":7,"prev_checkpoint":null,'
    '"ts":"2026-11-25T12:00:00.000000Z","type":"callvault.audit-checkpoint","version":2}'
)
# A checkpoint statement as written before type/version existed.
LEGACY_CHECKPOINT = (
    '{"chain_id":"global","format":"callvault-checkpoint/1","head_hash":"' + "cd" * 32 + '",'
    '"head_seq":3,"prev_checkpoint":null,"ts":"2026-11-24T08:00:00.000000Z"}'
)
LEGACY_RECEIPT = (
    '{"holds_checked":[],"items":[],"on_time":true,"request_id":"r-1",'
    '"type":"callvault.erasure-receipt/v1"}'
)


class Key:
    """A locally generated Ed25519 key, as a ``sign(message) -> bytes`` signer."""

    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.public = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)

    def sign_text(self, text: str) -> str:
        return self.sign(text.encode("utf-8")).hex()


@pytest.fixture
def key() -> Key:
    return Key()


def verify(key: Key, text: str, signature: str | None = None, *, doc_type: str = CHECKPOINT,
           versions: tuple[int, ...] = (1, 2)) -> dict[str, Any]:  # fmt: skip
    sig = key.sign_text(text) if signature is None else signature
    return signing.verify_document(key.public, text, sig, doc_type=doc_type, versions=versions)


def rejected(key: Key, text: str, signature: str | None = None, **kw: Any) -> str:
    with pytest.raises(SignedDocumentError) as caught:
        verify(key, text, signature, **kw)
    return caught.value.reason


# --- signing -------------------------------------------------------------------------------------


def test_round_trip_signs_type_and_version_inside_the_text(key: Key) -> None:
    signed = signing.sign_document(key, doc_type=CHECKPOINT, version=2, body=BODY)
    assert signed.canonical == SIGNED_TEXT
    assert len(bytes.fromhex(signed.signature)) == 64
    doc = signing.verify_document(
        key.public, signed.canonical, signed.signature, doc_type=CHECKPOINT, versions=(2,)
    )
    assert doc == {**BODY, "type": CHECKPOINT, "version": 2}
    assert signed.sha256 == hashlib.sha256(SIGNED_TEXT.encode()).hexdigest()


def test_non_ascii_text_is_kept_and_verifies(key: Key) -> None:
    signed = signing.sign_document(key, doc_type=ERASURE_RECEIPT, version=1,
                                   body={"reason": "Geprüft ✓"})  # fmt: skip
    assert signed.canonical == (
        '{"reason":"Geprüft ✓","type":"callvault.erasure-receipt","version":1}'
    )
    assert verify(key, signed.canonical, signed.signature, doc_type=ERASURE_RECEIPT,
                  versions=(1,))["reason"] == "Geprüft ✓"  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"body": {**BODY, "type": "x"}}, "type"),
        ({"body": {**BODY, "version": 9}}, "version"),
        ({"version": 0}, "version"),
        ({"version": True}, "version"),
        ({"version": "2"}, "version"),
        ({"doc_type": ""}, "doc_type"),
        ({"body": {"x": float("nan")}}, "canonical"),
    ],
)
def test_sign_refuses_bad_input(key: Key, kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"doc_type": CHECKPOINT, "version": 2, "body": BODY, **kwargs}
    with pytest.raises(ValueError, match=message):
        signing.sign_document(key, **args)


# --- rejections ----------------------------------------------------------------------------------


def test_signed_document_error_is_an_integrity_error(key: Key) -> None:
    with pytest.raises(IntegrityError) as caught:
        verify(key, SIGNED_TEXT, doc_type=ERASURE_RECEIPT)
    assert caught.value.code == "integrity-failure"
    assert "callvault.erasure-receipt document rejected" in str(caught.value)


def test_wrong_type_is_rejected(key: Key) -> None:
    text = SIGNED_TEXT.replace("callvault.audit-checkpoint", "callvault.audit-report")
    assert "type is 'callvault.audit-report'" in rejected(key, text)


def test_missing_type_is_rejected(key: Key) -> None:
    text = SIGNED_TEXT.replace('"type":"callvault.audit-checkpoint",', "")
    assert "type is missing" in rejected(key, text)


@pytest.mark.parametrize("version", ["3", "0", '"2"', "2.0", "null", "[2]"])
def test_version_not_accepted_is_rejected(key: Key, version: str) -> None:
    text = SIGNED_TEXT.replace('"version":2', f'"version":{version}')
    assert "not one of the accepted versions (1, 2)" in rejected(key, text)


def test_bool_version_is_rejected(key: Key) -> None:
    text = SIGNED_TEXT.replace('"version":2', '"version":true')  # True == 1 in Python
    assert "version True" in rejected(key, text, versions=(1,))


def test_missing_version_is_rejected(key: Key) -> None:
    text = SIGNED_TEXT.replace(',"version":2', "")
    assert "version None" in rejected(key, text)


def test_flipped_byte_is_rejected(key: Key) -> None:
    signature = key.sign_text(SIGNED_TEXT)
    for i in (0, len(SIGNED_TEXT) // 2, len(SIGNED_TEXT) - 2):
        flipped = SIGNED_TEXT[:i] + chr(ord(SIGNED_TEXT[i]) ^ 1) + SIGNED_TEXT[i + 1 :]
        assert "signature does not verify" in rejected(key, flipped, signature)
    assert verify(key, SIGNED_TEXT, signature)["head_seq"] == 7  # the original still does


@pytest.mark.parametrize("signature", ["00" * 64, "zz", "", "ab" * 63])
def test_malformed_or_wrong_signature_is_rejected(key: Key, signature: str) -> None:
    assert "signature does not verify" in rejected(key, SIGNED_TEXT, signature)


def test_signature_from_another_key_is_rejected(key: Key) -> None:
    other = Key()
    assert "signature does not verify" in rejected(key, SIGNED_TEXT, other.sign_text(SIGNED_TEXT))


@pytest.mark.parametrize(
    "text",
    [
        SIGNED_TEXT.replace('"head_seq":7,', '"head_seq": 7,'),  # a space
        SIGNED_TEXT + "\n",
        json.dumps(json.loads(SIGNED_TEXT), sort_keys=True),  # default separators
        json.dumps(dict(reversed(json.loads(SIGNED_TEXT).items())), separators=(",", ":")),
        SIGNED_TEXT.replace('"head_seq":7', '"head_seq":7,"head_seq":7'),  # duplicate key
        SIGNED_TEXT.replace('"head_seq":7', '"head_seq":7.00'),  # a number re-spelt
        SIGNED_TEXT.replace('"global"', '"\\u0067lobal"'),  # an escape instead of the character
        SIGNED_TEXT.replace('"head_seq":7', '"head_seq":NaN'),
        "[" + SIGNED_TEXT + "]",
        "not json",
    ],
)
def test_non_canonical_text_is_rejected_even_when_signed(key: Key, text: str) -> None:
    assert "signed text is not" in rejected(key, text)  # the signature itself is genuine


def test_public_key_object_or_bytes(key: Key) -> None:
    signature = key.sign_text(SIGNED_TEXT)
    public = key.private.public_key()
    doc = signing.verify_document(public, SIGNED_TEXT, signature, doc_type=CHECKPOINT,
                                  versions=[2])  # fmt: skip
    assert doc["version"] == 2
    with pytest.raises(ValueError):
        signing.verify_document(b"short", SIGNED_TEXT, signature, doc_type=CHECKPOINT,
                                versions=[2])  # fmt: skip


# --- legacy documents ----------------------------------------------------------------------------


def test_legacy_checkpoint_is_read_as_checkpoint_v1(key: Key) -> None:
    doc = verify(key, LEGACY_CHECKPOINT)
    assert doc == {"chain_id": "global", "head_hash": "cd" * 32, "head_seq": 3,
                   "prev_checkpoint": None, "ts": "2026-11-24T08:00:00.000000Z",
                   "type": CHECKPOINT, "version": 1}  # fmt: skip
    # ...only where version 1 is accepted, and never as a receipt.
    assert "version 1 is not one of the accepted versions (2)" in rejected(
        key, LEGACY_CHECKPOINT, versions=(2,)
    )
    reason = rejected(key, LEGACY_CHECKPOINT, doc_type=ERASURE_RECEIPT, versions=(1,))
    assert "type is missing, expected 'callvault.erasure-receipt'" in reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (("checkpoint/1", "checkpoint/2"), "type is missing"),
        (('"format":"callvault-checkpoint/1",', ""), "type is missing"),
        (('Z"}', 'Z","type":"callvault.audit-checkpoint"}'), "version None"),
        (('Z"}', 'Z","version":1}'), "type is missing"),
        (('Z"}', 'Z","type":"x"}'), "type is 'x'"),
    ],
)  # fmt: skip
def test_other_untyped_shapes_are_not_legacy(
    key: Key, change: tuple[str, str], reason: str
) -> None:
    text = LEGACY_CHECKPOINT.replace(*change)
    assert text != LEGACY_CHECKPOINT
    assert reason in rejected(key, text)


def test_checkpoint_v1_exists_only_in_its_legacy_form(key: Key) -> None:
    typed_v1 = signing.sign_document(key, doc_type=CHECKPOINT, version=1, body=BODY)
    reason = rejected(key, typed_v1.canonical, typed_v1.signature)
    assert "version 1 exists only in its legacy form" in reason


def test_legacy_receipt_is_read_as_receipt_v1(key: Key) -> None:
    doc = verify(key, LEGACY_RECEIPT, doc_type=ERASURE_RECEIPT, versions=(1,))
    assert doc["type"] == ERASURE_RECEIPT and doc["version"] == 1 and doc["request_id"] == "r-1"
    assert "type is 'callvault.erasure-receipt/v1'" in rejected(key, LEGACY_RECEIPT)
    # A legacy-looking type with a version is neither form.
    text = LEGACY_RECEIPT.replace('/v1"}', '/v1","version":1}')
    assert "type is 'callvault.erasure-receipt/v1'" in rejected(
        key, text, doc_type=ERASURE_RECEIPT, versions=(1,)
    )


# --- cross-type confusion ------------------------------------------------------------------------


def test_receipt_is_rejected_by_the_checkpoint_verifier(key: Key) -> None:
    receipt = signing.sign_document(key, doc_type=ERASURE_RECEIPT, version=1, body=BODY)
    assert "type is 'callvault.erasure-receipt', expected 'callvault.audit-checkpoint'" in (
        rejected(key, receipt.canonical, receipt.signature, versions=(1, 2))
    )
    checkpoint = signing.sign_document(key, doc_type=CHECKPOINT, version=2, body=BODY)
    assert "type is 'callvault.audit-checkpoint'" in rejected(
        key, checkpoint.canonical, checkpoint.signature, doc_type=ERASURE_RECEIPT, versions=(1, 2)
    )
