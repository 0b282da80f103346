"""Media tokens and the origin rule, as pure functions (no server): property tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from vault.console import sessions
from vault.models import ConsoleSession

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _row(key: bytes) -> ConsoleSession:
    return ConsoleSession(
        token_hash="0" * 64, principal_id=uuid.uuid4(), api_key_id=uuid.uuid4(), role="engineer",
        csrf_token="c", media_key=key.hex(), created_at=NOW, last_seen_at=NOW,
        expires_at=NOW + timedelta(hours=12),
    )  # fmt: skip


keys = st.binary(min_size=32, max_size=32)
ids = st.uuids()


@given(keys, keys, ids, ids, ids, st.integers(min_value=1, max_value=10**6))
def test_a_media_token_opens_only_its_own_grant_recording_and_session_until_it_expires(
    key: bytes, other_key: bytes, grant: uuid.UUID, rec: uuid.UUID, other: uuid.UUID, ttl: int
) -> None:
    row = _row(key)
    expires = NOW + timedelta(seconds=ttl)
    token = sessions.media_token(row, grant_id=grant, recording_id=rec, expires=expires)

    def ok(r: ConsoleSession = row, g: uuid.UUID = grant, rid: uuid.UUID = rec,
           now: datetime = NOW, t: str = token) -> bool:  # fmt: skip
        return sessions.check_media_token(r, token=t, grant_id=g, recording_id=rid, now=now)

    assert ok()
    assert not ok(now=expires)  # valid strictly before its expiry
    if other != rec:
        assert not ok(rid=other)
    if other != grant:
        assert not ok(g=other)
    if other_key != key:
        assert not ok(r=_row(other_key))


@given(keys, ids, ids, st.data())
def test_any_changed_character_of_a_token_is_refused(
    key: bytes, grant: uuid.UUID, rec: uuid.UUID, data: st.DataObject
) -> None:
    row = _row(key)
    token = sessions.media_token(
        row, grant_id=grant, recording_id=rec, expires=NOW + timedelta(hours=1)
    )
    i = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    c = data.draw(st.sampled_from(alphabet).filter(lambda ch: ch != token[i]))
    tampered = token[:i] + c + token[i + 1 :]
    # 24 bytes make 32 base64 characters with no spare bits: every character counts.
    valid = sessions.check_media_token(
        row, token=tampered, grant_id=grant, recording_id=rec, now=NOW
    )
    assert not valid


@given(
    st.sampled_from([None, "null", "http://h:1", "http://h:2", "https://evil.example"]),
    st.sampled_from([None, "same-origin", "same-site", "cross-site", "none"]),
)
def test_a_browser_that_says_another_origin_is_always_refused(
    origin: str | None, fetch_site: str | None
) -> None:
    refused = sessions.cross_origin(origin=origin, fetch_site=fetch_site, own_origin="http://h:1")
    says_other = fetch_site in ("same-site", "cross-site") or origin in (
        "http://h:2",
        "https://evil.example",
    )
    assert refused is says_other
