"""Redaction speed and memory vs a plain ffmpeg re-encode of the same clip, in the same run.

Target (issue #10): ``network-diagnostics`` at least real time (>= 25 fps) for a 60 s 640x360
25 fps call on this 2-core machine, memory bounded whatever the clip length. Each profile runs the
whole service path: the original decrypted from the store into ffmpeg over loopback, the
operations, the encode, the derivative encrypted into the store, the verification decode and
checks, the signed manifest. The baseline is ``ffmpeg -i clip -c:v libx264 -preset veryfast
-c:a aac`` to the null muxer: decode and encode of the same clip, nothing else.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench._util import peak_rss_bytes, report, reset_peak_rss, rss_bytes
from tests.support.calls import make_call
from tests.support.clock import FakeClock
from vault.authz import Actor
from vault.config import Settings
from vault.context import build_context
from vault.identity.tenants import create_tenant
from vault.media import ffmpeg_exe
from vault.recordings.ingest import ingest
from vault.redaction import pipeline, queue, service
from vault.setup import initialise

PROFILES = ("network-diagnostics", "faces-blurred")


def _baseline(clip: Path) -> float:
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(clip),
           "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac",
           "-f", "null", "-"]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, timeout=600)
    return time.perf_counter() - t0


def main() -> dict[str, float]:
    seconds = float(os.environ.get("CALLVAULT_BENCH_REDACT_SECONDS", "60"))
    frames = int(seconds * 25)
    timings: dict[str, dict[str, float]] = {}
    real_run = pipeline.Run

    class Timed(real_run):  # type: ignore[misc, valid-type]
        def output(self):  # type: ignore[no-untyped-def]
            yield from super().output()
            timings[self.profile_name] = dict(self.evidence.timings)

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        clip = make_call(tmp / "call.mp4", seconds=seconds)
        t_base = min(_baseline(clip) for _ in range(2))
        clock = FakeClock()
        settings = Settings(
            database_url=f"sqlite:///{tmp / 'data' / 'callvault.db'}",
            blob_store=f"file:{tmp / 'data' / 'blobs'}", key_provider=f"local:{tmp / 'keys'}",
        )  # fmt: skip
        ctx = build_context(settings, clock=clock, create_keys=True)
        initialise(ctx, now=clock())
        op = Actor.operator()
        with ctx.db.transaction() as s:
            create_tenant(s, actor=op, name="acme", region=None, now=clock())
        body = clip.read_bytes()
        rec = ingest(ctx, actor=op, tenant="acme", purposes=["troubleshooting"], call_id=None,
                     recorded_at=None, content_type="video/mp4",
                     chunks=[body[i : i + (1 << 20)] for i in range(0, len(body), 1 << 20)])  # fmt: skip
        results: dict[str, float] = {"clip_seconds": seconds, "baseline_seconds": t_base}
        rows = [(f"plain ffmpeg re-encode of a {seconds:g} s 640x360 clip",
                 f"{t_base:.2f} s = {frames / t_base:.0f} fps (baseline)")]  # fmt: skip
        service.Run = Timed  # type: ignore[attr-defined]
        try:
            for name in PROFILES:
                Timed.profile_name = name
                with ctx.db.transaction() as s:
                    rid = queue.request(s, actor=op, policy=ctx.policy, recording_id=rec.id,
                                        profile=name, purposes=["troubleshooting"],
                                        now=clock()).id  # fmt: skip
                before = rss_bytes()
                reset_peak_rss()
                t0 = time.perf_counter()
                verified, failed = service.run_queue(ctx, now=clock(), only=[rid])
                took = time.perf_counter() - t0
                growth = (peak_rss_bytes() - before) / (1 << 20)
                assert verified == 1 and failed == 0, name
                results[f"{name}_seconds"] = took
                results[f"{name}_fps"] = frames / took
                results[f"{name}_vs_reencode"] = took / t_base
                results[f"{name}_rss_growth_mib"] = growth
                stages = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(timings[name].items()))
                rows.append((f"{name}: whole service path", f"{took:.2f} s = {frames / took:.0f} "
                             f"fps = {took / t_base:.2f}x re-encode, RSS +{growth:.0f} MiB"))
                rows.append((f"{name}: where the time goes (threads overlap)", stages))
        finally:
            service.Run = real_run  # type: ignore[attr-defined]
            ctx.close()
    rows.append(("target", "network-diagnostics >= 25 fps; memory flat in clip length"))
    report("redaction", rows, results)
    return results


if __name__ == "__main__":
    main()
