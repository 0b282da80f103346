"""The scheduler's job settings, `callvault jobs run`, `keys`, `worker` and `serve` with its
in-process scheduler."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from typer.testing import CliRunner

from jobs import tasks
from jobs.scheduler import build_scheduler
from tests.jobs.helpers import cli_env, events, ingest, make_tenant, start_cli
from tests.support.server import free_port
from vault.cli import app
from vault.context import Context

NAMES = {"expire-purposes", "dispose", "erasure", "expire-grants", "sweep-orphans",
         "kek-cycle", "audit-checkpoint", "scrub"}  # fmt: skip


def test_every_job_is_scheduled_with_explicit_settings(make_ctx: Callable[..., Context]) -> None:
    ctx = make_ctx(job_interval_seconds=30)
    assert isinstance(build_scheduler(ctx, blocking=True), BlockingScheduler)
    scheduler = build_scheduler(ctx, blocking=False)
    assert isinstance(scheduler, BackgroundScheduler)
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == NAMES == set(tasks.JOBS)
    for name, job in jobs.items():
        assert job.coalesce is True and job.max_instances == 1, name
        assert job.misfire_grace_time >= 60, name
        expected = 3600 if name == "kek-cycle" else 30
        assert job.trigger.interval.total_seconds() == expected, name
    assert set(tasks.RUN_ALL_ORDER) == NAMES
    assert tasks.RUN_ALL_ORDER[0] == "expire-grants" and tasks.RUN_ALL_ORDER[-1] == "scrub"


def test_a_failing_job_never_stops_the_others(make_ctx: Callable[..., Context]) -> None:
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
        while min(calls["boom"], calls["fine"]) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scheduler.shutdown(wait=True)
    assert calls["boom"] >= 3 and calls["fine"] >= 3


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
