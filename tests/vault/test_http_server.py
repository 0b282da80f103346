"""Against a real ``callvault serve`` process (uvicorn): big uploads, cut-off bodies, a store
that dies mid-upload."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.support.postgres import temp_database
from tests.support.server import ServeProcess, run_serve
from tests.support.weed import WeedServer, run_weed
from tests.vault.conftest import new_bucket_name

MiB = 1 << 20


def _env(tmp: Path, db_url: str, weed: WeedServer | None, bucket: str | None) -> dict[str, str]:
    env = {
        "CALLVAULT_DATABASE_URL": db_url,
        "CALLVAULT_KEY_PROVIDER": f"local:{tmp / 'keys'}",
        "CALLVAULT_BLOB_STORE": f"file:{tmp / 'data' / 'blobs'}",
    }
    if weed is not None:
        env |= {
            "CALLVAULT_BLOB_STORE": f"s3://{bucket}",
            "CALLVAULT_S3_ENDPOINT": weed.endpoint,
            "CALLVAULT_S3_ACCESS_KEY": weed.access_key,
            "CALLVAULT_S3_SECRET_KEY": weed.secret_key,
        }
    return env


def _add_tenant(server: ServeProcess) -> None:
    admin = {"Authorization": f"Bearer {server.admin_key}"}
    r = httpx.post(f"{server.url}/v1/tenants", json={"name": "acme"}, headers=admin)
    assert r.status_code == 201, r.text


def _add_ingest_key(env: dict[str, str], workdir: Path) -> str:
    """Through the CLI, as an operator would: the key is alone on the last line."""
    exe = Path(sys.executable).with_name("callvault")
    out = subprocess.run(
        [str(exe), "principal", "add", "ingester", "--role", "ingest", "--owner",
         "ingest@example.com", "--tenant", "acme"],
        cwd=workdir, env={**os.environ, **env}, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.strip().splitlines()[-1]


@contextlib.contextmanager
def _server(
    tmp: Path, db: str, pg_url: str | None, weed: WeedServer | None,
    extra_env: dict[str, str] | None = None, bucket: str | None = None,
) -> Iterator[tuple[ServeProcess, str, str]]:
    with contextlib.ExitStack() as stack:
        if db == "postgres":
            assert pg_url
            db_url = stack.enter_context(temp_database(pg_url))
        else:
            db_url = f"sqlite:///{tmp / 'data' / 'callvault.db'}"
        if weed is not None:
            bucket = bucket or new_bucket_name()
            weed.client().make_bucket(bucket, object_lock=True)
        env = _env(tmp, db_url, weed, bucket) | (extra_env or {})
        server = stack.enter_context(run_serve(env, tmp))
        _add_tenant(server)
        key = _add_ingest_key(env, tmp)
        yield server, key, db_url


def _recording_statuses(db_url: str) -> list[str]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as c:
            return [r[0] for r in c.exec_driver_sql("SELECT status FROM recording")]
    finally:
        engine.dispose()


def _failed_ingests(db_url: str) -> list[str]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as c:
            rows = c.exec_driver_sql(
                "SELECT canonical FROM audit_event WHERE action = 'recording.ingest.failed'"
            )
            return [json.loads(r[0])["details"]["reason"] for r in rows]
    finally:
        engine.dispose()


def _chunks(total: int, size: int = MiB) -> Iterator[bytes]:
    block = bytes(range(256)) * (size // 256)
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield block[:n]
        sent += n


def test_300_mib_upload_in_constant_memory(tmp_path: Path, pg_url: str, weed: WeedServer) -> None:
    with _server(tmp_path, "postgres", pg_url, weed) as (server, key, _):
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "video/mp4"}
        params = {"tenant": "acme", "purposes": "troubleshooting"}
        warm = httpx.post(f"{server.url}/v1/recordings", params=params, headers=headers,
                          content=b"w" * (4 * MiB), timeout=60)  # fmt: skip
        assert warm.status_code == 201, warm.text
        baseline = server.rss_bytes()
        peak = baseline
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, server.rss_bytes())
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        total = 300 * MiB
        digest = hashlib.sha256()
        for c in _chunks(total):
            digest.update(c)
        r = httpx.post(f"{server.url}/v1/recordings", params=params, headers=headers,
                       content=_chunks(total), timeout=600)  # fmt: skip
        stop.set()
        sampler.join()
        assert r.status_code == 201, r.text
        assert r.json()["size"] == total and r.json()["sha256"] == digest.hexdigest()
        growth = peak - baseline
        assert growth < 64 * MiB, f"server RSS grew {growth / MiB:.1f} MiB"


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_body_cut_off_mid_upload_stores_nothing(tmp_path: Path, pg_url: str, db: str) -> None:
    with _server(tmp_path, db, pg_url, None) as (server, key, db_url):
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                (
                    "POST /v1/recordings?tenant=acme&purposes=troubleshooting HTTP/1.1\r\n"
                    "Host: 127.0.0.1\r\nContent-Type: video/mp4\r\n"
                    f"Authorization: Bearer {key}\r\nContent-Length: {20 * MiB}\r\n\r\n"
                ).encode()
            )
            for chunk in _chunks(3 * MiB, 64 * 1024):
                sock.sendall(chunk)
        # The server notices the cut, cleans up and audits the failed ingest.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _failed_ingests(db_url):
            time.sleep(0.2)
        assert _failed_ingests(db_url) == ["incomplete-body"]
        assert _recording_statuses(db_url) == []
        blobs = tmp_path / "data" / "blobs"
        assert not [p for p in blobs.rglob("*") if p.is_file()]


@pytest.mark.parametrize("declared", [False, True], ids=["chunked-parts", "length-one-put"])
def test_store_stopped_mid_upload(tmp_path: Path, declared: bool) -> None:
    """A store that dies mid-upload: 503 problem+json, and no committed recording, whether the
    body goes up in parts (no length) or as one streaming PUT (a declared length)."""
    with (
        run_weed(tmp_path / "weed") as dying,
        _server(tmp_path, "sqlite", None, dying) as (server, key, db_url),
    ):
        killed = threading.Event()

        def body() -> Iterator[bytes]:
            for i, c in enumerate(_chunks(200 * MiB)):
                if i == 40:
                    os.kill(dying.pid, signal.SIGKILL)
                    killed.set()
                yield c

        r = httpx.post(
                f"{server.url}/v1/recordings", params={"tenant": "acme", "purposes": "fraud"},
                headers={"Authorization": f"Bearer {key}", "Content-Type": "video/mp4",
                         **({"Content-Length": str(200 * MiB)} if declared else {})},
                content=body(), timeout=120,
            )  # fmt: skip
        assert killed.is_set()
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("/store-unavailable")
        assert "stored" not in _recording_statuses(db_url)


def _read_response(sock: socket.socket, timeout: float) -> tuple[int, dict[str, object]]:
    """The status and problem+json body the server sends on a raw socket."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    assert headers.get("content-type") == "application/problem+json", head
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), json.loads(body[:length])


