"""Every job run logs one structured JSON line (job, outcome, counts as numbers, duration) and is
recorded in ``job_status``: through ``jobs run`` in-process, and from a real ``worker`` process."""

from __future__ import annotations

import io
import json
import logging
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs import tasks
from tests.jobs.helpers import cli_env, ingest, make_tenant, start_cli
from vault.context import Context
from vault.logs import JsonFormatter
from vault.models import JobStatus

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def job_log() -> Iterator[Lines]:
    """The job runner's lines, formatted as ``logs.configure`` formats them, parsed."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("jobs.tasks")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)  # setLevel, not .level: it clears the logger's level cache
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def test_a_run_logs_one_line_with_numeric_counts(ctx: Context, job_log: Lines) -> None:
    tenant = make_tenant(ctx)
    ingest(ctx, tenant, b"x" * 100)
    summary = tasks.run("scrub", ctx, ctx.now(), sample=5)
    (line,) = job_log()
    assert line["job"] == "scrub" and line["outcome"] == "ok" and line["level"] == "info"
    assert line["msg"] == f"job scrub: {summary}"
    assert line["counts"] == {"sampled": 1, "intact": 1, "failed": 0, "errors": 0}
    assert isinstance(line["duration_ms"], float) and 0 <= line["duration_ms"] < 60_000
    with ctx.db.session() as s:
        row = s.get(JobStatus, "scrub")
    assert row is not None and row.runs == 1 and row.last_outcome == "ok"


def test_a_failed_run_logs_its_error_line_once_and_is_counted(ctx: Context, job_log: Lines) -> None:
    def boom(*_: Any, **__: Any) -> str:
        raise RuntimeError("the store is down")

    outcomes = {o.name: o for o in _run_all_with(ctx, "sweep-orphans", boom)}
    assert not outcomes["sweep-orphans"].ok
    lines = job_log()
    failed = [line for line in lines if line["job"] == "sweep-orphans"]
    assert len(failed) == 1
    (line,) = failed
    assert line["outcome"] == "error" and line["level"] == "error" and line["counts"] == {}
    assert line["msg"] == "job sweep-orphans failed: RuntimeError"
    assert "RuntimeError: the store is down" in line["error"]  # the traceback
    # Every other job of the run logged its own single line.
    assert sorted(line["job"] for line in lines) == sorted(tasks.RUN_ALL_ORDER)
    with ctx.db.session() as s:
        row = s.get(JobStatus, "sweep-orphans")
    assert row is not None and (row.failures, row.consecutive_failures) == (1, 1)
    assert row.last_success_at is None


def _run_all_with(ctx: Context, name: str, fn: Callable[..., Any]) -> list[tasks.JobOutcome]:
    original = tasks.JOBS[name]
    tasks.JOBS[name] = fn
    try:
        return tasks.run_all(ctx, ctx.now())
    finally:
        tasks.JOBS[name] = original


def test_a_worker_process_logs_json_lines_and_records_its_runs(
    make_ctx: Callable[..., Context], tmp_path: Path
) -> None:
    ctx = make_ctx()
    ingest(ctx, make_tenant(ctx), b"a recording")
    env = cli_env(ctx.settings, CALLVAULT_JOB_INTERVAL_SECONDS="0.5")
    worker = start_cli(["worker"], env, tmp_path)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and worker.poll() is None:
            with ctx.db.session() as s:
                row = s.get(JobStatus, "dispose")
            if row is not None and row.runs >= 2:
                break
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    assert row is not None and row.runs >= 2 and row.failures == 0, stderr[-2000:]
    parsed = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    runs = [line for line in parsed if line.get("logger") == "jobs.tasks"]
    dispose = [line for line in runs if line["job"] == "dispose"]
    assert len(dispose) >= 2
    assert dispose[0]["outcome"] == "ok" and dispose[0]["counts"]["disposed"] == 0
    assert all(isinstance(v, int) for v in dispose[0]["counts"].values())
    assert {line["job"] for line in runs} >= {"dispose", "scrub", "erasure", "metrics-rollup"}
