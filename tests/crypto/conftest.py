"""Fixtures for the crypto tests: a real OpenBao, started once per session."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.bao import BaoStartError, run_bao


@dataclass(frozen=True)
class Bao:
    url: str
    token: str


@pytest.fixture(scope="session")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    """A running OpenBao dev server with Transit enabled. Fails (never skips) if unavailable."""
    with contextlib.ExitStack() as stack:
        error: BaoStartError | None = None
        try:
            url, token = stack.enter_context(run_bao(tmp_path_factory.mktemp("bao")))
        except BaoStartError as exc:
            error = exc
        if error is not None:  # fail outside the except block: one clean message, no chain
            pytest.fail(f"OpenBao is required for these tests: {error}", pytrace=False)
        yield Bao(url=url, token=token)