def test_slow_loris_uploads_time_out_are_bounded_per_principal_and_leave_nothing(
    tmp_path: Path, pg_url: str, weed: WeedServer
) -> None:
    """Two uploads that stall after 9 MiB (a multipart part is already in S3) hold both of the
    principal's upload slots: a third is refused with 429 at once; the stalled ones get 408
    problem+json after the idle timeout; no row, object or multipart upload is left, and the
    slots are free again."""
    limits = {
        "CALLVAULT_UPLOAD_IDLE_TIMEOUT_SECONDS": "3",
        "CALLVAULT_MAX_UPLOADS_PER_PRINCIPAL": "2",
    }
    bucket = new_bucket_name()
    with _server(tmp_path, "postgres", pg_url, weed, limits, bucket) as (server, key, db_url):
        port = int(server.url.rsplit(":", 1)[1])
        head = (
            "POST /v1/recordings?tenant=acme&purposes=troubleshooting HTTP/1.1\r\n"
            "Host: 127.0.0.1\r\nContent-Type: video/mp4\r\n"
            f"Authorization: Bearer {key}\r\nContent-Length: {64 * MiB}\r\n\r\n"
        ).encode()
        with contextlib.ExitStack() as stack:
            stalled = []
            for _ in range(2):
                sock = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
                sock.sendall(head)
                for chunk in _chunks(9 * MiB, 256 * 1024):
                    sock.sendall(chunk)
                stalled.append(sock)  # ... and then nothing more, connection held open
            time.sleep(0.5)  # both bodies are being read by now

            def upload() -> httpx.Response:
                return httpx.post(
                    f"{server.url}/v1/recordings",
                    params={"tenant": "acme", "purposes": "troubleshooting"},
                    headers={"Authorization": f"Bearer {key}", "Content-Type": "video/mp4"},
                    content=os.urandom(1024), timeout=30,
                )  # fmt: skip

            third = upload()
            assert third.status_code == 429, third.text
            assert third.headers["content-type"] == "application/problem+json"
            assert third.json()["type"].endswith("/too-many-uploads")
            for sock in stalled:
                status, problem = _read_response(sock, timeout=30)
                assert status == 408 and str(problem["type"]).endswith("/upload-timeout")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(_failed_ingests(db_url)) < 2:
            time.sleep(0.2)
        assert len(_failed_ingests(db_url)) == 2
        assert _recording_statuses(db_url) == []
        client = weed.client()
        assert list(client.list_objects(bucket, recursive=True, include_version=True)) == []
        assert client._list_multipart_uploads(bucket).uploads == []
        # The slots are free again: a normal upload goes through.
        ok = upload()
        assert ok.status_code == 201, ok.text
