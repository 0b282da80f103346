"""Settings: scheme validation, and key material kept apart from the data it protects."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import make_url

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


@pytest.mark.parametrize("beside", ["keys", "data-keys", "blobs2"])
def test_keyring_beside_data_is_fine(tmp_path: Path, beside: str) -> None:
    # "data-keys" and "blobs2" share a prefix with the data dirs but lie outside them.
    settings = _settings(tmp_path, tmp_path / beside)
    settings.check_key_separation()  # no ConfigError
    ctx = build_context(settings, create_keys=True)
    ctx.close()
    assert (tmp_path / beside / "keyring.json").is_file()


def test_keyring_reaching_into_the_data_dir_through_dotdot_is_refused(tmp_path: Path) -> None:
    settings = _settings(tmp_path, tmp_path / "keys" / ".." / "data" / "keys")
    with pytest.raises(ConfigError, match="keep key material apart") as err:
        settings.check_key_separation()
    assert str(tmp_path / "data") in str(err.value)  # names the directory it lies in
    assert "CALLVAULT_KEY_PROVIDER" in str(err.value)


def test_a_transit_key_provider_needs_no_separation(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'data' / 'callvault.db'}",
        blob_store=f"file:{tmp_path / 'data'}",
        key_provider="transit:http://127.0.0.1:8200",
    )
    assert settings.keyring_dir is None
    settings.check_key_separation()  # no ConfigError: there is no local key material


def test_defaults_are_the_embedded_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CALLVAULT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.database_url == "sqlite:///callvault-data/callvault.db"
    assert settings.blob_store == "file:callvault-data/blobs"
    assert settings.key_provider == "local:callvault-keys"
    assert settings.is_sqlite and settings.sqlite_path == Path("callvault-data/callvault.db")
    assert settings.blob_dir == Path("callvault-data/blobs") and settings.s3_bucket is None
    assert settings.keyring_dir == Path("callvault-keys")
    assert settings.job_interval_seconds == 60
    settings.check_key_separation()  # the defaults keep keys apart from data


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("database_url", "mysql://x", "sqlite:/// or postgresql+psycopg://"),
        ("database_url", "postgresql://db/callvault", "sqlite:/// or postgresql+psycopg://"),
        ("database_url", "sqlite://callvault.db", "sqlite:/// or postgresql+psycopg://"),
        ("blob_store", "gs://bucket", "file:PATH or s3://BUCKET"),
        ("key_provider", "kms:arn", "local:PATH or transit:"),
        ("job_interval_seconds", "0", "greater than 0"),
    ],
)
def test_bad_settings_from_the_environment_are_refused_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, field: str, value: str, message: str
) -> None:
    monkeypatch.setenv(f"CALLVAULT_{field.upper()}", value)
    with pytest.raises(ValidationError) as err:
        Settings()
    [error] = err.value.errors()
    assert error["loc"] == (field,)
    assert message in error["msg"]
    assert field in str(err.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("database_url", "postgresql+psycopg://u:p@db:5432/callvault"),
        ("blob_store", "s3://recordings"),
        ("key_provider", "transit:https://bao:8200"),
    ],
)
def test_good_settings_from_the_environment_are_taken(
    monkeypatch: pytest.MonkeyPatch, field: str, value: str
) -> None:
    monkeypatch.setenv(f"CALLVAULT_{field.upper()}", value)
    assert getattr(Settings(), field) == value


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


# --- secrets from files (CALLVAULT_<NAME>_FILE) -------------------------------------------------


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CALLVAULT_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("field", ["s3_access_key", "s3_secret_key", "transit_token"])
def test_a_secret_setting_is_read_from_the_file_its_FILE_variable_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str
) -> None:
    _clean_env(monkeypatch)
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t value\n")  # as `echo` and compose secrets write it
    monkeypatch.setenv(f"CALLVAULT_{field.upper()}_FILE", str(secret))
    settings = Settings()
    assert getattr(settings, field) == "s3cr3t value"
    if field != "s3_access_key":
        assert "s3cr3t" not in repr(settings)  # never in a log line that prints the settings


def test_the_database_password_file_completes_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_env(monkeypatch)
    (tmp_path / "pw").write_text("p@ss/w:rd%\n")  # characters a URL must escape
    monkeypatch.setenv("CALLVAULT_DATABASE_URL", "postgresql+psycopg://callvault@db:5432/cv")
    monkeypatch.setenv("CALLVAULT_DATABASE_PASSWORD_FILE", str(tmp_path / "pw"))
    url = make_url(Settings().database_url)
    assert (url.username, url.password, url.host, url.database) == (
        "callvault", "p@ss/w:rd%", "db", "cv"
    )  # fmt: skip


def test_a_secret_set_twice_or_unreadable_is_refused_without_showing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_env(monkeypatch)
    (tmp_path / "token").write_text("hvs.topsecret\n")
    monkeypatch.setenv("CALLVAULT_TRANSIT_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.setenv("CALLVAULT_TRANSIT_TOKEN", "hvs.other")
    with pytest.raises(
        ConfigError, match=r"either CALLVAULT_TRANSIT_TOKEN or .*_FILE, not both"
    ) as err:
        Settings()
    assert "topsecret" not in str(err.value) and "hvs.other" not in str(err.value)
    monkeypatch.delenv("CALLVAULT_TRANSIT_TOKEN")
    (tmp_path / "token").write_text("\n")
    with pytest.raises(ConfigError, match=r"CALLVAULT_TRANSIT_TOKEN_FILE: .* is empty"):
        Settings()
    monkeypatch.setenv("CALLVAULT_TRANSIT_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"CALLVAULT_TRANSIT_TOKEN_FILE: cannot read .*missing"):
        Settings()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///cv.db", "needs a postgresql+psycopg://"),
        ("postgresql+psycopg://cv:other@db/cv", "carries a password already"),
    ],
)
def test_a_database_password_that_cannot_apply_is_refused(
    monkeypatch: pytest.MonkeyPatch, url: str, message: str
) -> None:
    _clean_env(monkeypatch)
    monkeypatch.setenv("CALLVAULT_DATABASE_URL", url)
    monkeypatch.setenv("CALLVAULT_DATABASE_PASSWORD", "pw")
    with pytest.raises(ValidationError) as err:
        Settings()
    [error] = err.value.errors()
    assert error["loc"] == ("database_password",) and message in error["msg"]
    assert "other" not in str(err.value)


def test_the_cli_takes_FILE_variables_and_fails_in_one_line_on_a_missing_file(
    tmp_path: Path,
) -> None:
    exe = Path(sys.executable).with_name("callvault")
    base = {k: v for k, v in os.environ.items() if not k.startswith("CALLVAULT_")}
    env = {**base, "CALLVAULT_DATABASE_URL": f"sqlite:///{tmp_path / 'd' / 'c.db'}",
           "CALLVAULT_KEY_PROVIDER": f"local:{tmp_path / 'keys'}",
           "CALLVAULT_BLOB_STORE": f"file:{tmp_path / 'd' / 'blobs'}",
           "CALLVAULT_S3_SECRET_KEY_FILE": str(tmp_path / "nowhere")}  # fmt: skip
    out = subprocess.run([str(exe), "init"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"error: CALLVAULT_S3_SECRET_KEY_FILE: cannot read {tmp_path / 'nowhere'}: "
        "No such file or directory"
    ]
    (tmp_path / "nowhere").write_text("minio-secret\n")
    out = subprocess.run([str(exe), "init"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "not a callvault setting" not in out.stderr  # *_FILE names are known settings
