"""Settings: scheme validation, and key material kept apart from the data it protects."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from vault.config import ConfigError, Settings
from vault.context import build_context


def _settings(tmp: Path, keys: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp / 'data' / 'callvault.db'}",
        blob_store=f"file:{tmp / 'blobs'}",
        key_provider=f"local:{keys}",
    )


@pytest.mark.parametrize("inside", ["data", "data/keys", "blobs", "blobs/k"])
def test_keyring_inside_data_or_blobs_is_refused(tmp_path: Path, inside: str) -> None:
    with pytest.raises(ConfigError, match="keep key material apart"):
        build_context(_settings(tmp_path, tmp_path / inside), create_keys=True)
    assert not (tmp_path / inside / "keyring.json").exists()


def test_keyring_beside_data_is_fine(tmp_path: Path) -> None:
    ctx = build_context(_settings(tmp_path, tmp_path / "keys"), create_keys=True)
    ctx.close()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("database_url", "mysql://x"),
        ("blob_store", "gs://bucket"),
        ("key_provider", "kms:arn"),
        ("job_interval_seconds", "0"),
    ],
)
def test_bad_settings_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        Settings(**{field: value})


def test_serve_refuses_a_keyring_inside_the_data_dir(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CALLVAULT_DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'callvault.db'}",
        "CALLVAULT_BLOB_STORE": f"file:{tmp_path / 'data' / 'blobs'}",
        "CALLVAULT_KEY_PROVIDER": f"local:{tmp_path / 'data' / 'keys'}",
    }
    exe = Path(sys.executable).with_name("callvault")
    out = subprocess.run(
        [str(exe), "serve", "--port", "1"], env=env, cwd=tmp_path, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and "Traceback" not in out.stderr
    assert "keep key material apart" in out.stderr


def test_bad_policy_file_stops_the_cli_with_one_line(tmp_path: Path) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text(
        "[purposes.fraud]\nretention_days = 1\nmax_access_minutes = 5\n"
        "approvals = 0\napprover_roles = ['security']\non_expiry = 'delete'\n"
    )
    env = {**os.environ, "CALLVAULT_POLICY_FILE": str(policy),
           "CALLVAULT_DATABASE_URL": f"sqlite:///{tmp_path / 'd' / 'c.db'}",
           "CALLVAULT_KEY_PROVIDER": f"local:{tmp_path / 'keys'}",
           "CALLVAULT_BLOB_STORE": f"file:{tmp_path / 'd' / 'blobs'}"}  # fmt: skip
    exe = Path(sys.executable).with_name("callvault")
    out = subprocess.run([str(exe), "init"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2
    assert "purposes.fraud.approvals" in out.stderr and "Traceback" not in out.stderr
