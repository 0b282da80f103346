"""The shipped docker-compose.yml, Dockerfile and deploy/ files, checked without a Docker engine.

What an operator relies on: every ``CALLVAULT_*`` variable is a real setting and every file it
names is mounted; the API and the worker wait for healthy dependencies and a finished init;
every service restarts and reports health; callvault never holds MinIO's root credentials; the
image runs unprivileged and carries no secret; the MinIO and OpenBao policies grant exactly what
the code calls, derived from the code itself.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from crypto.keys.transit import TransitKeyProvider
from vault.config import FILE_SETTINGS, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
MINIO_POLICY = ROOT / "deploy" / "minio" / "callvault-policy.json"
BAO_POLICY = ROOT / "deploy" / "openbao" / "callvault-policy.hcl"
NEEDED = ("postgres", "minio", "openbao")  # what the API and the worker cannot run without
RUNNERS = ("api", "worker")
SECRET_WORDS = re.compile(r"PASSWORD|SECRET|TOKEN|PRIVATE|CREDENTIAL|_KEY\b", re.I)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _callvault_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services.items() if any(k.startswith("CALLVAULT_") for k in _env(s))}


def _one_shots(services: dict[str, dict[str, Any]]) -> set[str]:
    """Services something waits to see completed: they run once and exit."""
    return {
        dep
        for s in services.values()
        for dep, cond in (s.get("depends_on") or {}).items()
        if cond.get("condition") == "service_completed_successfully"
    }


def _mounts(service: dict[str, Any]) -> list[PurePosixPath]:
    """Container paths under which this service sees files: its secrets and volumes."""
    found = [PurePosixPath("/run/secrets") / str(s) for s in service.get("secrets") or []]
    for volume in service.get("volumes") or []:
        target = volume.split(":")[1] if isinstance(volume, str) else volume["target"]
        found.append(PurePosixPath(target))
    return found


# --- settings -----------------------------------------------------------------------------------


def test_every_callvault_variable_in_the_compose_file_is_a_real_setting() -> None:
    named = set(re.findall(r"\bCALLVAULT_[A-Z0-9_]+", COMPOSE.read_text()))
    assert {"CALLVAULT_DATABASE_URL", "CALLVAULT_TRANSIT_TOKEN_FILE"} <= named  # the scan works
    unknown = named - Settings.env_names()
    assert not unknown, f"not callvault settings: {sorted(unknown)}"


def test_the_compose_environment_builds_valid_settings(
    services: dict[str, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each callvault service's environment, with its files stood in for, is accepted."""
    for name, service in _callvault_services(services).items():
        for var in list(os.environ):
            if var.startswith("CALLVAULT_"):
                monkeypatch.delenv(var)
        for var, value in _env(service).items():
            if var.endswith("_FILE"):
                stand_in = tmp_path / f"{name}-{var}"
                stand_in.write_text("stand-in-secret\n")
                value = str(stand_in)
            monkeypatch.setenv(var, value)
        settings = Settings()
        assert settings.s3_secret_key == "stand-in-secret", name
        assert settings.transit_token == "stand-in-secret", name
        assert urlsplit(settings.database_url).password == "stand-in-secret", name


