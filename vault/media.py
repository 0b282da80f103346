"""ffmpeg behind one module: build command lines with ffmpeg-python, run them ourselves.

The binary is ``imageio_ffmpeg.get_ffmpeg_exe()`` (a static ffmpeg with libx264, libvpx, libopus
and aac, and no ffprobe). ffmpeg-python only *compiles* the command line here: its own ``run``
reads stderr through a pipe and deadlocks (0.2.0) once ffmpeg writes more than a pipe buffer of
log, so we run the process with a timeout and send stderr to a temp file instead.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any, TypedDict

import ffmpeg
import imageio_ffmpeg

__all__ = ["MediaError", "ProbeResult", "ffmpeg_exe", "make_test_clip", "probe", "run"]

DEFAULT_TIMEOUT = 120.0
_STDERR_TAIL = 2000
# Before the inputs: ffmpeg may ignore trailing options, and must never wait on a terminal.
_GLOBAL_ARGS = ("-hide_banner", "-nostdin", "-y")

# container -> (video codec, audio codec) for generated clips
_CODECS = {
    "mp4": ("libx264", "aac"),
    "mov": ("libx264", "aac"),
    "matroska": ("libx264", "aac"),
    "webm": ("libvpx", "libopus"),
}

_DURATION_RE = re.compile(r"Duration:\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")
_INPUT_RE = re.compile(r"Input #0, ([^ ]+), from")
_STREAM_RE = re.compile(r"Stream #0:\d+\S*: (Video|Audio): (\w+)([^\n]*)")
_SIZE_RE = re.compile(r", (\d{2,5})x(\d{2,5})\b")


class MediaError(RuntimeError):
    """ffmpeg failed, timed out or could not be started; the message ends with its stderr."""


class ProbeResult(TypedDict):
    format: str | None
    duration: float | None
    has_video: bool
    has_audio: bool
    video_codec: str | None
    audio_codec: str | None
    width: int | None
    height: int | None


def ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


def _command(stream: Any) -> list[str]:
    return list(stream.compile(cmd=[ffmpeg_exe(), *_GLOBAL_ARGS]))


def run(args: list[str], *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Run a compiled ffmpeg command line; return its stderr (ffmpeg logs there).

    Raises ``MediaError`` with the tail of stderr on a non-zero exit or a timeout (the process is
    killed then).
    """
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                timeout=timeout, check=False,
            )  # fmt: skip
            failure = None if proc.returncode == 0 else f"ffmpeg exited with {proc.returncode}"
        except subprocess.TimeoutExpired:
            failure = f"ffmpeg timed out after {timeout:g}s"
        except OSError as exc:
            raise MediaError(f"cannot run ffmpeg: {exc}") from exc
        err.seek(0)
        text = err.read().decode("utf-8", errors="replace")
    if failure is not None:
        raise MediaError(f"{failure}:\n{text[-_STDERR_TAIL:]}")
    return text


def make_test_clip(
    path: Path | str,
    *,
    seconds: float = 3.0,
    size: str = "320x240",
    rate: int = 25,
    fmt: str = "mp4",
    video_bitrate: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Write a synthetic clip: ``testsrc2`` video plus a ``sine`` tone (H.264 + AAC for mp4).

    ``testsrc2`` compresses very well; a ``video_bitrate`` such as ``"8M"`` makes a clip big
    enough to span several 1 MiB segments.
    """
    if fmt not in _CODECS:
        raise ValueError(f"unsupported test clip format {fmt!r}; choose from {sorted(_CODECS)}")
    if not re.fullmatch(r"\d{1,5}x\d{1,5}", size) or seconds <= 0 or rate <= 0:
        raise ValueError("size must be WxH, seconds and rate positive")
    out = Path(path)
    vcodec, acodec = _CODECS[fmt]
    video = ffmpeg.input(f"testsrc2=size={size}:rate={rate}:duration={seconds:g}", f="lavfi")
    audio = ffmpeg.input(f"sine=frequency=440:sample_rate=48000:duration={seconds:g}", f="lavfi")
    options: dict[str, Any] = {"vcodec": vcodec, "acodec": acodec, "pix_fmt": "yuv420p", "f": fmt}
    if fmt in ("mp4", "mov"):
        options["movflags"] = "+faststart"  # index first, as players streaming with Range want
    if vcodec == "libx264":
        options["preset"] = "veryfast"
    if video_bitrate is not None:
        # Constant bitrate (min = max = target) keeps the size predictable.
        options.update({"video_bitrate": video_bitrate, "minrate": video_bitrate,
                        "maxrate": video_bitrate, "bufsize": video_bitrate})  # fmt: skip
        if vcodec == "libx264":
            options["x264-params"] = "nal-hrd=cbr"  # pad with filler: x264 undershoots otherwise
    run(_command(ffmpeg.output(video, audio, str(out), **options)), timeout=timeout)
    return out


def probe(path: Path | str, *, timeout: float = 60.0) -> ProbeResult:
    """Container, duration and streams of a media file, from ffmpeg's own input report.

    There is no ffprobe: remuxing every stream to the null muxer (``-c copy``, nothing decoded)
    prints the same report and exits non-zero when the input is not readable media.
    """
    text = run(
        _command(ffmpeg.input(str(path)).output("-", f="null", c="copy", map="0")), timeout=timeout
    )
    fmt = _INPUT_RE.search(text)
    dur = _DURATION_RE.search(text)
    duration = None
    if dur is not None:
        h, m, s = dur.groups()
        duration = int(h) * 3600 + int(m) * 60 + float(s)
    result: ProbeResult = {
        "format": fmt.group(1) if fmt else None, "duration": duration,
        "has_video": False, "has_audio": False, "video_codec": None, "audio_codec": None,
        "width": None, "height": None,
    }  # fmt: skip
    for kind, codec, rest in _STREAM_RE.findall(text):
        if kind == "Video" and not result["has_video"]:
            result["has_video"], result["video_codec"] = True, codec
            wh = _SIZE_RE.search(rest)
            if wh is not None:
                result["width"], result["height"] = int(wh.group(1)), int(wh.group(2))
        elif kind == "Audio" and not result["has_audio"]:
            result["has_audio"], result["audio_codec"] = True, codec
    return result
