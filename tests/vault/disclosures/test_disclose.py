"""Disclosing an approved request: age files the authority decrypts with the stock ``age``, a
signed manifest it verifies, one-time expiring downloads, and a re-run after a failure midway."""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.vault.disclosures.conftest import Authority, Register
from tests.vault.privacy.conftest import Vault, problem
from vault.audit.signing import SignedDocumentError
from vault.disclosures import disclose
from vault.exports import produce as real_produce


def _age_decrypt(authority: Authority, data: bytes, tmp: Path) -> bytes:
    path = tmp / "export.age"
    path.write_bytes(data)
    out = subprocess.run(
        ["age", "-d", "-i", str(authority.key_file), str(path)], capture_output=True, check=True
    )
    return out.stdout


@pytest.fixture
def package(vault: Vault, reg: Register, small_media: bytes) -> dict[str, Any]:
    rids = [vault.ingest(small_media, call_id="call-a"), vault.ingest(b"second" * 999, call_id="b")]
    d = reg.approved(reg.new(rids))
    r = reg.act(d, "disclose")
    assert r.status_code == 201, r.text
    return {"rids": rids, "media": {rids[0]: small_media, rids[1]: b"second" * 999}, **r.json()}


def test_the_exports_decrypt_with_age_to_the_original_bytes(
    reg: Register, authority: Authority, package: dict[str, Any], tmp_path: Path
) -> None:
    assert package["disclosure"]["status"] == "disclosed"
    assert len(package["downloads"]) == 2
    for item in package["downloads"]:
        r = reg.download(item)
        assert r.status_code == 200, r.text
        assert hashlib.sha256(r.content).hexdigest() == item["sha256"]
        plain = _age_decrypt(authority, r.content, tmp_path)
        assert plain == package["media"][next(i for i in package["rids"]
                                              if str(i) == item["recording_id"])]  # fmt: skip


def test_the_manifest_verifies_and_fails_when_one_byte_is_flipped(
    reg: Register, package: dict[str, Any]
) -> None:
    key = bytes.fromhex(package["public_key"])
    doc = disclose.verify_manifest(key, package["manifest"])
    assert doc["type"] == "callvault.disclosure-manifest" and doc["version"] == 1
    by_export = {r["export_id"]: r for r in doc["recordings"]}
    for item in package["downloads"]:
        entry = by_export[item["export_id"]]
        assert entry["recording_id"] == item["recording_id"]
        assert (entry["size"], entry["sha256"]) == (item["size"], item["sha256"])
    plain = hashlib.sha256(package["media"][package["rids"][0]]).hexdigest()
    assert plain in {r["plaintext_sha256"] for r in doc["recordings"]}
    statement = package["manifest"]["statement"]
    for i in (0, len(statement) // 2, len(statement) - 1):
        flipped = statement[:i] + chr(ord(statement[i]) ^ 1) + statement[i + 1 :]
        with pytest.raises(SignedDocumentError):
            disclose.verify_manifest(key, {**package["manifest"], "statement": flipped})
    # The register keeps the same signed manifest.
    assert reg.get(package["disclosure"]).json()["manifest"] == package["manifest"]


def test_a_download_works_once_then_403_and_after_expiry_410(
    vault: Vault, reg: Register, package: dict[str, Any]
) -> None:
    first, second = package["downloads"]
    problem(reg.download(first, token="not-the-token"), 403, "export-denied")
    problem(reg.download(first, token=""), 403, "export-denied")
    # The token is a header only: a query string carries no credential.
    problem(vault.client.get(first["path"] + f"?token={first['token']}"), 403, "export-denied")
    assert reg.download(first).status_code == 200
    problem(reg.download(first), 403, "export-used")
    vault.clock.advance(hours=vault.ctx.settings.disclosure_export_hours, seconds=1)
    problem(reg.download(second), 410, "export-gone")


def test_tokens_and_call_ids_stay_out_of_the_audit_log(
    vault: Vault, reg: Register, package: dict[str, Any]
) -> None:
    reg.download(package["downloads"][0])
    text = vault.audit_text()
    assert "call-a" not in text
    assert all(item["token"] not in text for item in package["downloads"])
    (event,) = vault.events("disclosure.disclose")
    assert event["details"]["recordings"] == 2 and "manifest_sha256" in event["details"]


def test_a_failure_midway_leaves_an_approved_disclosure_that_a_rerun_completes(
    vault: Vault, reg: Register, small_media: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    rids = [vault.ingest(small_media, call_id=f"c-{i}") for i in range(2)]
    d = reg.approved(reg.new(rids))
    calls: list[int] = []

    def crash_on_second(ctx: Any, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("worker killed")
        return real_produce(ctx, **kw)

    monkeypatch.setattr(disclose.exports, "produce", crash_on_second)
    with pytest.raises(OSError):
        vault.client.post(f"/v1/disclosures/{d['id']}/disclose", headers=vault.h("privacy"))
    after = reg.get(d).json()
    assert after["status"] == "approved" and after["manifest"] is None
    (orphan,) = reg.exports()
    assert orphan.revoked_at is not None  # its token never left: withdrawn
    monkeypatch.setattr(disclose.exports, "produce", real_produce)
    r = reg.act(d, "disclose")
    assert r.status_code == 201, r.text
    live = [e for e in reg.exports() if e.revoked_at is None]
    assert sorted(str(e.id) for e in live) == sorted(i["export_id"] for i in r.json()["downloads"])
    problem(reg.act(d, "disclose"), 409, "disclosure-state")  # only once


def test_a_crashed_run_is_superseded_by_the_next_claim(
    vault: Vault, reg: Register, small_media: bytes
) -> None:
    """A process that died after producing (no handler ran): the next run withdraws it."""
    rid = vault.ingest(small_media, call_id="c-x")
    d = reg.approved(reg.new([rid]))
    import uuid

    from crypto.age import parse_recipient
    from vault.models import ExportKind

    now = vault.clock()
    dead = real_produce(
        vault.ctx, kind=ExportKind.disclosure, subject_id=uuid.UUID(d["id"]), recording_id=rid,
        recipient=parse_recipient(d["recipient"]), expires_at=now + timedelta(hours=1), now=now,
    )  # fmt: skip
    r = reg.act(d, "disclose")
    assert r.status_code == 201, r.text
    rows = {e.id: e for e in reg.exports()}
    assert rows[dead.export_id].revoked_at is not None
    problem(reg.download({"path": r.json()["downloads"][0]["path"].replace(
        r.json()["downloads"][0]["export_id"], str(dead.export_id))}, token=dead.token),
        410, "export-gone")  # fmt: skip


def test_closing_withdraws_downloads_not_yet_taken(
    vault: Vault, reg: Register, package: dict[str, Any]
) -> None:
    r = reg.act(package["disclosure"], "close", {"reason": "the proceedings were discontinued"})
    assert r.status_code == 200 and r.json()["status"] == "closed"
    problem(reg.download(package["downloads"][0]), 410, "export-gone")
    assert json.dumps(r.json()["exports"])  # receipts, without tokens
    assert all("token" not in e for e in r.json()["exports"])
