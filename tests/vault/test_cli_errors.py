"""The CLI as a new operator meets it: every failure is one line on stderr and exit code 2 (or 1
where a command ran but did not succeed), never a traceback, never a password."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from crypto.keys.local import LocalKeyring
from tests.support.net import free_port

EXE = Path(sys.executable).with_name("callvault")


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLVAULT_")}
    env.update({
        "CALLVAULT_DATABASE_URL": f"sqlite:///{tmp / 'data' / 'callvault.db'}",
        "CALLVAULT_BLOB_STORE": f"file:{tmp / 'data' / 'blobs'}",
        "CALLVAULT_KEY_PROVIDER": f"local:{tmp / 'keys'}",
    })  # fmt: skip
    env.update(extra)
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXE), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def _one_line_error(out: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr + out.stdout
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, out.stderr
    return errors[0]


def test_a_command_in_the_wrong_directory_creates_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLVAULT_")}
    line = _one_line_error(_run(["tenant", "add", "acme"], env, tmp_path))
    assert "callvault init" in line
    assert not (tmp_path / "callvault-data").exists()
    assert not (tmp_path / "callvault-keys").exists()


def test_an_unreachable_database_is_one_line_without_its_password(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://vault:hunter2@127.0.0.1:{free_port()}/nowhere"
    env = _env(tmp_path, CALLVAULT_DATABASE_URL=url)
    LocalKeyring.open(tmp_path / "keys" / "keyring.json", create=True)  # only the DB is missing
    for args in (["tenant", "add", "acme"], ["jobs", "run", "dispose"], ["init"]):
        out = _run(args, env, tmp_path)
        line = _one_line_error(out)
        assert "database is unavailable" in line and "hunter2" not in out.stderr + out.stdout


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    env = _env(tmp_path, CALLVAULT_JOB_INTERVAL_SECONDS="abc")
    line = _one_line_error(_run(["jobs", "run", "dispose"], env, tmp_path))
    assert "CALLVAULT_JOB_INTERVAL_SECONDS" in line


def test_a_misspelt_variable_is_warned_about_with_the_closest_name(tmp_path: Path) -> None:
    env = _env(tmp_path, CALLVAULT_DATABSE_URL="sqlite:///elsewhere.db")
    out = _run(["init"], env, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "CALLVAULT_DATABSE_URL is not a callvault setting" in out.stderr
    assert "did you mean CALLVAULT_DATABASE_URL?" in out.stderr


def test_init_masks_the_database_password_and_keeps_the_file_private(
    tmp_path: Path, pg_database: str
) -> None:
    scheme, rest = pg_database.split("://", 1)
    user, host = rest.split("@", 1)
    with_password = f"{scheme}://{user}:s3cret-pw@{host}"  # trust auth ignores it
    out = _run(["init"], _env(tmp_path, CALLVAULT_DATABASE_URL=with_password), tmp_path)
    assert out.returncode == 0, out.stderr
    assert "s3cret-pw" not in out.stdout + out.stderr and ":***@" in out.stdout
    sqlite = _run(["init"], _env(tmp_path / "lite"), tmp_path)
    assert sqlite.returncode == 0, sqlite.stderr
    mode = stat.S_IMODE((tmp_path / "lite" / "data" / "callvault.db").stat().st_mode)
    assert mode == 0o600


def test_serve_on_a_busy_port_fails_before_announcing_anything(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = _run(["serve", "--port", str(port), "--no-scheduler"], _env(tmp_path), tmp_path)
    line = _one_line_error(out)
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "listening" not in out.stderr + out.stdout
    assert not (tmp_path / "data").exists()  # nothing was started, nothing created


def test_audit_checkpoint_fails_when_its_export_fails(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert _run(["init"], env, tmp_path).returncode == 0
    blobs = tmp_path / "data" / "blobs"
    # The store's root becomes a file: every write to it fails (root ignores permissions).
    os.rename(blobs, tmp_path / "data" / "blobs.away")
    blobs.write_text("not a directory")
    out = _run(["audit", "checkpoint"], env, tmp_path)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "export to the object store failed" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "args", [["tenant", "add", "bad name!"], ["principal", "revoke", "nobody"]]
)
def test_bad_arguments_are_one_line(tmp_path: Path, args: list[str]) -> None:
    env = _env(tmp_path)
    assert _run(["init"], env, tmp_path).returncode == 0
    _one_line_error(_run(args, env, tmp_path))
