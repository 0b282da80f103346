"""Playback's early GETs (issue #12): a repeat read starts its ciphertext GET beside the
authorisation, and a refused read or another object version drops it."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest

from crypto import streaming
from tests.vault.playback.conftest import (
    FIRST,
    SEG,
    Env,
    _on_decrypt,
    _problem,
)
from vault.recordings import playback

# --- early GETs (issue #12) -----------------------------------------------------------------------


def _gets_before_authorisation(env: Env, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each later read: whether its first GET started before its authorisation ended."""
    started = threading.Event()
    seen: list[bool] = []
    env.store.before_read = started.set
    real = playback.grants.authorize_read

    def authorise(*args: Any, **kwargs: Any) -> Any:
        # An early GET runs in a helper thread: give it time to reach the store.
        seen.append(started.wait(timeout=2 if env.ctx.read_locations._items else 0.2))
        return real(*args, **kwargs)

    monkeypatch.setattr(playback.grants, "authorize_read", authorise)
    env.extra["started"] = started
    return seen


def test_a_repeat_read_starts_its_get_beside_the_authorisation(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second read of a recording by the same actor fetches its ciphertext while the grant
    is being checked; the bytes and the audit trail are those of any read."""
    gid = env.grant()
    seen = _gets_before_authorisation(env, monkeypatch)
    for start in (FIRST + SEG + 11, 5, FIRST + 3 * SEG):
        env.extra["started"].clear()
        r = env.get(grant=gid, Range=f"bytes={start}-{start + 70_000}")
        assert r.status_code == 206 and r.content == env.clip[start : start + 70_001]
    assert seen == [False, True, True]
    assert len(env.events("recording.read")) == 3


def test_an_early_get_sends_nothing_when_the_read_is_refused(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revoked grant: the early GET happens, but no byte is decrypted or sent, no read event
    is written and the denial is audited. Another principal, who never read the recording under
    a grant, makes no GET at all."""
    gid = env.grant()
    assert env.get(grant=gid, Range="bytes=10-99").status_code == 206
    env.revoke(gid)
    decrypted: list[bool] = []
    _on_decrypt(monkeypatch, lambda: decrypted.append(True))
    env.store.calls.clear()
    _problem(env.get(grant=gid, Range="bytes=10-99"), 403, "forbidden")
    assert env.store.calls  # fetched early, then dropped
    assert decrypted == [] and len(env.events("recording.read")) == 1
    assert env.events("permission.denied")
    env.store.calls.clear()
    _problem(env.get("eng2", Range="bytes=10-99"), 403, "forbidden")
    _problem(env.get("eng-globex", Range="bytes=10-99"), 404, "not-found")
    assert env.store.calls == [] and decrypted == []


def test_an_early_get_of_another_object_version_is_dropped(env: Env) -> None:
    """The row found by the authorisation decides: a remembered location that no longer names
    the recorded version (or size) costs a wasted GET, never wrong bytes."""
    gid = env.grant()
    assert env.get(grant=gid, Range="bytes=0-9").content == env.clip[:10]
    key = (env.actors["eng"].id, env.rid)
    real = env.ctx.read_locations.get(key)
    assert real is not None
    for stale in (
        dataclasses.replace(real, version_id="not-a-version"),
        dataclasses.replace(real, object_key=f"{real.object_key}-gone"),
        dataclasses.replace(real, ciphertext_size=real.ciphertext_size + streaming.SEGMENT_SIZE),
    ):
        env.ctx.read_locations.put(key, stale)
        start = FIRST + SEG - 3
        r = env.get(grant=gid, Range=f"bytes={start}-{start + 99}")
        assert r.status_code == 206 and r.content == env.clip[start : start + 100]
        assert env.ctx.read_locations.get(key) == real  # the row's location, remembered again
