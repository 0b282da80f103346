"""The scheduler's job settings, `callvault jobs run`, `keys`, `worker` and `serve` with its
in-process scheduler."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.job import Job
from apscheduler.schedulers.base import BaseScheduler
from typer.testing import CliRunner

from jobs import tasks
from jobs.scheduler import MIN_MISFIRE_GRACE_SECONDS, build_scheduler, run_job
from tests.jobs.helpers import cli_env, events, ingest, make_tenant, start_cli
from tests.support.server import free_port
from vault.cli import app
from vault.context import Context

NAMES = {"expire-purposes", "dispose", "redact", "erasure", "expire-grants", "sweep-orphans",
         "kek-cycle", "audit-sequence", "audit-checkpoint", "metrics-rollup", "scrub",
         "clear-revoked-owners", "purge-exports", "review-barred-notifications",
         "transcription-handoffs"}  # fmt: skip


def _jobs(scheduler: BaseScheduler) -> dict[str, Job]:
    return {job.id: job for job in scheduler.get_jobs()}


def test_every_job_is_registered_under_its_own_name(make_ctx: Callable[..., Context]) -> None:
    ctx = make_ctx()
    jobs = _jobs(build_scheduler(ctx, blocking=False))
    assert set(jobs) == NAMES == set(tasks.JOBS)
    for name, job in jobs.items():
        assert job.name == name
        # Each id runs its own task (through run_job, which never lets an exception escape).
        assert job.func is run_job, name
        job_ctx, job_name, fn, _opts = job.args
        assert job_ctx is ctx and job_name == name and fn is tasks.JOBS[name], name


def test_run_all_covers_every_job_grants_first_scrub_last() -> None:
    assert set(tasks.RUN_ALL_ORDER) == NAMES
    assert tasks.RUN_ALL_ORDER[0] == "expire-grants" and tasks.RUN_ALL_ORDER[-1] == "scrub"


@pytest.mark.parametrize("interval", [7.5, 30, 90])
def test_each_job_runs_at_the_configured_interval_without_pile_ups(
    make_ctx: Callable[..., Context], interval: float
) -> None:
    ctx = make_ctx(job_interval_seconds=interval, audit_sequence_interval_seconds=2.5)
    jobs = _jobs(build_scheduler(ctx, blocking=False))
    assert set(jobs) == NAMES
    assert MIN_MISFIRE_GRACE_SECONDS >= 60
    own = {"kek-cycle": timedelta(hours=1), "audit-sequence": timedelta(seconds=2.5)}
    for name, job in jobs.items():
        period = own.get(name, timedelta(seconds=interval))
        assert job.trigger.interval == period, name
        # A busy box delays runs: late runs collapse into one, never overlap, and are not
        # dropped for being a few seconds late.
        assert job.coalesce is True and job.max_instances == 1, name
        assert job.misfire_grace_time >= MIN_MISFIRE_GRACE_SECONDS, name


def test_every_job_first_runs_within_one_interval_of_start(
    make_ctx: Callable[..., Context],
) -> None:
    ctx = make_ctx(job_interval_seconds=30)
    before = datetime.now(UTC)
    scheduler = build_scheduler(ctx, blocking=False)
    scheduler.start(paused=True)
    try:
        after = datetime.now(UTC)
        jobs = _jobs(scheduler)
    finally:
        scheduler.shutdown(wait=False)
    assert set(jobs) == NAMES
    for name, job in jobs.items():
        # kek-cycle included: hourly, but a worker restarted often must still rotate.
        assert before < job.next_run_time <= after + timedelta(seconds=31), name
    assert jobs["kek-cycle"].trigger.interval == timedelta(hours=1)


def test_kek_cycle_runs_soon_after_start_as_this_process(
    make_ctx: Callable[..., Context],
) -> None:
    ctx = make_ctx(job_interval_seconds=0.05)
    ran = threading.Event()
    seen: dict[str, Any] = {}

    def fake_kek_cycle(_ctx: Context, _now: datetime, **opts: Any) -> str:
        seen.update(opts)
        ran.set()
        return "no rotation due"

    scheduler = build_scheduler(ctx, blocking=False, jobs={"kek-cycle": fake_kek_cycle})
    scheduler.start()
    try:
        assert ran.wait(5), "kek-cycle did not run soon after start"
    finally:
        scheduler.shutdown(wait=True)
    assert set(seen) == {"holder"}
    assert f":{os.getpid()}:" in seen["holder"]  # the lease names this process


@pytest.mark.parametrize("blocking", [True, False])
def test_start_blocks_until_shutdown_only_for_the_worker(
    make_ctx: Callable[..., Context], blocking: bool
) -> None:
    ctx = make_ctx(job_interval_seconds=0.05)
    ran = threading.Event()
    returned = threading.Event()

    def record(_ctx: Context, _now: datetime, **_: Any) -> str:
        ran.set()
        return "recorded"

    scheduler = build_scheduler(ctx, blocking=blocking, jobs={"record": record})

    def start() -> None:
        scheduler.start()
        returned.set()

    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    try:
        assert ran.wait(5), "the scheduled job never ran"
        # The job has run, so start() is well under way: it has returned unless it blocks.
        assert returned.wait(0.3) is not blocking
    finally:
        scheduler.shutdown(wait=True)
    thread.join(5)
    assert returned.is_set() and not thread.is_alive()  # shutdown() releases a blocking start()


def test_a_failing_job_is_logged_and_never_stops_the_others(
    make_ctx: Callable[..., Context], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ctx = make_ctx(job_interval_seconds=0.1)
    calls: Counter[str] = Counter()

    def boom(_ctx: Context, _now: datetime, **_: Any) -> str:
        calls["boom"] += 1
        raise RuntimeError("boom")

    def fine(_ctx: Context, _now: datetime, **_: Any) -> str:
        calls["fine"] += 1
        return "ok"

    scheduler = build_scheduler(ctx, blocking=False, jobs={"boom": boom, "fine": fine})
    scheduler.start()
    try:
        deadline = time.monotonic() + 15

        def logged() -> int:  # a run is counted once its line is written, not when it starts
            return sum(r.name == "jobs.tasks" and r.levelno == logging.ERROR
                       for r in caplog.records)  # fmt: skip

        while (min(calls["boom"], calls["fine"]) < 3 or logged() < 3) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert scheduler.running
        records = list(caplog.records)
    finally:
        scheduler.shutdown(wait=True)
    assert calls["boom"] >= 3 and calls["fine"] >= 3

    # Each run logs its one line through the one job runner (jobs.tasks.execute).
    failures = [r for r in records if r.name == "jobs.tasks" and r.levelno == logging.ERROR]
    assert len(failures) >= 3
    for record in failures:
        assert record.getMessage() == "job boom failed: RuntimeError"
        assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    assert any(r.name == "jobs.tasks" and r.getMessage() == "job fine: ok" for r in records)
    # run_job swallowed it: nothing reached APScheduler's executor as a raised exception.
    assert not [r for r in records if r.name.startswith("apscheduler.executors")
                and r.levelno >= logging.ERROR]  # fmt: skip


def test_run_all_carries_on_after_a_failure(
    make_ctx: Callable[..., Context], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_ctx()

    def boom(*_: Any, **__: Any) -> str:
        raise RuntimeError("dispose exploded")

    monkeypatch.setitem(tasks.JOBS, "dispose", boom)
    outcomes = tasks.run_all(ctx, ctx.now())
    assert [o.name for o in outcomes] == list(tasks.RUN_ALL_ORDER)
    assert [o.name for o in outcomes if not o.ok] == ["dispose"]
    assert "dispose exploded" in next(o.summary for o in outcomes if not o.ok)


def test_jobs_run_and_keys_commands(make_ctx: Callable[..., Context]) -> None:
    ctx = make_ctx()
    ingest(ctx, make_tenant(ctx), b"a recording")
    env = cli_env(ctx.settings)
    runner = CliRunner()

    result = runner.invoke(app, ["jobs", "run", "all"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == list(tasks.RUN_ALL_ORDER)
    assert "1 sampled, 1 intact" in lines[-1]

    result = runner.invoke(app, ["jobs", "run", "nonsense"], env=env)
    assert result.exit_code == 2 and "unknown job 'nonsense'" in result.output

    result = runner.invoke(app, ["jobs", "run", "kek-cycle", "--force"], env=env)
    assert result.exit_code == 0, result.output
    assert "rotated to v2" in result.output and "retired: v1" in result.output
    result = runner.invoke(app, ["jobs", "run", "kek-cycle"], env=env)
    assert "no rotation due" in result.output

    result = runner.invoke(app, ["keys", "rotate"], env=env)
    assert result.exit_code == 0 and "newest version is 3" in result.output
    result = runner.invoke(app, ["keys", "retire"], env=env)
    assert result.exit_code == 0 and "no KEK version to retire" in result.output  # v2 in use
    runner.invoke(app, ["jobs", "run", "kek-cycle"], env=env)
    assert ctx.keys.live_versions() == [3]


def _wait_for_scrubs(ctx: Context, proc: subprocess.Popen[str], n: int = 2) -> None:
    deadline = time.monotonic() + 30
    while len(events(ctx, "integrity.scrub")) < n:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the scheduled jobs did not run"
        time.sleep(0.2)


def test_worker_and_serve_run_the_scheduled_jobs(
    make_ctx: Callable[..., Context], tmp_path: Path
) -> None:
    ctx = make_ctx()
    env = cli_env(ctx.settings, CALLVAULT_JOB_INTERVAL_SECONDS="0.5")

    worker = start_cli(["worker"], env, tmp_path)
    try:
        _wait_for_scrubs(ctx, worker)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
    assert worker.returncode == 0

    before = len(events(ctx, "integrity.scrub"))
    serve = start_cli(["serve", "--port", str(free_port())], env, tmp_path)
    drain = threading.Thread(target=serve.communicate, daemon=True)  # never block on a pipe
    try:
        _wait_for_scrubs(ctx, serve, before + 2)
    finally:
        serve.send_signal(signal.SIGTERM)
        drain.start()
        drain.join(timeout=30)
    assert serve.wait(timeout=5) == 0
