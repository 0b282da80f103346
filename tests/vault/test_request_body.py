"""The streaming request body (``vault.api.body``) against an in-memory ASGI ``receive``: the
idle timeout counts from the last byte, not from the start of a batch (a body that trickles in
slower than a batch per ``idle`` seconds is read whole); a body that stops is dropped once
``idle`` seconds passed without a byte, not before; a client that goes away is an incomplete
body; the chunks come through in order, untouched, whatever their sizes."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

import anyio
import anyio.to_thread
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.api.body import RequestBody
from vault.errors import IncompleteBodyError, UploadTimeoutError


def _receive(
    script: Sequence[tuple[float, dict[str, object]]],
) -> Callable[[], Awaitable[dict[str, object]]]:
    """An ASGI receive that answers each message of ``script`` after its delay; then hangs."""
    messages = iter(script)

    async def receive() -> dict[str, object]:
        try:
            delay, message = next(messages)
        except StopIteration:
            await anyio.sleep_forever()
        await anyio.sleep(delay)
        return message

    return receive


def _read(body: RequestBody) -> tuple[list[bytes], BaseException | None, float]:
    async def main() -> tuple[list[bytes], BaseException | None, float]:
        got: list[bytes] = []
        error: BaseException | None = None
        started = time.monotonic()

        def pull() -> None:
            nonlocal error
            try:
                got.extend(body.chunks())
            except Exception as exc:
                error = exc

        await anyio.to_thread.run_sync(pull)
        return got, error, time.monotonic() - started

    return anyio.run(main)


def _chunk(data: bytes, more: bool = True) -> dict[str, object]:
    return {"type": "http.request", "body": data, "more_body": more}


def test_a_trickling_body_is_read_whole_though_a_batch_takes_longer_than_idle() -> None:
    script = [(0.15, _chunk(b"a" * 10)) for _ in range(8)] + [(0.15, _chunk(b"", more=False))]
    got, error, took = _read(RequestBody(_receive(script), idle=0.5))
    assert error is None
    assert b"".join(got) == b"a" * 80
    assert took > 1.0  # longer than two idle periods in all, never idle for one


def test_a_body_that_stops_is_dropped_after_idle_seconds_without_a_byte() -> None:
    script = [(0.0, _chunk(b"a" * 10)), (0.3, _chunk(b"b" * 10))]  # then nothing
    _, error, took = _read(RequestBody(_receive(script), idle=0.6))
    assert isinstance(error, UploadTimeoutError)
    assert "0.6 s" in str(error)
    assert 0.3 + 0.6 * 0.95 <= took < 0.3 + 0.6 + 1.0  # from the last byte, not the first


def test_a_client_that_goes_away_is_an_incomplete_body() -> None:
    script = [(0.0, _chunk(b"a" * 10)), (0.0, {"type": "http.disconnect"})]
    _, error, _ = _read(RequestBody(_receive(script), idle=5))
    assert isinstance(error, IncompleteBodyError)


@settings(max_examples=30, deadline=None)
@given(
    parts=st.lists(st.binary(min_size=0, max_size=3000), max_size=12),
    batch=st.integers(min_value=1, max_value=5000),
)
def test_chunks_come_through_in_order_and_untouched(parts: list[bytes], batch: int) -> None:
    script = [(0.0, _chunk(p)) for p in parts] + [(0.0, _chunk(b"", more=False))]
    got, error, _ = _read(RequestBody(_receive(script), idle=5, batch=batch))
    assert error is None
    assert got == [p for p in parts if p]


@pytest.mark.parametrize("empty_end", [True, False])
def test_the_body_ends_at_the_last_message_whether_or_not_it_carries_bytes(
    empty_end: bool,
) -> None:
    last = _chunk(b"", more=False) if empty_end else _chunk(b"end", more=False)
    script = [(0.0, _chunk(b"start")), (0.0, last)]
    got, error, _ = _read(RequestBody(_receive(script), idle=5))
    assert error is None
    assert b"".join(got) == (b"start" if empty_end else b"startend")


def test_the_first_batch_is_handed_over_before_the_rest_of_the_body_comes() -> None:
    """The recording's row and its upload start as soon as a first batch is there: a small
    first batch goes to the worker while later (larger) batches are still being read."""
    sent_at: list[float] = []
    script = [(0.0, _chunk(b"a" * 1024)), (0.0, _chunk(b"b" * 1024))]
    script += [(0.2, _chunk(b"c" * 1024)) for _ in range(3)] + [(0.0, _chunk(b"", more=False))]
    base = _receive(script)

    async def receive() -> dict[str, object]:
        message = await base()
        sent_at.append(time.monotonic())
        return message

    got_at: list[float] = []

    async def main() -> None:
        body = RequestBody(receive, idle=5, batch=16 * 1024, first=2 * 1024)

        def pull() -> None:
            for _ in body.chunks():
                got_at.append(time.monotonic())

        await anyio.to_thread.run_sync(pull)

    anyio.run(main)
    assert len(got_at) == 5
    assert got_at[0] < sent_at[2]  # the first two chunks reached the worker before the third came
    assert got_at[2] >= sent_at[-1]  # the rest came as one batch, at the end of the body
