"""Playback (audited, grant-checked, decrypting) vs. a plain minio ``get_object`` of the same
ciphertext from the same SeaweedFS, through the service layer.

Targets (issue #4): full download+decrypt of 256 MiB at >= 0.85x the plain GET; a 1 MiB range
near the end of a 1 GiB recording within 1.5x the latency of one at offset 0.
Smoke run: ``CALLVAULT_BENCH_MIB=32 python -m bench playback`` (both sizes become 32 MiB).
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from bench._util import best_of, mib_env, report
from tests.support.weed import run_weed
from vault.access import grants
from vault.authz import Actor
from vault.config import Settings
from vault.context import Context, build_context
from vault.identity import authentication, principals
from vault.identity.owners import owner_of
from vault.identity.tenants import create_tenant
from vault.models import Recording
from vault.recordings import playback
from vault.recordings.ingest import ingest as ingest_recording
from vault.setup import initialise

MiB = 1 << 20
BUCKET = "bench-vault"


def _zeros(total: int, size: int = 8 * MiB) -> Iterator[bytes]:
    block = bytes(size)
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield block if n == size else block[:n]
        sent += n


def _ingest(ctx: Context, total: int) -> Recording:
    return ingest_recording(
        ctx, actor=Actor.operator(), tenant="acme", purposes=["troubleshooting"], call_id=None,
        recorded_at=None, content_type="video/mp4", chunks=_zeros(total), expected_length=total,
    )  # fmt: skip


def main() -> dict[str, float]:
    full_mib = mib_env("CALLVAULT_BENCH_PLAYBACK_MIB", 256)
    big_mib = mib_env("CALLVAULT_BENCH_PLAYBACK_BIG_MIB", 1024)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        with run_weed(tmp / "weed") as weed:
            client = weed.client()
            client.make_bucket(BUCKET, object_lock=True)
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                database_url=f"sqlite:///{tmp / 'data' / 'callvault.db'}",
                blob_store=f"s3://{BUCKET}", s3_endpoint=weed.endpoint,
                s3_access_key=weed.access_key, s3_secret_key=weed.secret_key,
                key_provider=f"local:{tmp / 'keys'}",
            )  # fmt: skip
            ctx = build_context(settings, create_keys=True)
            initialise(ctx, now=ctx.now())
            owner = owner_of(ctx.keys, "bench@example.com")
            with ctx.db.transaction() as s:
                create_tenant(s, actor=Actor.operator(), name="acme", region=None,
                                         now=ctx.now())  # fmt: skip
                _, key = principals.add_principal(
                    s, actor=Actor.operator(), name="bench-eng", role="engineer",
                    owner=owner, tenants=["acme"], all_tenants=False, now=ctx.now(),
                )  # fmt: skip
            with ctx.db.session() as s:
                actor = authentication.authenticate(s, api_key=key, now=ctx.now())

            full = _ingest(ctx, full_mib * MiB)
            big = full if big_mib == full_mib else _ingest(ctx, big_mib * MiB)
            now = ctx.now()
            with ctx.db.transaction() as s:
                gid = grants.issue_grant(
                    s, principal_id=actor.id, owner=actor.owner, purpose="troubleshooting",
                    recording_ids=sorted({full.id, big.id}), not_before=now,
                    expires_at=now + timedelta(hours=4),
                ).id  # fmt: skip

            def read(rid: uuid.UUID, range_header: str | None) -> int:
                plan = playback.open_read(ctx, actor=actor, recording_id=rid, grant_id=gid,
                                          range_header=range_header, now=ctx.now())  # fmt: skip
                return sum(len(c) for c in playback.stream(ctx, plan))

            def plain() -> None:
                resp = client.get_object(BUCKET, full.object_key, version_id=full.version_id)
                try:
                    for _ in resp.stream(MiB):
                        pass
                finally:
                    resp.close()
                    resp.release_conn()

            def vault_full() -> None:
                assert read(full.id, None) == full_mib * MiB

            plain()  # warm-up: connections, page cache on the server
            vault_full()
            t_plain = best_of(plain, 5)
            t_vault = best_of(vault_full, 5)

            size = big_mib * MiB
            near_end = size - MiB - 12_345  # not segment-aligned, as a seek would be
            head_range = f"bytes=0-{MiB - 1}"
            tail_range = f"bytes={near_end}-{near_end + MiB - 1}"
            read(big.id, head_range)
            read(big.id, tail_range)
            t_head = best_of(lambda: read(big.id, head_range), 20)
            t_tail = best_of(lambda: read(big.id, tail_range), 20)
            ctx.close()

    nbytes = full_mib * MiB
    res = {
        "size_mib": full_mib,
        "big_mib": big_mib,
        "plain_get_mbps": nbytes / t_plain / 1e6,
        "playback_mbps": nbytes / t_vault / 1e6,
        "playback_vs_plain": t_plain / t_vault,
        "range_1mib_at_0_ms": t_head * 1e3,
        "range_1mib_near_end_ms": t_tail * 1e3,
        "tail_vs_head": t_tail / t_head,
    }
    r = res
    report("playback", [
        (f"plain minio get_object ({full_mib} MiB)", f"{r['plain_get_mbps']:.0f} MB/s"),
        ("playback.stream (audit, grant re-check, decrypt)", f"{r['playback_mbps']:.0f} MB/s = {r['playback_vs_plain']:.2f}x plain (target >= 0.85x)"),
        (f"1 MiB range at 0 / near the end of {big_mib} MiB", f"{r['range_1mib_at_0_ms']:.1f} / {r['range_1mib_near_end_ms']:.1f} ms = {r['tail_vs_head']:.2f}x (target <= 1.5x)"),
    ], res)  # fmt: skip
    return res


if __name__ == "__main__":
    main()
