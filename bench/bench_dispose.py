"""Disposal of expired recordings vs. deleting the same objects one by one with minio.

Target (issue #5): crypto-shredding N expired small recordings (DEK destroyed, every object
version removed, tombstone and audit events written) takes at most 1.5x the time of deleting the
same number of objects, with their versions, directly through the minio SDK.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from pathlib import Path

from bench._util import report
from tests.support.clock import FakeClock
from tests.support.weed import run_weed
from vault.authz import Actor
from vault.config import Settings
from vault.context import build_context
from vault.identity.tenants import create_tenant
from vault.recordings.ingest import ingest as ingest_recording
from vault.retention import disposal as retention
from vault.setup import initialise

BODY = os.urandom(2048)


def main() -> dict[str, float]:
    n = int(os.environ.get("CALLVAULT_BENCH_DISPOSE_N", "5000"))
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        with run_weed(tmp / "weed") as weed:
            client = weed.client()
            client.make_bucket("bench-raw", object_lock=True)
            client.make_bucket("bench-vault", object_lock=True)

            # Baseline: N small objects, each deleted with its versions, one by one.
            for i in range(n):
                client.put_object("bench-raw", f"t/{i}", io.BytesIO(BODY), len(BODY))
            t0 = time.perf_counter()
            for i in range(n):
                for v in client.list_objects("bench-raw", prefix=f"t/{i}", include_version=True):
                    client.remove_object("bench-raw", v.object_name, version_id=v.version_id)
            t_raw = time.perf_counter() - t0

            clock = FakeClock()
            settings = Settings(
                database_url=f"sqlite:///{tmp / 'data' / 'callvault.db'}",
                blob_store="s3://bench-vault",
                s3_endpoint=weed.endpoint,
                s3_access_key=weed.access_key,
                s3_secret_key=weed.secret_key,
                key_provider=f"local:{tmp / 'keys'}",
            )
            ctx = build_context(settings, clock=clock, create_keys=True)
            initialise(ctx, now=clock())
            with ctx.db.transaction() as s:
                create_tenant(s, actor=Actor.operator(), name="acme", region=None,
                                         now=clock())  # fmt: skip
            for _ in range(n):
                ingest_recording(
                    ctx, actor=Actor.operator(), tenant="acme", purposes=["transcription"],
                    call_id=None, recorded_at=None, content_type="audio/ogg",
                    chunks=iter([BODY]),
                )  # fmt: skip
            clock.advance(days=15)  # past transcription's 14-day retention
            t0 = time.perf_counter()
            disposed = 0
            while True:
                result = retention.dispose(ctx, now=clock())
                if not result.disposed:
                    break
                disposed += result.disposed
            t_vault = time.perf_counter() - t0
            ctx.close()
    res = {
        "recordings": n,
        "disposed": disposed,
        "raw_delete_seconds": t_raw,
        "dispose_seconds": t_vault,
        "dispose_vs_raw": t_vault / t_raw,
    }
    report("dispose", [
        (f"raw minio delete of {n} objects with versions", f"{t_raw:.2f} s"),
        (f"crypto-shred {disposed} expired recordings", f"{t_vault:.2f} s = {t_vault / t_raw:.2f}x raw"),
        ("target", "<= 1.5x raw"),
    ], res)  # fmt: skip
    return res


if __name__ == "__main__":
    main()
