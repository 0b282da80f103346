"""The producer/uploader overlap: results, and failures on either side stopping the other."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.recordings.pipeline import pipelined


@settings(max_examples=25, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=64), max_size=40), st.integers(1, 5))
def test_consumer_sees_every_chunk_in_order(chunks: list[bytes], depth: int) -> None:
    assert pipelined(iter(chunks), lambda it: b"".join(it), depth=depth) == b"".join(chunks)


def test_producer_failure_aborts_consumer_and_is_reraised() -> None:
    seen: list[BaseException] = []

    def produce() -> Iterator[bytes]:
        yield b"a"
        raise ConnectionResetError("client went away")

    def consume(it: Iterator[bytes]) -> int:
        try:
            return sum(len(c) for c in it)
        except BaseException as exc:
            seen.append(exc)
            raise

    with pytest.raises(ConnectionResetError):
        pipelined(produce(), consume)
    assert seen, "the consumer must see an error, so a multipart upload gets aborted"


def test_consumer_failure_stops_production() -> None:
    produced = 0

    def produce() -> Iterator[bytes]:
        nonlocal produced
        for _ in range(10_000):
            produced += 1
            yield b"x"

    def consume(it: Iterator[bytes]) -> None:
        next(it)
        raise OSError("store down")

    with pytest.raises(OSError, match="store down"):
        pipelined(produce(), consume, depth=2)
    assert produced < 100
