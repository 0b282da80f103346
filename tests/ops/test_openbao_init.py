"""The shipped OpenBao setup, run natively: deploy/openbao/openbao.hcl (raft storage, static
seal) and deploy/openbao/init.sh (bao-init) against a real ``bao server``.

What the operator relies on: init initialises, enables Transit and hands callvault a token that
does everything callvault does (wrap, rewrap, rotate, retire, sign, pseudonyms) and nothing
else; a second run changes nothing; a restarted server unseals itself (the compose file's
OpenBao never waits for a human); no secret is printed. One server per module (set up once).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import pytest
from hvac.exceptions import Forbidden

from crypto import envelope
from crypto.keys.transit import TransitKeyProvider
from tests.support.bao import BaoStartError, find_bao
from tests.support.net import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "openbao"
DEK = b"k" * 32


def _health(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/v1/sys/health?uninitcode=200", timeout=2) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"{}")
    except OSError:
        return None


@dataclass
class Bao:
    """The shipped config with only its paths and addresses moved to this machine."""

    root: Path
    url: str = ""
    first_run: subprocess.CompletedProcess[str] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def configure(self) -> None:
        port, cluster = free_port(), free_port()
        self.url = f"http://127.0.0.1:{port}"
        (self.root / "data").mkdir()
        key = self.root / "unseal.key"
        key.write_bytes(os.urandom(32))
        text = (DEPLOY / "openbao.hcl").read_text()
        for old, new in [
            ("/openbao/file", str(self.root / "data")),
            ("0.0.0.0:8200", f"127.0.0.1:{port}"),
            ("http://openbao:8200", self.url),
            ("http://openbao:8201", f"http://127.0.0.1:{cluster}"),
            ("file:///run/secrets/openbao_unseal_key", f"file://{key}"),
        ]:
            assert old in text, old
            text = text.replace(old, new)
        (self.root / "openbao.hcl").write_text(text)

    @property
    def log(self) -> Path:
        return self.root / "bao.log"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [find_bao(), "server", f"-config={self.root / 'openbao.hcl'}"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "HOME": str(self.root)},
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while _health(self.url) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"bao server did not start: {self.log.read_text()[-1500:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM by PID; a server that ignores it is killed and fails the test."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def init(self) -> subprocess.CompletedProcess[str]:
        """deploy/openbao/init.sh, as the bao-init service runs it."""
        env = {k: v for k, v in os.environ.items() if k not in {"BAO_TOKEN", "VAULT_TOKEN"}}
        env |= {
            "PATH": f"{Path(find_bao()).parent}:{os.environ.get('PATH', '')}",
            "HOME": str(self.root),
            "BAO_ADDR": self.url,
            "BAO_INIT_STATE": str(self.root / "state"),
            "BAO_INIT_OUT": str(self.root / "out"),
            "BAO_INIT_POLICY": str(DEPLOY / "callvault-policy.hcl"),
            "CALLVAULT_UID": str(os.getuid()),
        }
        return subprocess.run(["sh", str(DEPLOY / "init.sh")], env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    @property
    def token(self) -> str:
        return (self.root / "out" / "token").read_text().strip()

    def provider(self) -> TransitKeyProvider:
        return TransitKeyProvider(self.url, self.token, "transit")


@pytest.fixture(scope="module")
def bao_init(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    try:
        find_bao()
    except BaoStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    bao = Bao(tmp_path_factory.mktemp("bao-init"))
    bao.configure()
    bao.start()
    try:
        bao.first_run = bao.init()
        assert bao.first_run.returncode == 0, bao.first_run.stderr
        yield bao
    finally:
        bao.stop()


def test_first_run_initialises_and_prints_no_secret(bao_init: Bao) -> None:
    run = bao_init.first_run
    assert run is not None
    root_token = json.loads((bao_init.root / "state" / "init.json").read_text())["root_token"]
    for secret in (bao_init.token, root_token):
        assert secret not in run.stdout + run.stderr
    assert (bao_init.root / "out" / "token").stat().st_mode & 0o777 == 0o400
    health = _health(bao_init.url) or {}
    assert health["initialized"] is True and health["sealed"] is False


def test_a_second_run_changes_nothing(bao_init: Bao) -> None:
    token = bao_init.token
    again = bao_init.init()  # every `docker compose up` runs it
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == ["bao-init: done"]
    assert bao_init.token == token


def test_the_token_does_all_of_callvaults_key_work(bao_init: Bao) -> None:
    provider = bao_init.provider()
    rid = uuid.uuid4()
    wrapped = envelope.wrap_dek(provider, DEK, tenant="acme", recording_id=rid)
    epoch = provider.rotate()
    moved = envelope.rewrap_dek(provider, wrapped, tenant="acme", recording_id=rid)
    assert moved.kek_version == epoch
    provider.retire(epoch - 1)
    assert provider.live_versions() == [epoch]
    assert envelope.unwrap_dek(provider, moved, tenant="acme", recording_id=rid) == DEK
    assert len(provider.sign(b"checkpoint")) == 64 and len(provider.signing_public_key()) == 32
    assert len(provider.pseudonym(b"owner@example.com")) == 32
    assert provider.delete_tenant_key("acme")  # tenant offboarding; the epoch key stays
    assert provider.live_versions() == [epoch]


@pytest.mark.parametrize(
    "attempt",
    [
        lambda c: c.secrets.transit.create_key("someone-else", mount_point="transit"),
        lambda c: c.secrets.transit.delete_key("callvault-epoch", mount_point="transit"),
        lambda c: c.secrets.transit.export_key("callvault-epoch", "encryption-key",
                                               mount_point="transit"),
        lambda c: c.sys.enable_secrets_engine("kv", path="loot"),
        lambda c: c.sys.list_policies(),
        lambda c: c.auth.token.create(policies=["callvault"]),
    ],
    ids=["other-key", "delete", "export", "mount", "policies", "new-token"],
)  # fmt: skip
def test_the_token_is_refused_everything_else(
    bao_init: Bao, attempt: Callable[[hvac.Client], object]
) -> None:
    bao_init.provider().check()  # the epoch key exists, so "delete"/"export" name a real key
    with pytest.raises(Forbidden):
        attempt(hvac.Client(url=bao_init.url, token=bao_init.token))


def test_a_restarted_server_unseals_itself_and_opens_old_wraps(bao_init: Bao) -> None:
    rid = uuid.uuid4()
    wrapped = envelope.wrap_dek(bao_init.provider(), DEK, tenant="acme", recording_id=rid)
    bao_init.stop()  # a host reboot; compose restarts it `unless-stopped`
    bao_init.start()
    deadline = time.monotonic() + 20
    while (_health(bao_init.url) or {}).get("sealed") is not False:
        assert time.monotonic() < deadline, bao_init.log.read_text()[-1500:]
        time.sleep(0.2)
    opened = envelope.unwrap_dek(bao_init.provider(), wrapped, tenant="acme", recording_id=rid)
    assert opened == DEK
    assert bao_init.token not in bao_init.log.read_text()
