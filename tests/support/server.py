"""Run ``callvault serve`` as a real process (uvicorn) for HTTP-level tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.net import free_port


@dataclass
class ServeProcess:
    url: str
    admin_key: str
    pid: int
    log: Path

    def rss_bytes(self) -> int:
        """The resident memory of serve and its worker processes (``--workers``)."""
        total, todo = 0, [self.pid]
        while todo:
            pid = todo.pop()
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue  # gone meanwhile
            total += next(int(line.split()[1]) * 1024 for line in status.splitlines()
                          if line.startswith("VmRSS:"))  # fmt: skip
            todo += [int(c) for c in children]
        return total


def _callvault() -> list[str]:
    exe = Path(sys.executable).with_name("callvault")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "vault.cli"]


@contextlib.contextmanager
def run_serve(
    env: dict[str, str], workdir: Path, *, timeout: float = 60.0, args: Sequence[str] = ()
) -> Iterator[ServeProcess]:
    """Start ``callvault serve --no-scheduler`` and yield its URL and bootstrap admin key."""
    port = free_port()
    log = workdir / "serve.log"
    full_env = {**os.environ, **env}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*_callvault(), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-scheduler",
             *args],
            cwd=workdir, env=full_env, stdout=subprocess.PIPE, stderr=out,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        # stdout: the bootstrap key block, then nothing; read it without blocking forever.
        os.set_blocking(proc.stdout.fileno(), False)
        buf = b""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited {proc.returncode}: {log.read_text()[-2000:]}")
            chunk = proc.stdout.read() or b""
            buf += chunk
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    buf += proc.stdout.read() or b""
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"serve did not come up: {log.read_text()[-2000:]}")
        # uvicorn's access log shares stdout; the key is the line after the announcement.
        lines = buf.decode().splitlines()
        marks = [i for i, line in enumerate(lines) if line.startswith("bootstrap admin API key")]
        key = lines[marks[0] + 1].strip() if marks else ""
        yield ServeProcess(url=url, admin_key=key, pid=proc.pid, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
