"""The shipped OpenBao setup, run natively: deploy/openbao/openbao.hcl (raft storage, static
seal) and deploy/openbao/init.sh (bao-init) against a real ``bao server``.

What the operator relies on: init initialises, enables Transit and hands callvault a token that
does everything callvault does (wrap, rewrap, rotate, retire, sign, pseudonyms) and nothing
else; a second run changes nothing; a restarted server unseals itself (the compose file's
OpenBao never waits for a human); no secret is printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest
from hvac.exceptions import Forbidden

from crypto import envelope
from crypto.keys.transit import TransitKeyProvider
from tests.support.bao import BaoStartError, find_bao
from tests.support.bao import _stop as stop_bao
from tests.support.net import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "openbao"


def _health(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"{url}/v1/sys/health?uninitcode=200", timeout=2) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"{}")
    except OSError:
        return None


@contextlib.contextmanager
def _server(config: Path, url: str, log: Path) -> Iterator[None]:
    """``bao server -config`` until it answers; stopped by PID."""
    with log.open("ab") as out:
        proc = subprocess.Popen([find_bao(), "server", f"-config={config}"], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "HOME": str(config.parent)})  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while _health(url) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"bao server did not start: {log.read_text()[-1500:]}", pytrace=False)
            time.sleep(0.1)
        yield
    finally:
        stop_bao(proc)


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path | str]:
    """The shipped config with only its paths and addresses moved to this machine."""
    try:
        find_bao()
    except BaoStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    port, cluster = free_port(), free_port()
    (tmp_path / "data").mkdir()
    key = tmp_path / "unseal.key"
    key.write_bytes(os.urandom(32))
    text = (DEPLOY / "openbao.hcl").read_text()
    for old, new in [
        ("/openbao/file", str(tmp_path / "data")),
        ("0.0.0.0:8200", f"127.0.0.1:{port}"),
        ("http://openbao:8200", f"http://127.0.0.1:{port}"),
        ("http://openbao:8201", f"http://127.0.0.1:{cluster}"),
        ("file:///run/secrets/openbao_unseal_key", f"file://{key}"),
    ]:
        assert old in text, old
        text = text.replace(old, new)
    config = tmp_path / "openbao.hcl"
    config.write_text(text)
    return {"config": config, "url": f"http://127.0.0.1:{port}", "dir": tmp_path}


def _bao_init(layout: dict[str, Path | str]) -> subprocess.CompletedProcess[str]:
    root = Path(layout["dir"])
    env = {
        **os.environ,
        "PATH": f"{Path(find_bao()).parent}:{os.environ.get('PATH', '')}",
        "HOME": str(root),
        "BAO_ADDR": str(layout["url"]),
        "BAO_INIT_STATE": str(root / "state"),
        "BAO_INIT_OUT": str(root / "out"),
        "BAO_INIT_POLICY": str(DEPLOY / "callvault-policy.hcl"),
        "CALLVAULT_UID": str(os.getuid()),
    }
    env.pop("BAO_TOKEN", None)
    env.pop("VAULT_TOKEN", None)
    return subprocess.run(["sh", str(DEPLOY / "init.sh")], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_bao_init_sets_up_transit_and_a_token_that_does_exactly_callvaults_work(
    layout: dict[str, Path | str],
) -> None:
    root, url = Path(layout["dir"]), str(layout["url"])
    log = root / "bao.log"
    with _server(Path(layout["config"]), url, log):
        first = _bao_init(layout)
        assert first.returncode == 0, first.stderr
        token_file = root / "out" / "token"
        token = token_file.read_text().strip()
        assert (token_file.stat().st_mode & 0o777) == 0o400
        root_token = json.loads((root / "state" / "init.json").read_text())["root_token"]
        for secret in (token, root_token):
            assert secret not in first.stdout + first.stderr

        again = _bao_init(layout)  # every `compose up` runs it
        assert again.returncode == 0, again.stderr
        assert token_file.read_text().strip() == token
        assert again.stdout.strip().splitlines() == ["bao-init: done"]

        provider = TransitKeyProvider(url, token, "transit")
        rid = uuid.uuid4()
        wrapped = envelope.wrap_dek(provider, b"k" * 32, tenant="acme", recording_id=rid)
        assert provider.rotate() == 2
        moved = envelope.rewrap_dek(provider, wrapped, tenant="acme", recording_id=rid)
        provider.retire(1)
        assert provider.live_versions() == [2]
        assert envelope.unwrap_dek(provider, moved, tenant="acme", recording_id=rid) == b"k" * 32
        assert len(provider.sign(b"checkpoint")) == 64
        assert len(provider.pseudonym(b"owner@example.com")) == 32

        client = hvac.Client(url=url, token=token)
        transit = client.secrets.transit
        for attempt in (
            lambda: transit.create_key("someone-else", mount_point="transit"),
            lambda: transit.delete_key("callvault-epoch", mount_point="transit"),
            lambda: transit.export_key("callvault-t-acme", "encryption-key", mount_point="transit"),
            lambda: client.sys.enable_secrets_engine("kv", path="loot"),
            lambda: client.sys.list_policies(),
            lambda: client.auth.token.create(policies=["callvault"]),
        ):
            with pytest.raises(Forbidden):
                attempt()

    # Restarted (a host reboot, `restart: unless-stopped`): it unseals itself, no human needed.
    with _server(Path(layout["config"]), url, log):
        deadline = time.monotonic() + 20
        while (_health(url) or {}).get("sealed") is not False:
            assert time.monotonic() < deadline, log.read_text()[-1500:]
            time.sleep(0.2)
        assert (
            envelope.unwrap_dek(
                TransitKeyProvider(url, token, "transit"), moved, tenant="acme", recording_id=rid
            )
            == b"k" * 32
        )
    assert not re.search(re.escape(token), log.read_text())
