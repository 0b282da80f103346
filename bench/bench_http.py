"""callvault over HTTP against plain presigned S3 requests to the same SeaweedFS, both driven by
curl (a native client, so the client's own cost does not decide the ratio), in the same run.

Targets (issue #12), each on PostgreSQL (local keyring) and on SQLite:
- download 256 MiB >= 0.6x a presigned GET of the ciphertext; upload >= 0.8x a presigned PUT;
- a 1 MiB Range request <= 2.5x a plain ranged GET (median latency);
- an authenticated metadata GET <= 2x ``/healthz``;
- 16 clients streaming 16 recordings >= 0.5x the aggregate of 16 presigned GETs;
- 16 clients seeking random 1 MiB ranges: p99 <= 5x the plain p99; server RSS reported.
Each row times interleaved pairs (a baseline request, then callvault's) and compares their
medians: this box's speed drifts within seconds, and a pair shares its moment.
Smoke run: ``CALLVAULT_BENCH_MIB=32 python -m bench http``.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from bench._util import mib_env, report
from tests.support.postgres import postgres_server, temp_database
from tests.support.server import ServeProcess, run_serve
from tests.support.weed import WeedServer, run_weed

MiB = 1 << 20
CURL = ["curl", "-sS", "--fail", "-o", "/dev/null", "-H", "Expect:", "-w", "%{time_total}"]
CLIENTS = 16
UPLOAD_PAIRS = 5
# Ranges per seeking client: 16 x 25 = 400 latencies, so the p99 is the 4th slowest, not the 2nd.
SEEKS = 25
# API processes (``serve --workers``): one per core is the production setting on this 2-core box.
WORKERS = int(os.environ.get("CALLVAULT_BENCH_WORKERS", "2"))


def curl(*args: str) -> float:
    out = subprocess.run([*CURL, *args], capture_output=True, text=True, check=True)
    return float(out.stdout)


def interleaved(n: int, plain: Any, vault: Any) -> tuple[float, float]:
    """Medians of ``n`` interleaved pairs (a baseline, then callvault): this box's speed drifts
    within seconds, and a pair shares its moment."""
    pairs = [(plain(), vault()) for _ in range(n)]
    return statistics.median(p for p, _ in pairs), statistics.median(v for _, v in pairs)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class Vault:
    """One ``callvault serve`` with its principals and a grant over every recording."""

    def __init__(self, server: ServeProcess, env: dict[str, str], workdir: Path) -> None:
        self.server, self.env, self.workdir = server, env, workdir
        self.keys: dict[str, str] = {}
        admin = {"Authorization": f"Bearer {server.admin_key}"}
        httpx.post(f"{server.url}/v1/tenants", json={"name": "acme"}, headers=admin).raise_for_status()
        for name, role in (("ingester", "ingest"), ("alice", "engineer"), ("bob", "approver")):
            out = subprocess.run(
                [str(Path(sys.executable).with_name("callvault")), "principal", "add", name,
                 "--role", role, "--owner", f"{name}@bench.example", "--tenant", "acme"],
                cwd=workdir, env={**os.environ, **env}, capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            self.keys[name] = out.strip().splitlines()[-1]

    def auth(self, who: str) -> list[str]:
        return ["-H", f"Authorization: Bearer {self.keys[who]}"]

    def upload(self, path: Path) -> tuple[float, str]:
        url = f"{self.server.url}/v1/recordings?tenant=acme&purposes=troubleshooting"
        out = subprocess.run(
            ["curl", "-sS", "--fail", "-H", "Expect:", "-X", "POST", "-T", str(path),
             "-H", "Content-Type: video/mp4", *self.auth("ingester"), url,
             "-w", "\n%{time_total}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        body, seconds = out.rsplit("\n", 1)
        import json

        return float(seconds), json.loads(body)["id"]

    def grant(self, rids: list[str]) -> None:
        alice = {"Authorization": f"Bearer {self.keys['alice']}"}
        bob = {"Authorization": f"Bearer {self.keys['bob']}"}
        body = {"recording_ids": rids, "purpose": "troubleshooting", "reason": "benchmark of the HTTP path",
                "ticket": "BENCH-1", "duration_minutes": 60}  # fmt: skip
        r = httpx.post(f"{self.server.url}/v1/access-requests", json=body, headers=alice)
        assert r.status_code == 201, r.text
        httpx.post(f"{self.server.url}/v1/access-requests/{r.json()['id']}/approve",
                   json={"comment": "ok"}, headers=bob).raise_for_status()  # fmt: skip

    def content(self, rid: str) -> str:
        return f"{self.server.url}/v1/recordings/{rid}/content"


class RssSampler:
    def __init__(self, server: ServeProcess) -> None:
        self.server, self.base, self.peak = server, server.rss_bytes(), 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.server.rss_bytes())
            time.sleep(0.05)

    def __enter__(self) -> RssSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def _file(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        block = os.urandom(MiB)
        for _ in range(size // MiB):
            f.write(block)
    return path


def _object_key(db_url: str, rid: str) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as c:
            return c.execute(sa.text("SELECT object_key FROM recording WHERE id = :i"),
                             {"i": rid.replace("-", "") if db_url.startswith("sqlite") else rid}).scalar_one()  # fmt: skip
    finally:
        engine.dispose()


@contextlib.contextmanager
def _database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'data' / 'callvault.db'}"
        return
    with postgres_server() as base, temp_database(base) as url:
        yield url


def run_one(kind: str, weed: WeedServer, tmp: Path) -> dict[str, float]:
    size = mib_env("CALLVAULT_BENCH_HTTP_MIB", 256) * MiB
    small = max(MiB * 4, size // 8)
    bucket = f"bench-http-{kind}"
    client = weed.client()
    client.make_bucket(bucket, object_lock=True)
    client.make_bucket(f"{bucket}-plain")
    big = _file(tmp / "big.bin", size)
    res: dict[str, float] = {}
    with _database(kind, tmp) as db_url:
        env = {
            "CALLVAULT_DATABASE_URL": db_url, "CALLVAULT_KEY_PROVIDER": f"local:{tmp / 'keys'}",
            "CALLVAULT_BLOB_STORE": f"s3://{bucket}", "CALLVAULT_S3_ENDPOINT": weed.endpoint,
            "CALLVAULT_S3_ACCESS_KEY": weed.access_key, "CALLVAULT_S3_SECRET_KEY": weed.secret_key,
        }  # fmt: skip
        with run_serve(env, tmp, args=["--workers", str(WORKERS)]) as server:
            v = Vault(server, env, tmp)
            ttl = timedelta(hours=1)
            # --- upload: presigned PUT vs POST /v1/recordings, both curl -T from a file ---------
            put_url = client.presigned_put_object(f"{bucket}-plain", "big", expires=ttl)
            curl("-T", str(big), put_url)  # warm-up
            v.upload(big)
            uploaded: list[str] = []

            def upload() -> float:
                seconds, rid = v.upload(big)
                uploaded.append(rid)
                return seconds

            res["upload_plain_s"], res["upload_vault_s"] = interleaved(
                UPLOAD_PAIRS, lambda: curl("-T", str(big), put_url), upload
            )
            rid = uploaded[-1]
            # --- 16 more recordings for the concurrent streams ----------------------------------
            part = _file(tmp / "part.bin", small)
            parts = [v.upload(part)[1] for _ in range(CLIENTS)]
            v.grant([rid, *parts])
            key = _object_key(db_url, rid)
            get_url = client.presigned_get_object(bucket, key, expires=ttl)
            # --- download -----------------------------------------------------------------------
            alice = v.auth("alice")
            curl(get_url), curl(*alice, v.content(rid))  # warm-up
            with RssSampler(server) as rss:
                res["download_plain_s"], res["download_vault_s"] = interleaved(
                    5, lambda: curl(get_url), lambda: curl(*alice, v.content(rid))
                )
            res["download_rss_growth_mib"] = (rss.peak - rss.base) / MiB
            # --- 1 MiB ranges at random offsets -------------------------------------------------
            rng = random.Random(7)

            def ranged(url: str, extra: list[str]) -> float:
                start = rng.randrange(0, size - MiB)
                return curl(*extra, "-r", f"{start}-{start + MiB - 1}", url)

            res["range_plain_ms"], res["range_vault_ms"] = (1000 * t for t in interleaved(
                30, lambda: ranged(get_url, []), lambda: ranged(v.content(rid), alice)
            ))  # fmt: skip
            # --- metadata -----------------------------------------------------------------------
            meta = f"{server.url}/v1/recordings/{rid}"
            res["healthz_ms"], res["metadata_ms"] = (1000 * t for t in interleaved(
                30, lambda: curl(f"{server.url}/healthz"), lambda: curl(*alice, meta)
            ))  # fmt: skip
            # --- 16 concurrent streams ----------------------------------------------------------
            part_urls = [client.presigned_get_object(bucket, _object_key(db_url, p), expires=ttl)
                         for p in parts]  # fmt: skip

            def together(cmds: list[list[str]]) -> float:
                t0 = time.perf_counter()
                with cf.ThreadPoolExecutor(CLIENTS) as pool:
                    list(pool.map(lambda c: curl(*c), cmds))
                return time.perf_counter() - t0

            total = CLIENTS * small
            with RssSampler(server) as rss:
                t_plain, t_vault = interleaved(
                    3,
                    lambda: together([[u] for u in part_urls]),
                    lambda: together([[*alice, v.content(p)] for p in parts]),
                )
            res["streams_plain_mbps"] = total / t_plain / 1e6
            res["streams_vault_mbps"] = total / t_vault / 1e6
            res["streams_rss_growth_mib"] = (rss.peak - rss.base) / MiB
            # --- 16 clients seeking -------------------------------------------------------------

            def seekers(url_of: Any, extra: list[str]) -> list[float]:
                def client_run(i: int) -> list[float]:
                    r = random.Random(i)
                    out = []
                    for _ in range(SEEKS):
                        start = r.randrange(0, small - MiB)
                        out.append(curl(*extra, "-r", f"{start}-{start + MiB - 1}", url_of(i)))
                    return out

                with cf.ThreadPoolExecutor(CLIENTS) as pool:
                    return [t for ts in pool.map(client_run, range(CLIENTS)) for t in ts]

            res["seek_plain_p99_ms"] = 1000 * p99(seekers(lambda i: part_urls[i], []))
            with RssSampler(server) as rss:
                res["seek_vault_p99_ms"] = 1000 * p99(seekers(lambda i: v.content(parts[i]), alice))
            res["seek_rss_growth_mib"] = (rss.peak - rss.base) / MiB
    res["download_ratio"] = res["download_plain_s"] / res["download_vault_s"]
    res["upload_ratio"] = res["upload_plain_s"] / res["upload_vault_s"]
    res["range_ratio"] = res["range_vault_ms"] / res["range_plain_ms"]
    res["metadata_ratio"] = res["metadata_ms"] / res["healthz_ms"]
    res["streams_ratio"] = res["streams_vault_mbps"] / res["streams_plain_mbps"]
    res["seek_p99_ratio"] = res["seek_vault_p99_ms"] / res["seek_plain_p99_ms"]
    return res


def main() -> dict[str, Any]:
    out: dict[str, Any] = {}
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp_s, run_weed(Path(tmp_s) / "weed") as weed:
        for kind in ("postgres", "sqlite"):
            tmp = Path(tmp_s) / kind
            tmp.mkdir()
            r = out[kind] = run_one(kind, weed, tmp)
            rows += [
                (f"{kind}: download", f"{r['download_plain_s']:.2f} s plain, {r['download_vault_s']:.2f} s callvault = {r['download_ratio']:.2f}x (>= 0.6x), RSS +{r['download_rss_growth_mib']:.0f} MiB"),
                (f"{kind}: upload", f"{r['upload_plain_s']:.2f} s plain, {r['upload_vault_s']:.2f} s callvault = {r['upload_ratio']:.2f}x (>= 0.8x)"),
                (f"{kind}: 1 MiB range (median)", f"{r['range_plain_ms']:.1f} ms plain, {r['range_vault_ms']:.1f} ms = {r['range_ratio']:.2f}x slower (<= 2.5x)"),
                (f"{kind}: metadata GET (median)", f"/healthz {r['healthz_ms']:.1f} ms, metadata {r['metadata_ms']:.1f} ms = {r['metadata_ratio']:.2f}x (<= 2x)"),
                (f"{kind}: 16 streams", f"{r['streams_plain_mbps']:.0f} MB/s plain, {r['streams_vault_mbps']:.0f} MB/s = {r['streams_ratio']:.2f}x (>= 0.5x), RSS +{r['streams_rss_growth_mib']:.0f} MiB"),
                (f"{kind}: 16 seekers p99", f"{r['seek_plain_p99_ms']:.1f} ms plain, {r['seek_vault_p99_ms']:.1f} ms = {r['seek_p99_ratio']:.2f}x (<= 5x), RSS +{r['seek_rss_growth_mib']:.0f} MiB"),
            ]  # fmt: skip
    rows.append(("callvault serve", f"--workers {WORKERS}"))
    report("http", rows, {**out, "workers": WORKERS})
    return out


if __name__ == "__main__":
    main()
