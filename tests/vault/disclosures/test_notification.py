"""The customer's notification: given, or barred until a review date that the job flags; and
what subject access shows (nothing of a barred disclosure)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from jobs import tasks
from tests.vault.disclosures.conftest import Register
from tests.vault.privacy.conftest import Vault, problem


def _bar(vault: Vault, reg: Register, d: dict[str, Any], days: float) -> Any:
    when = (vault.clock() + timedelta(days=days)).isoformat()
    return reg.act(d, "notification", {
        "barred": True, "legal_reference": "§ 101 StPO: notification deferred", "review_at": when,
    })  # fmt: skip


def test_a_barred_notification_is_flagged_once_its_review_date_passes(
    vault: Vault, reg: Register, small_media: bytes
) -> None:
    d = reg.new([vault.ingest(small_media, call_id="call-1")])
    assert _bar(vault, reg, d, days=30).status_code == 200
    assert tasks.run("review-barred-notifications", vault.ctx, vault.clock()).startswith("0 ")
    assert reg.get(d).json()["notification_review_due"] is False
    vault.clock.advance(days=31)
    assert tasks.run("review-barred-notifications", vault.ctx, vault.clock()).startswith("1 ")
    assert tasks.run("review-barred-notifications", vault.ctx, vault.clock()).startswith("0 ")
    due = reg.get(d).json()
    assert due["notification_review_due"] is True and due["notification_barred"] is True
    (event,) = vault.events("disclosure.notification.review_due")
    assert event["target"] == d["id"]
    # Barred again with a new date: flagged again when that one passes.
    assert _bar(vault, reg, d, days=10).json()["notification_review_due"] is False
    vault.clock.advance(days=11)
    assert tasks.run("review-barred-notifications", vault.ctx, vault.clock()).startswith("1 ")


def test_a_notification_needs_its_fields(vault: Vault, reg: Register, small_media: bytes) -> None:
    d = reg.new([vault.ingest(small_media, call_id="call-1")])
    problem(reg.act(d, "notification", {"barred": True}), 422, "invalid-input")
    problem(reg.act(d, "notification", {"channel": "e-mail"}), 422, "invalid-input")


def _subject_access(vault: Vault, call_id: str) -> dict[str, Any]:
    r = vault.post("privacy", "/v1/subject-access", {"tenant": "acme", "call_ids": [call_id]})
    assert r.status_code == 200, r.text
    return r.json()


def test_subject_access_shows_disclosures_unless_barred(
    vault: Vault, reg: Register, small_media: bytes
) -> None:
    shown = reg.new([vault.ingest(small_media, call_id="call-open")])
    hidden = reg.new([vault.ingest(small_media, call_id="call-barred")])
    assert _bar(vault, reg, hidden, days=30).status_code == 200
    now = vault.clock().isoformat()
    notified = reg.act(shown, "notification", {"notified_at": now, "channel": "customer DPO"})
    assert notified.status_code == 200 and notified.json()["notified_at"] is not None
    (entry,) = _subject_access(vault, "call-open")["disclosures"]
    assert entry["disclosure_id"] == shown["id"] and entry["notified_at"] is not None
    assert _subject_access(vault, "call-barred")["disclosures"] == []
    assert "call-barred" not in vault.audit_text()
