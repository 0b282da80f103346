"""ffmpeg behind one module: build command lines with ffmpeg-python, run them ourselves.

The binary is ``imageio_ffmpeg.get_ffmpeg_exe()`` (a static ffmpeg with libx264, libvpx, libopus
and aac, and no ffprobe). ffmpeg-python only *compiles* the command line here: its own ``run``
reads stderr through a pipe and deadlocks (0.2.0) once ffmpeg writes more than a pipe buffer of
log, so we run the process with a timeout and send stderr to a temp file instead.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypedDict

import ffmpeg
import imageio_ffmpeg

__all__ = [
    "MediaError", "MediaInfo", "ProbeResult", "Process", "StreamInfo", "command", "ffmpeg_exe",
    "ffmpeg_version", "inspect", "make_test_clip", "parse_report", "probe", "read_exactly", "run",
    "spawn",
]  # fmt: skip

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


@functools.lru_cache(maxsize=1)
def ffmpeg_version() -> str:
    """The first line of ``ffmpeg -version`` (for manifests)."""
    out = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True, timeout=30,
                         check=False).stdout  # fmt: skip
    return out.splitlines()[0].strip() if out else "unknown"


def _command(stream: Any) -> list[str]:
    return list(stream.compile(cmd=[ffmpeg_exe(), *_GLOBAL_ARGS]))


def command(stream: Any, *, quiet: bool = True) -> list[str]:
    """The command line of an ffmpeg-python graph. ``quiet``: ``-loglevel error``, because at the
    default level ffmpeg prints the input's tags (titles, names) on stderr."""
    args = _command(stream)
    return [args[0], "-loglevel", "error", *args[1:]] if quiet else args


