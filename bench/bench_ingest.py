"""Encrypted ingest vs. a plain minio ``put_object`` of the same bytes to the same SeaweedFS.

Targets (issue #3): >= 0.9x through the service layer, >= 0.8x through the HTTP API (uvicorn),
flat memory.
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench._util import best_of, mib_env, peak_rss_bytes, report, reset_peak_rss, rss_bytes
from tests.support.server import run_serve
from tests.support.weed import run_weed
from vault.authz import Actor
from vault.config import Settings
from vault.context import build_context
from vault.identity import principals
from vault.identity.owners import owner_of
from vault.identity.tenants import create_tenant
from vault.recordings.ingest import ingest as ingest_recording
from vault.setup import initialise

MiB = 1 << 20


def _slices(data: bytes, size: int = MiB) -> Iterator[bytes]:
    view = memoryview(data)
    for i in range(0, len(data), size):
        yield bytes(view[i : i + size])


def main() -> dict[str, float]:
    mib = mib_env("CALLVAULT_BENCH_INGEST_MIB", 256)
    data = os.urandom(mib * MiB)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        with run_weed(tmp / "weed") as weed:
            client = weed.client()
            client.make_bucket("bench-plain")
            client.make_bucket("bench-vault", object_lock=True)
            env = {
                "CALLVAULT_DATABASE_URL": f"sqlite:///{tmp / 'data' / 'callvault.db'}",
                "CALLVAULT_BLOB_STORE": "s3://bench-vault",
                "CALLVAULT_S3_ENDPOINT": weed.endpoint,
                "CALLVAULT_S3_ACCESS_KEY": weed.access_key,
                "CALLVAULT_S3_SECRET_KEY": weed.secret_key,
                "CALLVAULT_KEY_PROVIDER": f"local:{tmp / 'keys'}",
            }
            settings = Settings(**{k.removeprefix("CALLVAULT_").lower(): v for k, v in env.items()})
            ctx = build_context(settings, create_keys=True)
            initialise(ctx, now=ctx.now())
            owner = owner_of(ctx.keys, "bench@example.com")
            with ctx.db.transaction() as s:
                create_tenant(s, actor=Actor.operator(), name="acme", region=None,
                                         now=ctx.now())  # fmt: skip
            n = [0]

            def plain() -> None:
                n[0] += 1
                client.put_object("bench-plain", f"obj-{n[0]}", io.BytesIO(data), length=len(data),
                                  part_size=8 * MiB)  # fmt: skip

            def service() -> None:
                ingest_recording(
                    ctx, actor=Actor.operator(), tenant="acme", purposes=["troubleshooting"],
                    call_id=None, recorded_at=None, content_type="video/mp4",
                    chunks=_slices(data), expected_length=len(data),
                )  # fmt: skip

            t_plain = best_of(plain)
            reset_peak_rss()
            before = rss_bytes()
            t_service = best_of(service)
            service_rss = peak_rss_bytes() - before

            with ctx.db.transaction() as s:
                create_tenant(s, actor=Actor.operator(), name="beta", region=None,
                                         now=ctx.now())  # fmt: skip
                _, key = principals.add_principal(
                    s, actor=Actor.operator(), name="bench-ingest", role="ingest",
                    owner=owner, tenants=["beta"], all_tenants=False,
                    now=ctx.now(),
                )  # fmt: skip
            with run_serve(env, tmp) as server:
                headers = {"Authorization": f"Bearer {key}", "Content-Type": "video/mp4"}
                params = {"tenant": "beta", "purposes": "troubleshooting"}

                def http() -> None:
                    r = httpx.post(f"{server.url}/v1/recordings", params=params, headers=headers,
                                   content=_slices(data), timeout=600)  # fmt: skip
                    assert r.status_code == 201, r.text

                http()  # warm-up: imports, connection pools
                base = server.rss_bytes()
                peak = [base]
                stop = threading.Event()

                def sample() -> None:
                    while not stop.is_set():
                        peak[0] = max(peak[0], server.rss_bytes())
                        time.sleep(0.05)

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                t_http = best_of(http)
                stop.set()
                sampler.join()
                http_rss = peak[0] - base
            ctx.close()

    size = mib * MiB
    res = {
        "size_mib": mib,
        "plain_put_mbps": size / t_plain / 1e6,
        "service_ingest_mbps": size / t_service / 1e6,
        "http_ingest_mbps": size / t_http / 1e6,
        "service_vs_plain": t_plain / t_service,
        "http_vs_plain": t_plain / t_http,
        "service_rss_growth_mib": service_rss / MiB,
        "http_server_rss_growth_mib": http_rss / MiB,
    }
    r = res
    report("ingest", [
        (f"plain minio put_object ({mib} MiB)", f"{r['plain_put_mbps']:.0f} MB/s"),
        ("encrypted ingest, service layer", f"{r['service_ingest_mbps']:.0f} MB/s = {r['service_vs_plain']:.2f}x plain"),
        ("encrypted ingest, HTTP (uvicorn)", f"{r['http_ingest_mbps']:.0f} MB/s = {r['http_vs_plain']:.2f}x plain"),
        ("RSS growth service / HTTP server", f"{r['service_rss_growth_mib']:.1f} / {r['http_server_rss_growth_mib']:.1f} MiB"),
        ("targets", ">= 0.9x (service), >= 0.8x (HTTP), flat memory"),
    ], res)  # fmt: skip
    return res


if __name__ == "__main__":
    main()
