"""The redaction pipeline: decode, operate, encode, and decode the output again to verify it.

::

    source URL --ffmpeg--> RGB frames --(faces, boxes, pixelation)--> ffmpeg encoder --> fMP4
              --ffmpeg--> mono f32 audio --(mute, envelope)-------------^          |
                                                                                    v
                              ingest (encrypts as it comes)  <--  :meth:`Run.output`
                                                                                    |
                                     verifier ffmpeg (stdin) --> frames + samples --> Evidence

Nothing is written to disk: frames and samples travel through pipes, the output is encrypted as
it comes, and the verifier decodes the very bytes that are stored. Every ffmpeg runs with
``-loglevel error`` except the verifier, whose report (the *output's* streams and tags) is read
from its stderr file in memory. The output is fragmented MP4 (H.264 + AAC): it can be written to
a pipe, and a pipe is all the verifier needs to read it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import ffmpeg
import numpy as np

from vault import media
from vault.profiles import AudioEnvelope, BlackBox, BlurBox, BlurFaces, Mute, Pixelate
from vault.profiles import RedactionProfile as Profile
from vault.redaction import faces, frames, sound

__all__ = ["Evidence", "Run", "Shape"]

SAMPLE_EVERY_S = 1.0  # faces and pixelation are checked on one frame per second
_READ = 1 << 16
_AUDIO_BLOCK = sound.RATE // 10  # 100 ms


@dataclass(frozen=True, slots=True)
class Shape:
    """What the output holds, decided from the input and the profile before anything runs."""

    width: int
    height: int
    fps: float
    video: bool
    audio_in: bool
    audio_out: bool

    @classmethod
    def of(cls, info: media.MediaInfo, profile: Profile) -> Shape:
        video, audio = info.first("video"), info.first("audio")
        width = height = 0
        fps = 25.0
        if video is not None:
            if not video.width or not video.height:
                raise media.MediaError("the video stream has no size")
            width, height = video.width - video.width % 2, video.height - video.height % 2
            fps = video.fps if video.fps and 1 <= video.fps <= 120 else 25.0
        return cls(
            width,
            height,
            fps,
            video is not None,
            audio is not None,
            audio is not None and profile.keeps_audio,
        )

    @property
    def frame_bytes(self) -> int:
        return self.width * self.height * 3

    @property
    def content_type(self) -> str:
        return "video/mp4" if self.video else "audio/mp4"


@dataclass
class Evidence:
    """What the pipeline measured on the input and the verifier on the output."""

    frames_in: int = 0
    samples_in: int = 0
    rms_in: list[float] = field(default_factory=list)
    faces_in: dict[int, list[faces.Box]] = field(default_factory=dict)  # sampled frame -> faces
    frames_out: int = 0
    samples_out: int = 0
    rms_out: list[float] = field(default_factory=list)
    mute_db: list[float] = field(default_factory=list)  # per muted range, inside its edges
    band_leak: float | None = None  # envelope: fraction of the energy outside the tone's band
    face_hits: list[int] = field(default_factory=list)  # sampled frames with a face left
    faces_checked: int = 0
    pixel_detail: float | None = None  # worst sampled frame
    report: media.MediaInfo | None = None
    tag_hits: list[str] = field(default_factory=list)  # input tag keys whose value survived
    # Seconds spent per stage (for the benchmark's breakdown; stages overlap across threads).
    timings: dict[str, float] = field(default_factory=dict)

    def spent(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - since
        return now


class _Worker(threading.Thread):
    def __init__(self, name: str, target: Callable[[], None]) -> None:
        super().__init__(name=f"callvault-redaction-{name}", daemon=True)
        self._target_fn, self.error = target, None  # type: BaseException | None
        self.start()

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:  # handed to the run's owner
            self.error = exc


class Run:
    """One redaction of ``url`` by ``profile``: iterate :meth:`output`, then :meth:`finish`."""

    def __init__(
        self,
        url: str,
        info: media.MediaInfo,
        profile: Profile,
        *,
        timeout: float,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.url, self.info, self.profile, self.timeout = url, info, profile, timeout
        self.shape = Shape.of(info, profile)
        self.evidence = Evidence()
        self._progress = progress or (lambda _pct: None)
        self._expected_frames = max(1, int((info.duration or 1) * self.shape.fps))
        self._sample_every = max(1, round(self.shape.fps * SAMPLE_EVERY_S))
        self._procs: list[media.Process] = []
        self._workers: list[_Worker] = []
        self._centerface = faces.default_centerface() if self._checks_faces else None
        self._tags = [(k, v.encode("utf-8")) for k, v in info.all_tags() if len(v.encode()) >= 4]
        self._tail = b""

    @property
    def _checks_faces(self) -> bool:
        return self.shape.video and any(
            o.op in ("blur_faces", "pixelate") for o in self.profile.operations
        )

    # --- processes ----------------------------------------------------------------------------

    def _spawn(self, args: list[str], **kw: Any) -> media.Process:
        proc = media.spawn(args, timeout=self.timeout, **kw)
        self._procs.append(proc)
        return proc

    def _start(self) -> tuple[media.Process, int | None]:
        shape, src = self.shape, ffmpeg.input(self.url)
        inputs, audio_fd = [], None
        if shape.video:
            size = f"{shape.width}x{shape.height}"
            vdec = self._spawn(
                media.command(
                    src.output(
                        "pipe:",
                        map="0:v:0",
                        f="rawvideo",
                        pix_fmt="rgb24",
                        s=size,
                        r=shape.fps,
                        fps_mode="cfr",
                    )
                )
            )
            inputs.append(
                ffmpeg.input("pipe:0", f="rawvideo", pix_fmt="rgb24", s=size, r=shape.fps)
            )
        if shape.audio_out:
            adec = self._spawn(
                media.command(src.output("pipe:", map="0:a:0", f="f32le", ac=1, ar=sound.RATE))
            )
            read_end, audio_fd = os.pipe()
            inputs.append(ffmpeg.input(f"pipe:{read_end}", f="f32le", ac=1, ar=sound.RATE))
        options: dict[str, Any] = {
            "f": "mp4",
            "movflags": "frag_keyframe+empty_moov+default_base_moof",
            "map_metadata": -1,
            "map_chapters": -1,
            "fflags": "+bitexact",
        }
        if shape.video:
            options.update(
                vcodec="libx264",
                preset="veryfast",
                pix_fmt="yuv420p",
                g=max(1, round(shape.fps * 2)),
            )
        if shape.audio_out:
            options.update(acodec="aac", audio_bitrate="128k")
        enc = self._spawn(
            media.command(ffmpeg.output(*inputs, "pipe:1", **options)),
            stdin=shape.video,
            pass_fds=(read_end,) if shape.audio_out else (),
        )
        if shape.audio_out:
            os.close(read_end)
        if shape.video:
            self._workers.append(_Worker("video", lambda: self._video(vdec, enc)))
        if shape.audio_out:
            assert audio_fd is not None
            self._workers.append(_Worker("audio", lambda: self._audio(adec, audio_fd)))
        return enc, audio_fd

    # --- processing -----------------------------------------------------------------------------

    def _video(self, dec: media.Process, enc: media.Process) -> None:
        size, ev = self.shape.frame_bytes, self.evidence
        blur = self.profile.first("blur_faces")
        tracker = None
        if isinstance(blur, BlurFaces):
            tracker = faces.FaceTracker(
                faces.default_centerface(), every=blur.every, threshold=blur.threshold
            )
        try:
            while True:
                t0 = time.perf_counter()
                raw = media.read_exactly(dec.stdout, size)
                t0 = ev.spent("decode-wait", t0)
                if len(raw) < size:
                    break
                frame = (
                    np.frombuffer(raw, dtype=np.uint8)
                    .reshape(self.shape.height, self.shape.width, 3)
                    .copy()
                )
                index = ev.frames_in
                if self._centerface is not None and index % self._sample_every == 0:
                    ev.faces_in[index] = self._centerface.detect(
                        frame, threshold=faces.SENSITIVE_THRESHOLD
                    )
                    t0 = ev.spent("faces-sampled-in", t0)
                self._apply_video(frame, index, tracker, blur)
                t0 = time.perf_counter()
                enc.stdin.write(frame.tobytes())
                ev.spent("encode-wait", t0)
                ev.frames_in += 1
                if ev.frames_in % 25 == 0:
                    self._progress(min(99, 100 * ev.frames_in // self._expected_frames))
        finally:
            enc.stdin.close()
        dec.finish()

    def _apply_video(
        self, frame: np.ndarray, index: int, tracker: faces.FaceTracker | None, blur: Any
    ) -> None:
        t, t0 = index / self.shape.fps, time.perf_counter()
        if tracker is not None:
            faces.blur_boxes(frame, tracker.boxes_for(frame), margin=blur.margin)
            t0 = self.evidence.spent("faces-blur", t0)
        for op in self.profile.operations:
            if isinstance(op, BlackBox | BlurBox) and _in_ranges(t, op.ranges):
                (frames.black_box if isinstance(op, BlackBox) else frames.blur_box)(frame, op.rect)
            elif isinstance(op, Pixelate):
                frames.pixelate(frame, op.block)
        self.evidence.spent("pixelate-boxes", t0)

    def _audio(self, dec: media.Process, fd: int) -> None:
        ev, mutes = self.evidence, [r for m in self.profile.ops("mute") for r in m.ranges]
        env_op = self.profile.first("audio_envelope")
        envelope = (
            sound.Envelope(tone_hz=env_op.tone_hz, window_ms=env_op.window_ms)
            if isinstance(env_op, AudioEnvelope)
            else None
        )
        carry: np.ndarray | None = None
        written = 0  # the envelope hands back whole windows later, at the same positions
        with os.fdopen(fd, "wb", buffering=0) as out:
            while True:
                raw = media.read_exactly(dec.stdout, _AUDIO_BLOCK * 4)
                if not raw:
                    break
                block = np.frombuffer(raw[: len(raw) - len(raw) % 4], dtype=np.float32).copy()
                levels, carry = sound.rms_track(block, carry)
                ev.rms_in.extend(levels)
                ev.samples_in += block.size
                if envelope is not None:
                    block = envelope.feed(block)
                # Muted last, on the output's own positions: nothing the envelope does leaks in.
                sound.mute(block, written, mutes)
                written += block.size
                out.write(block.tobytes())
            if envelope is not None:
                tail = envelope.flush()
                sound.mute(tail, written, mutes)
                out.write(tail.tobytes())
        dec.finish()

    # --- the output, teed into the verifier ---------------------------------------------------

    def output(self) -> Iterator[bytes]:
        """The encoded derivative (plaintext), chunk by chunk, for ingest to encrypt."""
        from vault.redaction.verify import Verifier  # the checks live beside their thresholds

        enc, _ = self._start()
        verifier = Verifier(self)
        try:
            for chunk in iter(lambda: enc.stdout.read(_READ), b""):
                self._scan_tags(chunk)
                verifier.feed(chunk)
                yield chunk
            verifier.close_input()
            enc.finish()
            for worker in self._workers:
                worker.join()
                if worker.error is not None:
                    raise worker.error
            verifier.finish()
        except BaseException:
            self.abort()
            raise
        self._progress(100)

    def _scan_tags(self, chunk: bytes) -> None:
        """Look for every input tag value in the output bytes (across chunk boundaries)."""
        if not self._tags:
            return
        window = self._tail + chunk
        for key, value in self._tags:
            if key not in self.evidence.tag_hits and value in window:
                self.evidence.tag_hits.append(key)
        longest = max(len(v) for _, v in self._tags)
        self._tail = window[-(longest - 1) :] if longest > 1 else b""

    def abort(self) -> None:
        for proc in self._procs:
            proc.close()

    def close(self) -> None:
        self.abort()


def _in_ranges(t: float, ranges: list[list[float]]) -> bool:
    return not ranges or any(start <= t < end for start, end in ranges)


__all__ += ["Mute"]  # re-exported for the verifier's type checks
