"""Suite-wide rules and the real servers, each started once per session.

A fixture whose server cannot be had fails the tests that need it (``pytest.fail``); it never
skips them. With ``CI`` set, any skip at all counts as a failure.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.bao import BaoStartError, run_bao
from tests.support.postgres import postgres_server
from tests.support.weed import WeedServer, run_weed


@dataclass(frozen=True)
class Bao:
    url: str
    token: str


@pytest.fixture(scope="session")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    """A running OpenBao dev server with Transit enabled."""
    with contextlib.ExitStack() as stack:
        error: BaoStartError | None = None
        try:
            url, token = stack.enter_context(run_bao(tmp_path_factory.mktemp("bao")))
        except BaoStartError as exc:
            error = exc
        if error is not None:  # fail outside the except block: one clean message, no chain
            pytest.fail(f"OpenBao is required for these tests: {error}", pytrace=False)
        yield Bao(url=url, token=token)


def _weed(tmp_path_factory: pytest.TempPathFactory, name: str, what: str) -> Iterator[WeedServer]:
    try:
        cm = run_weed(tmp_path_factory.mktemp(name))
        server = cm.__enter__()
    except RuntimeError as exc:
        pytest.fail(f"{what} could not be started: {exc}", pytrace=False)
    try:
        yield server
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedServer]:
    yield from _weed(tmp_path_factory, "weed", "SeaweedFS")


@pytest.fixture(scope="session")
def weed_eea(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedServer]:
    """A second SeaweedFS server: another region's object store (data residency tests)."""
    yield from _weed(tmp_path_factory, "weed-eea", "SeaweedFS (second region)")


TRANSIT_EEA_MOUNT = "transit-eea"


@pytest.fixture(scope="session")
def transit_eea(bao: Bao) -> str:
    """A second Transit mount in the one OpenBao: another region's key provider. Its name."""
    import hvac

    hvac.Client(url=bao.url, token=bao.token).sys.enable_secrets_engine(
        "transit", path=TRANSIT_EEA_MOUNT
    )
    return TRANSIT_EEA_MOUNT


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """Base URL (no database) of a real PostgreSQL server."""
    try:
        cm = postgres_server()
        url = cm.__enter__()
    except RuntimeError as exc:
        pytest.fail(f"PostgreSQL could not be had: {exc}", pytrace=False)
    try:
        yield url
    finally:
        cm.__exit__(None, None, None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """In CI a skipped test is a failed test: a missing server must never pass silently."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {report.longrepr}"
