"""Streaming AEAD throughput vs. raw AES-GCM and Tink, plus file-to-file and peak RSS.

Targets (issue #2): >= 0.85x raw AESGCM in 1 MiB calls, >= 5x Tink, RSS growth < 64 MiB.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench._util import Sink, best_of, gbps, mib_env, report
from crypto import streaming

SEGMENT = 1 << 20


def _raw_aesgcm(data: memoryview, key: bytes) -> None:
    aead = AESGCM(key)
    sink = Sink()
    nonce = bytes(12)
    for i in range(0, len(data), SEGMENT):
        sink.write(aead.encrypt(nonce, data[i : i + SEGMENT], None))


def _tink(data: bytes, dek: bytes) -> None:
    from tests.crypto._tink import tink_streaming_aead

    class KeepOpen(Sink):
        def close(self) -> None:  # Tink closes its destination
            pass

    with tink_streaming_aead(dek).new_encrypting_stream(KeepOpen(), b"ad") as stream:
        view = memoryview(data)
        for i in range(0, len(data), SEGMENT):
            stream.write(view[i : i + SEGMENT])


def _tink_decrypt(obj: bytes, dek: bytes) -> None:
    from tests.crypto._tink import tink_streaming_aead

    with tink_streaming_aead(dek).new_decrypting_stream(io.BytesIO(obj), b"ad") as stream:
        while stream.read(SEGMENT):
            pass


def _tink_ciphertext(data: bytes, dek: bytes) -> bytes:
    from tests.crypto._tink import tink_encrypt

    return tink_encrypt(dek, data, b"ad")


_FILE_CHILD = """
import sys, uuid, os
sys.path.insert(0, {root!r})
from bench._util import rss_bytes, peak_rss_bytes, reset_peak_rss
from crypto import streaming
rid, dek = uuid.uuid4(), os.urandom(32)
reset_peak_rss(); before = rss_bytes()
with open({src!r}, "rb") as s, open({dst!r}, "wb") as d:
    streaming.encrypt(s, d, dek=dek, recording_id=rid)
enc_peak = peak_rss_bytes() - before
reset_peak_rss(); before = rss_bytes()
with open({dst!r}, "rb") as s, open(os.devnull, "wb") as d:
    streaming.decrypt(s, d, dek=dek, recording_id=rid)
print(enc_peak, peak_rss_bytes() - before)
"""


def main() -> dict[str, float]:
    mib = mib_env("CALLVAULT_BENCH_CRYPTO_MIB", 512)
    size = mib << 20
    data = os.urandom(size)
    dek, rid = os.urandom(32), uuid.uuid4()

    t_raw = best_of(lambda: _raw_aesgcm(memoryview(data), dek))
    t_enc = best_of(lambda: streaming.encrypt(io.BytesIO(data), Sink(), dek=dek, recording_id=rid))
    obj = io.BytesIO()
    streaming.encrypt(io.BytesIO(data), obj, dek=dek, recording_id=rid)
    ours = [obj.getvalue()]
    del obj
    t_dec = best_of(
        lambda: streaming.decrypt(io.BytesIO(ours[0]), Sink(), dek=dek, recording_id=rid)
    )
    ours.clear()
    t_tink = best_of(lambda: _tink(data, dek), repeat=1)
    theirs = [_tink_ciphertext(data, dek)]
    t_tink_dec = best_of(lambda: _tink_decrypt(theirs[0], dek), repeat=1)
    theirs.clear()

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "plain"), Path(tmp, "obj")
        src.write_bytes(data)
        root = str(Path(__file__).resolve().parent.parent)
        code = _FILE_CHILD.format(root=root, src=str(src), dst=str(dst))
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout.split()
        t_file = time.perf_counter() - t0
        enc_rss, dec_rss = int(out[0]), int(out[1])

    res = {
        "size_mib": mib,
        "raw_aesgcm_gbps": gbps(size, t_raw),
        "encrypt_gbps": gbps(size, t_enc),
        "decrypt_gbps": gbps(size, t_dec),
        "tink_encrypt_gbps": gbps(size, t_tink),
        "file_to_file_encrypt_then_decrypt_gbps": gbps(2 * size, t_file),
        "encrypt_vs_raw": t_raw / t_enc,
        "decrypt_vs_raw": t_raw / t_dec,
        "tink_decrypt_gbps": gbps(size, t_tink_dec),
        "encrypt_vs_tink": t_tink / t_enc,
        "decrypt_vs_tink": t_tink_dec / t_dec,
        "encrypt_rss_growth_mib": enc_rss / 2**20,
        "decrypt_rss_growth_mib": dec_rss / 2**20,
    }
    r = res
    rows = [
        (f"raw AESGCM, 1 MiB calls ({mib} MiB)", f"{r['raw_aesgcm_gbps']:.2f} GB/s"),
        ("streaming encrypt", f"{r['encrypt_gbps']:.2f} GB/s = {r['encrypt_vs_raw']:.2f}x raw"),
        ("streaming decrypt", f"{r['decrypt_gbps']:.2f} GB/s = {r['decrypt_vs_raw']:.2f}x raw"),
        ("Tink encrypt", f"{r['tink_encrypt_gbps']:.2f} GB/s; ours {r['encrypt_vs_tink']:.1f}x"),
        ("Tink decrypt", f"{r['tink_decrypt_gbps']:.2f} GB/s; ours {r['decrypt_vs_tink']:.1f}x"),
        ("file-to-file enc+dec", f"{r['file_to_file_encrypt_then_decrypt_gbps']:.2f} GB/s"),
        (
            "RSS growth enc / dec",
            f"{r['encrypt_rss_growth_mib']:.1f} / {r['decrypt_rss_growth_mib']:.1f} MiB",
        ),
        ("targets", ">= 0.85x raw, >= 5x Tink, RSS growth < 64 MiB"),
    ]
    report("crypto", rows, res)
    return res


if __name__ == "__main__":
    main()