def _stderr_dir() -> str | None:
    # ffmpeg's stderr can hold tag values: keep it in memory-backed storage where there is one.
    shm = "/dev/shm"  # noqa: S108 - an unnamed file (O_TMPFILE), in RAM
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def run(args: list[str], *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Run a compiled ffmpeg command line; return its stderr (ffmpeg logs there).

    Raises ``MediaError`` with the tail of stderr on a non-zero exit or a timeout (the process is
    killed then).
    """
    with tempfile.TemporaryFile(dir=_stderr_dir()) as err:
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


# --- streaming processes ------------------------------------------------------------------------


class Process:
    """A running ffmpeg with pipes, stderr in an unnamed memory-backed file, and a deadline.

    ``finish()`` waits and checks the exit code. Its ``MediaError`` never quotes stderr (it may
    hold the input's tags); ``stderr_text()`` is there for the caller that parses it.
    """

    def __init__(self, args: list[str], *, stdin: bool, stdout: bool, timeout: float,
                 pass_fds: tuple[int, ...] = ()) -> None:  # fmt: skip
        # Closed in close(): the file lives as long as the process.
        self._err: IO[bytes] = tempfile.TemporaryFile(dir=_stderr_dir())  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout else subprocess.DEVNULL, stderr=self._err,
                pass_fds=pass_fds, bufsize=0,
            )  # fmt: skip
        except OSError as exc:
            self._err.close()
            raise MediaError(f"cannot run ffmpeg: {exc}") from exc
        self.timed_out = False
        self._timer = threading.Timer(timeout, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        self.timed_out = True
        self.proc.kill()

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def finish(self) -> None:
        code = self.proc.wait()
        self._timer.cancel()
        if self.timed_out:
            raise MediaError("ffmpeg timed out")
        if code != 0:
            raise MediaError(f"ffmpeg exited with {code}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._timer.cancel()

    def stderr_text(self) -> str:
        self._err.seek(0)
        return self._err.read().decode("utf-8", errors="replace")

    def close(self) -> None:
        self.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        self._err.close()


def read_exactly(pipe: IO[bytes], size: int) -> bytes:
    """``size`` bytes from an unbuffered pipe, fewer only at its end (a raw read may be short)."""
    parts, got = [], 0
    while got < size:
        chunk = pipe.read(size - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def spawn(args: list[str], *, stdin: bool = False, stdout: bool = True,
          timeout: float = DEFAULT_TIMEOUT, pass_fds: tuple[int, ...] = ()) -> Process:  # fmt: skip
    return Process(args, stdin=stdin, stdout=stdout, timeout=timeout, pass_fds=pass_fds)


# --- what an input holds ------------------------------------------------------------------------

# Tags ffmpeg writes itself (and a re-encode writes again): never counted as the input's data.
STRUCTURAL_TAGS = frozenset({
    "encoder", "handler_name", "vendor_id", "major_brand", "minor_version", "compatible_brands",
    "duration", "_statistics_tags", "_statistics_writing_app", "_statistics_writing_date_utc",
})  # fmt: skip
_STREAM_HEAD = re.compile(
    r"^\s*Stream #0:(\d+)(?:\[[^\]]*\])?(?:\((\w+)\))?: (\w+): (\w+)(.*)$"
)
_FPS_RE = re.compile(r", ([\d.]+) (?:fps|tbr)\b")
_RATE_RE = re.compile(r", (\d+) Hz, ([^,]+)")
_TAG_RE = re.compile(r"^(\s*)([^:]+?)\s*: ?(.*)$")


@dataclass
class StreamInfo:
    index: int
    kind: str  # video, audio, data, subtitle, attachment
    codec: str
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    sample_rate: int | None = None
    channels: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class MediaInfo:
    format: str | None
    duration: float | None
    streams: list[StreamInfo]
    tags: dict[str, str]  # container
    chapters: list[dict[str, str]]

    def first(self, kind: str) -> StreamInfo | None:
        return next((s for s in self.streams if s.kind == kind), None)

    def all_tags(self) -> list[tuple[str, str]]:
        """(key, value) of every tag the input carries (container, streams, chapters), the ones
        ffmpeg writes itself left out."""
        found = [*self.tags.items()] + [kv for s in self.streams for kv in s.tags.items()]
        found += [kv for c in self.chapters for kv in c.items()]
        return [(k, v) for k, v in found if k.lower() not in STRUCTURAL_TAGS and v]


def parse_report(text: str) -> MediaInfo:
    """The ``Input #0`` section of ffmpeg's report: streams, container tags, stream tags
    (language included), chapters and their titles."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Input #0")), None)
    if start is None:
        raise MediaError("not readable media")
    fmt = _INPUT_RE.search(lines[start])
    info = MediaInfo(fmt.group(1) if fmt else None, None, [], {}, [])
    target: dict[str, str] = info.tags
    last_key: str | None = None
    for line in lines[start + 1 :]:
        if not line.startswith(" "):
            break  # "Stream mapping:", "Output #0", the next section
        stripped = line.strip()
        head = _STREAM_HEAD.match(line)
        if head is not None:
            index, lang, kind, codec, rest = head.groups()
            stream = StreamInfo(int(index), kind.lower(), codec)
            if lang and lang != "und":
                stream.tags["language"] = lang
            size = _SIZE_RE.search(rest)
            if size:
                stream.width, stream.height = int(size.group(1)), int(size.group(2))
            fps = _FPS_RE.search(rest)
            if fps:
                stream.fps = float(fps.group(1))
            rate = _RATE_RE.search(rest)
            if rate:
                stream.sample_rate, stream.channels = int(rate.group(1)), rate.group(2)
            info.streams.append(stream)
            target, last_key = stream.tags, None
        elif stripped.startswith("Duration:"):
            dur = _DURATION_RE.search(line)
            if dur:
                h, m, sec = dur.groups()
                info.duration = int(h) * 3600 + int(m) * 60 + float(sec)
        elif stripped.startswith("Chapter #"):
            info.chapters.append({})
            target, last_key = info.chapters[-1], None
        elif stripped in ("Metadata:", "Chapters:") or stripped.startswith("Side data"):
            continue
        else:
            tag = _TAG_RE.match(line)
            if tag is None:
                continue
            key, value = tag.group(2).strip(), tag.group(3)
            if key == "" and last_key is not None:  # a continuation line of a long value
                target[last_key] += "\n" + value
            elif key:
                target[key], last_key = value, key
    return info


def inspect(source: str, *, timeout: float = 60.0) -> MediaInfo:
    """Streams, duration and every tag of ``source`` (a path or URL), nothing decoded. The
    report is parsed in memory and never logged."""
    text = run(_command(ffmpeg.input(source).output("-", f="null", c="copy", map="0", t=0)),
               timeout=timeout)  # fmt: skip
    return parse_report(text)
