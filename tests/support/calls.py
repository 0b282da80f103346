"""Synthetic call recordings for the redaction tests, made with the bundled ffmpeg.

A "call" is two tiles side by side, each showing a real face (``skimage.data.astronaut()``),
drifting a few pixels per frame, with speech-like audio (a tone whose loudness swells and falls),
and metadata a real recording carries: a title, a comment with an e-mail address, a stream name,
a language and a chapter. :data:`SECRETS` are the values no derivative may keep.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from vault.media import ffmpeg_exe

__all__ = ["SECRETS", "call_frames", "make_audio_only", "make_call", "make_testsrc_webm"]

SECRETS = {
    "title": "Quarterly review with Alice Example",
    "comment": "alice.example@customer.example",
    "stream": "Alice's camera",
    "chapter": "Alice shares her screen",
}
_AUDIO = "0.6*sin(2*PI*330*t)*(0.15+0.85*abs(sin(2*PI*0.4*t)))"


def call_frames(n: int, width: int = 640, height: int = 360) -> Iterator[np.ndarray]:
    face = data.astronaut()
    tiles = [(cv2.resize(face, (240, 240)), 30, 60), (cv2.resize(face, (200, 200)), 370, 80)]
    for i in range(n):
        canvas = np.full((height, width, 3), (70, 80, 90), np.uint8)
        for k, (tile, x, y) in enumerate(tiles):
            dx = (i % 10) * (1 if k == 0 else -1)
            canvas[y : y + tile.shape[0], x + dx : x + dx + tile.shape[1]] = tile
        yield canvas


def _ffmetadata(path: Path) -> Path:
    meta = path.with_suffix(".ffmeta")
    meta.write_text(
        ";FFMETADATA1\n"
        f"title={SECRETS['title']}\ncomment={SECRETS['comment']}\n"
        "[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=1000\n"
        f"title={SECRETS['chapter']}\n"
    )
    return meta


def make_call(path: Path, *, seconds: float = 3.0, fps: int = 25) -> Path:
    """An MP4 (H.264 + AAC) call with faces, audio, tags and a chapter."""
    meta = _ffmetadata(path)
    cmd = [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "640x360", "-r", str(fps), "-i", "pipe:0",
        "-f", "lavfi", "-i", f"aevalsrc={_AUDIO}:s=48000:d={seconds}",
        "-i", str(meta), "-map", "0:v", "-map", "1:a", "-map_metadata", "2", "-map_chapters", "2",
        "-metadata:s:v:0", f"title={SECRETS['stream']}", "-metadata:s:a:0", "language=deu",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac",
        "-shortest", str(path),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    with proc.stdin:  # frame by frame: a long clip never sits in memory
        for frame in call_frames(int(seconds * fps)):
            proc.stdin.write(frame.tobytes())
    if proc.wait(timeout=600) != 0:
        raise RuntimeError(f"ffmpeg exited with {proc.returncode}")
    return path


def make_testsrc_webm(path: Path, *, seconds: float = 3.0) -> Path:
    """A WebM (VP9 + Opus) of ``testsrc2`` and a tone, with tags."""
    meta = _ffmetadata(path)
    cmd = [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={seconds}",
        "-f", "lavfi", "-i", f"aevalsrc={_AUDIO}:s=48000:d={seconds}",
        "-i", str(meta), "-map", "0:v", "-map", "1:a", "-map_metadata", "2",
        "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "500k",
        "-c:a", "libopus", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    return path


def make_audio_only(path: Path, *, seconds: float = 3.0) -> Path:
    """An M4A (AAC) with a title tag and no video."""
    cmd = [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"aevalsrc={_AUDIO}:s=48000:d={seconds}",
        "-metadata", f"title={SECRETS['title']}", "-c:a", "aac", "-f", "mp4", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    return path