def test_every_secret_comes_from_a_file_that_is_mounted(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in _callvault_services(services).items():
        env = _env(service)
        for setting in ("database_password", "s3_secret_key", "transit_token"):
            var = f"CALLVAULT_{setting.upper()}"
            assert var not in env, f"{name}: {var} inline; use {var}_FILE"
            assert setting in FILE_SETTINGS
        for var, value in env.items():
            if var.endswith("_FILE"):
                path = PurePosixPath(value)
                assert any(path.is_relative_to(m) for m in _mounts(service)), (
                    f"{name}: {var}={value} lies in no secret or volume of the service"
                )
        assert not urlsplit(env["CALLVAULT_DATABASE_URL"]).password, f"{name}: password in URL"


# --- topology -----------------------------------------------------------------------------------


def test_api_and_worker_wait_for_healthy_dependencies_and_a_finished_init(
    services: dict[str, dict[str, Any]],
) -> None:
    assert {*NEEDED, "init", *RUNNERS} <= services.keys()
    for name in (*RUNNERS, "init"):
        deps = services[name]["depends_on"]
        for needed in NEEDED:
            assert deps[needed] == {"condition": "service_healthy"}, (name, needed)
    for name in RUNNERS:
        assert services[name]["depends_on"]["init"] == {
            "condition": "service_completed_successfully"
        }
    # ... and the settings point at exactly those services.
    env = _env(services["api"])
    assert urlsplit(env["CALLVAULT_DATABASE_URL"]).hostname == "postgres"
    assert env["CALLVAULT_S3_ENDPOINT"].split(":")[0] == "minio"
    assert urlsplit(env["CALLVAULT_KEY_PROVIDER"].removeprefix("transit:")).hostname == "openbao"
    assert services["worker"]["command"] == ["worker"]
    assert services["init"]["command"] == ["init"]


def test_every_dependency_has_a_condition_that_can_be_met(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        deps = service.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on without conditions"
        for dep, cond in deps.items():
            assert dep in services, (name, dep)
            if cond["condition"] == "service_healthy":
                assert "test" in services[dep].get("healthcheck", {}), (name, dep)
            else:
                assert cond["condition"] == "service_completed_successfully", (name, dep)


def test_long_running_services_restart_and_report_health_one_shots_retry(
    services: dict[str, dict[str, Any]],
) -> None:
    one_shots = _one_shots(services)
    assert one_shots == {"init", "minio-init", "bao-init"}
    for name, service in services.items():
        if name in one_shots:
            assert service["restart"] == "on-failure", name
        else:
            assert service["restart"] in {"unless-stopped", "always"}, name
            check = service.get("healthcheck", {})
            assert check.get("test") and not check.get("disable"), f"{name}: no healthcheck"


def test_only_the_api_is_published_and_only_on_loopback(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert compose["networks"]["backend"]["internal"] is True
    for name, service in services.items():
        if name == "api":
            assert all(str(p).startswith("127.0.0.1:") for p in service["ports"])
        else:
            assert not service.get("ports"), f"{name} is published"
            assert service["networks"] == ["backend"], name


def test_the_admin_key_file_is_written_by_init_into_a_volume_of_its_own(
    services: dict[str, dict[str, Any]],
) -> None:
    path = PurePosixPath(_env(services["init"])["CALLVAULT_ADMIN_KEY_FILE"])
    volumes = {v.split(":")[1]: v.split(":")[0] for v in services["init"]["volumes"]}
    assert str(path.parent) in volumes
    holders = [n for n, s in services.items() for v in s.get("volumes") or []
               if v.split(":")[0] == volumes[str(path.parent)]]  # fmt: skip
    assert holders == ["init"], "the admin key volume is mounted elsewhere"


# --- MinIO --------------------------------------------------------------------------------------


def test_no_callvault_service_holds_minio_root_credentials(
    services: dict[str, dict[str, Any]],
) -> None:
    root_secrets = {
        v.rsplit("/", 1)[-1]
        for k, v in _env(services["minio"]).items()
        if k.startswith("MINIO_ROOT")
    }
    assert root_secrets == {"minio_root_user", "minio_root_password"}
    for name in (*_callvault_services(services), *RUNNERS):
        service = services[name]
        assert not root_secrets & set(service.get("secrets") or []), name
        assert not any("MINIO_ROOT" in f"{k}={v}" for k, v in _env(service).items()), name
        # It is the user minio-init creates, whose secret minio-init sets.
        assert _env(service)["CALLVAULT_S3_ACCESS_KEY"] == _env(services["minio-init"])["S3_USER"]
        assert "minio_callvault_secret" in services["minio-init"]["secrets"]


# S3 actions of each minio SDK method callvault calls (None: never called in this deployment).
MINIO_ACTIONS: dict[str, set[str] | None] = {
    "put_object": {"s3:PutObject", "s3:PutObjectRetention"},
    "get_object": {"s3:GetObject", "s3:GetObjectVersion"},
    "stat_object": {"s3:GetObject", "s3:GetObjectVersion"},
    "list_objects": {"s3:ListBucket", "s3:ListBucketVersions"},
    "remove_object": {"s3:DeleteObject", "s3:DeleteObjectVersion"},
    "bucket_exists": {"s3:ListBucket"},  # HEAD bucket
    "get_bucket_versioning": {"s3:GetBucketVersioning"},
    "get_object_lock_config": {"s3:GetBucketObjectLockConfiguration"},
    "enable_object_legal_hold": {"s3:PutObjectLegalHold"},
    "disable_object_legal_hold": {"s3:PutObjectLegalHold"},
    "_create_multipart_upload": {"s3:PutObject"},
    "_upload_part": {"s3:PutObject"},
    "_complete_multipart_upload": {"s3:PutObject"},
    "_abort_multipart_upload": {"s3:AbortMultipartUpload"},
    "put_streaming": {"s3:PutObject"},  # our _Client's one streaming PUT of a known length
    "_list_multipart_uploads": {"s3:ListBucketMultipartUploads"},
    # minio-init creates the bucket with Object Lock, which turns versioning on: callvault's
    # ensure_bucket finds both and never creates or reconfigures a bucket.
    "make_bucket": None,
    "set_bucket_versioning": None,
}
_BUCKET_ACTIONS = {"s3:ListBucket", "s3:ListBucketVersions", "s3:ListBucketMultipartUploads",
                   "s3:GetBucketVersioning", "s3:GetBucketObjectLockConfiguration"}  # fmt: skip


def _minio_calls() -> set[str]:
    """Methods used on a minio client anywhere in callvault's code (called or handed over)."""
    calls: set[str] = set()
    for path in [*(ROOT / "vault").rglob("*.py"), *(ROOT / "jobs").rglob("*.py")]:
        text = path.read_text()
        if "import minio" not in text and "from minio" not in text:
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Attribute):
                owner = node.value
                name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
                if name in {"_client", "client"}:
                    calls.add(node.attr)
    return calls


def test_the_minio_policy_grants_exactly_the_actions_callvault_calls(
    services: dict[str, dict[str, Any]],
) -> None:
    calls = _minio_calls()
    assert {"put_object", "_upload_part", "remove_object"} <= calls  # the scan works
    unknown = calls - MINIO_ACTIONS.keys()
    assert not unknown, f"new minio calls {sorted(unknown)}: add their S3 actions to the policy"
    needed = set().union(*(MINIO_ACTIONS[c] or set() for c in calls))

    bucket = Settings(blob_store=_env(services["api"])["CALLVAULT_BLOB_STORE"]).s3_bucket
    assert bucket == _env(services["minio-init"])["BUCKET"]
    policy = json.loads(MINIO_POLICY.read_text())
    granted: dict[str, set[str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        for action in statement["Action"]:
            granted.setdefault(action, set()).update(statement["Resource"])
    assert set(granted) == needed, "least privilege: the policy grants what the code calls"
    for action, resources in granted.items():
        want = f"arn:aws:s3:::{bucket}" + ("" if action in _BUCKET_ACTIONS else "/*")
        assert resources == {want}, action


# --- OpenBao ------------------------------------------------------------------------------------

# Transit endpoint and capability of each hvac call in crypto/keys/transit.py.
TRANSIT_CALLS = {
    "list_keys": ("keys", "list"),
    "read_key": ("keys/{name}", "read"),
    "create_key": ("keys/{name}", "create"),
    "rotate_key": ("keys/{name}/rotate", "update"),
    "trim_key": ("keys/{name}/trim", "update"),
    "encrypt_data": ("encrypt/{name}", "update"),
    "decrypt_data": ("decrypt/{name}", "update"),
    "rewrap_data": ("rewrap/{name}", "update"),
    "sign_data": ("sign/{name}", "update"),
    "generate_hmac": ("hmac/{name}", "update"),
    "update_key_configuration": ("keys/{name}/config", "update"),  # deletion_allowed
    "delete_key": ("keys/{name}", "delete"),  # tenant offboarding
}


def _bao_policy(mount: str) -> dict[str, set[str]]:
    text = BAO_POLICY.read_text().replace("@MOUNT@", mount)
    blocks = re.findall(r'path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]\s*\}', text)
    return {path: set(re.findall(r'"(\w+)"', caps)) for path, caps in blocks}


def _allowed(policy: dict[str, set[str]], path: str, capability: str) -> bool:
    for pattern, caps in policy.items():
        hit = path.startswith(pattern[:-1]) if pattern.endswith("*") else path == pattern
        if hit and capability in caps:
            return True
    return False


def test_the_openbao_policy_covers_every_transit_call_and_nothing_else(
    services: dict[str, dict[str, Any]],
) -> None:
    mount = _env(services["api"])["CALLVAULT_TRANSIT_MOUNT"]
    assert _env(services["bao-init"])["TRANSIT_MOUNT"] == mount
    source = (ROOT / "crypto" / "keys" / "transit.py").read_text()
    calls = set(re.findall(r"self\._transit\.(\w+)\(", source))
    assert {"encrypt_data", "rewrap_data", "trim_key"} <= calls
    assert not calls - TRANSIT_CALLS.keys(), "new Transit calls: map them and grant them"
    raw = set(
        re.findall(r'adapter\.post\(\s*f"/v1/\{self\.mount\}/(keys/\{[^}]+\}(?:/\w+)?)"', source)
    )
    assert raw == {"keys/{name}/config", "keys/{self.pseudonym_key}"}

    provider = TransitKeyProvider("http://openbao:8200", "unused", mount)
    tenants = [provider.key_name("acme"), provider.key_name("Not A Slug")]
    keys = {"sign_data": [provider.signing_key], "generate_hmac": [provider.pseudonym_key],
            "update_key_configuration": tenants, "delete_key": tenants}  # fmt: skip
    everything = [provider.epoch_key, provider.signing_key, provider.pseudonym_key, *tenants]
    policy = _bao_policy(mount)
    for call in calls:
        template, capability = TRANSIT_CALLS[call]
        for name in keys.get(call, everything):
            path = f"{mount}/{template.format(name=name)}"
            assert _allowed(policy, path, capability), (call, path)
    for name in everything:  # the raw config and hmac-key creation posts
        assert _allowed(policy, f"{mount}/keys/{name}/config", "update")
    assert _allowed(policy, f"{mount}/keys/{provider.pseudonym_key}", "create")
    # Nothing beyond: delete only on tenant keys, no sudo, nothing outside the mount, no other
    # prefix's keys.
    tenant_keys = (f"{mount}/keys/callvault-t-*", f"{mount}/keys/callvault-h-*")
    assert all(
        caps <= {"create", "read", "update", "list"} | ({"delete"} if p in tenant_keys else set())
        for p, caps in policy.items()
    )
    for name in (provider.epoch_key, provider.signing_key, provider.pseudonym_key):
        assert not any(
            "delete" in caps and f"{mount}/keys/{name}".startswith(p[:-1])
            for p, caps in policy.items() if p.endswith("*")
        ), name  # fmt: skip
    assert all(p.startswith(f"{mount}/") for p in policy)
    assert not _allowed(policy, f"{mount}/keys/other-app-key", "read")
    assert not _allowed(policy, f"{mount}/sign/{tenants[0]}", "update")
    assert not _allowed(policy, f"{mount}/export/encryption-key/{tenants[0]}", "read")


# --- image and init scripts ---------------------------------------------------------------------


def _final_stage(dockerfile: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", dockerfile)
    lines = [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.startswith("#")]
    stages: list[list[tuple[str, str]]] = []
    for line in lines:
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        stages[-1].append((word.upper(), rest.strip()))
    return stages[-1]


def test_the_image_runs_unprivileged_owning_its_data_dir_with_no_secret() -> None:
    text = DOCKERFILE.read_text()
    stage = _final_stage(text)
    [user] = [rest for word, rest in stage if word == "USER"]
    uid = user.split(":")[0]
    assert uid not in {"0", "root"} and uid.isdigit() and int(uid) >= 1000
    [workdir] = [rest for word, rest in stage if word == "WORKDIR"]
    runs = " ".join(rest for word, rest in stage if word == "RUN")
    # The data dir is created owned by that user, before USER drops privileges.
    made = re.search(r"install\s+-d\s+-o\s+(\S+)\s+-g\s+\S+\s+-m\s+0?700\s+(.*?)(?:&&|$)", runs)
    assert made and workdir in made.group(2).split()
    assert re.search(rf"useradd\b[^&]*--uid {uid}\b[^&]*\b{made.group(1)}\b", runs)
    assert any(word == "HEALTHCHECK" for word, _ in stage)
    for line in re.sub(r"\\\n", " ", text).splitlines():
        word = line.strip().split(" ", 1)[0].upper()
        if word in {"ENV", "ARG", "LABEL"}:
            assert not SECRET_WORDS.search(line), line
    assert not re.search(r"(?i)(password|secret|token)\s*[=:]\s*\S", text)
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [r.strip() for r in lines if r.strip() and not r.startswith("#")]
    assert rules[0] == "*" and not any("secret" in r for r in rules)  # only the sources go in


def test_the_init_scripts_and_files_compose_mounts_exist_and_parse(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)
        entry = service.get("entrypoint") or []
        if entry[:1] == ["/bin/sh"]:
            script = ROOT / entry[1].lstrip("/")
            assert script.is_file(), (name, script)
            subprocess.run(["sh", "-n", str(script)], check=True)  # syntax
    assert services["minio-init"]["entrypoint"][1] == "/deploy/minio/init.sh"
    assert services["bao-init"]["entrypoint"][1] == "/deploy/openbao/init.sh"


def test_everything_the_image_copies_passes_the_dockerignore() -> None:
    """A COPY source that .dockerignore leaves out breaks the build; nothing else goes in."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    kept = {r.strip()[1:].rstrip("/") for r in lines if r.strip().startswith("!")}
    copied = {
        src.rstrip("/")
        for line in DOCKERFILE.read_text().splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for src in line.split()[1:-1]
    }
    assert copied == kept
    assert all((ROOT / src).exists() for src in copied)
