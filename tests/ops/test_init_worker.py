"""``init`` hands the bootstrap admin key over in a file; the worker refuses a database that
``init`` has not prepared. Against a real PostgreSQL (the compose topology's database)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from tests.support.net import free_port
from tests.support.postgres import temp_database
from vault.app import create_app
from vault.cli import app as cli
from vault.config import Settings
from vault.context import build_context, open_provider

CALLVAULT = str(Path(sys.executable).with_name("callvault"))


@pytest.fixture
def env(pg_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fresh, empty PostgreSQL database; keys and blobs on disk (not what is tested here).

    The keyring exists already, as the key provider does in the compose topology."""
    keys = f"local:{tmp_path / 'keys'}"
    open_provider(keys, create=True)
    with temp_database(pg_url) as url:
        yield {
            "CALLVAULT_DATABASE_URL": url,
            "CALLVAULT_KEY_PROVIDER": keys,
            "CALLVAULT_BLOB_STORE": f"file:{tmp_path / 'blobs'}",
        }


def _run(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CALLVAULT_")}
    return subprocess.run([CALLVAULT, *args], env={**clean, **env}, cwd=cwd, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_the_worker_on_an_empty_database_says_so_in_one_line_and_exits_2(
    env: dict[str, str], tmp_path: Path
) -> None:
    out = _run(env, "worker", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines() == [
        "error: the database has no callvault schema yet; run `callvault init`"
    ]
    assert out.stdout == ""
    health = _in_process(env, "check")  # the worker's healthcheck says the same
    assert health.exit_code == 2 and health.stderr.splitlines() == out.stderr.splitlines()
    engine = sa.create_engine(env["CALLVAULT_DATABASE_URL"])
    assert sa.inspect(engine).get_table_names() == []  # it created nothing behind init's back
    engine.dispose()


def test_init_writes_the_admin_key_to_a_0600_file_that_works_and_prints_it_nowhere(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    key_file = tmp_path / "admin" / "admin-key"
    result = CliRunner().invoke(cli, ["init", "--admin-key-file", str(key_file)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    key = key_file.read_text().strip()
    assert len(key) > 20 and key not in result.output
    assert f"bootstrap admin API key written to {key_file} (mode 0600)" in result.output

    ctx = build_context(Settings())
    try:
        with TestClient(create_app(ctx.settings, ctx=ctx)) as client:
            made = client.post(
                "/v1/tenants", json={"name": "acme"}, headers={"Authorization": f"Bearer {key}"}
            )
            assert made.status_code == 201, made.text
            wrong = client.post(
                "/v1/tenants", json={"name": "evil"}, headers={"Authorization": f"Bearer {key}x"}
            )
            assert wrong.status_code == 401
    finally:
        ctx.close()

    # A second init (every `compose up` runs it) hands out nothing and leaves the file alone.
    again = CliRunner().invoke(cli, ["init", "--admin-key-file", str(key_file)])
    assert again.exit_code == 0, again.output
    assert "bootstrap" not in again.output and key_file.read_text().strip() == key


def test_an_admin_key_that_cannot_be_stored_creates_no_admin(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Fail closed: no admin whose key nobody has; the next init, with a good path, makes one."""
    (tmp_path / "not-a-dir").write_text("")
    target = tmp_path / "not-a-dir" / "key"
    bad = _in_process(env, "init", "--admin-key-file", str(target))
    assert bad.exit_code == 2
    assert bad.stderr.splitlines() == [f"error: cannot write {target}: File exists"]
    good = tmp_path / "admin-key"
    assert _in_process(env, "init", "--admin-key-file", str(good)).exit_code == 0
    assert good.read_text().strip()  # the first admin was created only now


def test_the_admin_key_file_setting_is_used_by_the_init_process(
    env: dict[str, str], tmp_path: Path
) -> None:
    key_file = tmp_path / "secrets" / "admin-key"
    out = _run({**env, "CALLVAULT_ADMIN_KEY_FILE": str(key_file)}, "init", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    key = key_file.read_text().strip()
    assert key and key not in out.stdout and key not in out.stderr
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


@pytest.fixture
def initialised(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    result = _in_process(env, "init", "--admin-key-file", str(tmp_path / "admin-key"))
    assert result.exit_code == 0, result.output
    return env


def test_on_an_initialised_database_the_check_passes_and_the_worker_runs_until_sigterm(
    initialised: dict[str, str], tmp_path: Path
) -> None:
    assert _in_process(initialised, "check").stdout.strip() == "ok"
    proc = subprocess.Popen([CALLVAULT, "worker"], cwd=tmp_path, stderr=subprocess.PIPE,
                            env={**os.environ, **initialised}, text=True)  # fmt: skip
    try:
        assert proc.stderr is not None
        # Its log lines first (JSON), then the banner; EOF ends the loop if it died instead.
        assert any("worker: jobs every" in line for line in proc.stderr)
    finally:
        proc.send_signal(signal.SIGTERM)  # at once: even before its loop runs, it stops
    assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize(
    ("revision", "message"),
    [
        ("0001", "the database schema is at revision 0001, this callvault needs {head}; "
                 "run `callvault init` to migrate it"),
        ("9999", "the database schema (9999) is newer than this callvault ({head}); "
                 "upgrade callvault"),
    ],
)  # fmt: skip
def test_a_schema_behind_or_ahead_of_the_code_stops_the_worker_in_one_line(
    initialised: dict[str, str], revision: str, message: str
) -> None:
    url = initialised["CALLVAULT_DATABASE_URL"]
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        head = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()
    for command in ("worker", "check"):
        result = _in_process(initialised, command)
        assert result.exit_code == 2, command
        assert result.stderr.splitlines() == [f"error: {message.format(head=head)}"], command


def _in_process(env: dict[str, str], *args: str) -> Result:
    """A command that ends by itself (a worker only when it refuses to start)."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        return CliRunner().invoke(cli, list(args))


def test_a_first_serve_writes_the_admin_key_file_too_and_logs_no_key(tmp_path: Path) -> None:
    """Single-node mode initialises in ``serve``: the same file, nothing on stdout or the log."""
    key_file = tmp_path / "admin-key"
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CALLVAULT_")},
           "CALLVAULT_DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'cv.db'}",
           "CALLVAULT_BLOB_STORE": f"file:{tmp_path / 'data' / 'blobs'}",
           "CALLVAULT_KEY_PROVIDER": f"local:{tmp_path / 'keys'}",
           "CALLVAULT_ADMIN_KEY_FILE": str(key_file)}  # fmt: skip
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [CALLVAULT, "serve", "--port", str(port), "--no-scheduler"],
            cwd=tmp_path, env=env, stdout=stdout, stderr=stderr,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, err.read_text()[-2000:]
            assert time.monotonic() < deadline, err.read_text()[-2000:]
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        key = key_file.read_text().strip()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        made = httpx.post(f"{url}/v1/tenants", json={"name": "acme"},
                          headers={"Authorization": f"Bearer {key}"}, timeout=10)  # fmt: skip
        assert made.status_code == 201, made.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert f"bootstrap admin API key written to {key_file}" in out.read_text()
    assert key not in out.read_text() and key not in err.read_text()
