"""Verification of a derivative, measured on the bytes that are stored (fail closed).

:class:`Verifier` decodes the output as the pipeline produces it; :func:`checks` turns the
evidence into the manifest's list of checks, each with the measured value and its limit. If any
check fails, the derivative is discarded and ``redaction.failed`` names the check.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import ffmpeg
import numpy as np

from vault import media
from vault.redaction import faces, frames, sound

if TYPE_CHECKING:
    from vault.redaction.pipeline import Evidence, Run

__all__ = ["DURATION_TOLERANCE_S", "MUTE_MAX_DB", "Verifier", "checks", "failed"]

DURATION_TOLERANCE_S = 0.1
MUTE_MAX_DB = -60.0
BAND_LEAK_MAX = 0.05  # at most 5 % of an envelope track's energy outside tone +- BAND_HZ
RMS_FOLLOW_MIN = 0.9  # correlation of input and output short-term levels (dB, audible windows)
_AUDIBLE_DB = -50.0  # windows quieter than this in the input are left out of the correlation
_ALLOWED_KINDS = frozenset({"video", "audio"})


class Verifier:
    """A second ffmpeg reading the output from a pipe; two threads drain its frames and samples."""

    def __init__(self, run: Run) -> None:
        from vault.redaction.pipeline import _Worker

        self.run, shape = run, run.shape
        src = ffmpeg.input("pipe:0")
        outputs = []
        self._audio_fd: int | None = None
        if shape.video:
            outputs.append(
                src["v:0"].output("pipe:1", f="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
            )
        write_end = None
        if shape.audio_out:
            read_end, write_end = os.pipe()
            self._audio_fd = read_end
            outputs.append(src["a:0"].output(f"pipe:{write_end}", f="f32le", ac=1, ar=sound.RATE))
        if not outputs:
            raise media.MediaError("the derivative would hold no stream")
        # Not quiet: its report describes the *output*, whose tags are checked below.
        self.proc = run._spawn(
            media.command(ffmpeg.merge_outputs(*outputs), quiet=False),
            stdin=True,
            stdout=shape.video,
            pass_fds=(write_end,) if write_end is not None else (),
        )
        if write_end is not None:
            os.close(write_end)
        self.workers = []
        if shape.video:
            self.workers.append(_Worker("verify-video", self._video))
        if shape.audio_out:
            self.workers.append(_Worker("verify-audio", self._audio))
        self._closed = False

    def feed(self, chunk: bytes) -> None:
        self.proc.stdin.write(chunk)

    def close_input(self) -> None:
        if not self._closed:
            self._closed = True
            self.proc.stdin.close()

    def finish(self) -> None:
        self.close_input()
        for worker in self.workers:
            worker.join()
            if worker.error is not None:
                raise worker.error
        self.proc.finish()
        self.run.evidence.report = media.parse_report(self.proc.stderr_text())

    # --- the decoded output ---------------------------------------------------------------------

    def _video(self) -> None:
        run, ev = self.run, self.run.evidence
        shape, size = run.shape, run.shape.frame_bytes
        pixelate = run.profile.first("pixelate")
        haar = None if pixelate is not None else faces.HaarFaces()
        worst = 0.0
        while True:
            raw = media.read_exactly(self.proc.stdout, size)
            if len(raw) < size:
                break
            index = ev.frames_out
            ev.frames_out += 1
            if index not in ev.faces_in and pixelate is None:
                continue
            frame = np.frombuffer(raw, dtype=np.uint8).reshape(shape.height, shape.width, 3)
            if pixelate is not None and index % run._sample_every == 0:
                worst = max(worst, frames.block_detail(frame, pixelate.block))  # type: ignore[union-attr]
            if index in ev.faces_in and run._centerface is not None:
                t0 = time.perf_counter()
                ev.faces_checked += 1
                left = faces.faces_present(frame, centerface=run._centerface, haar=haar)
                if any(faces.overlaps(a, b) > 0.3 for a in left for b in ev.faces_in[index]):
                    ev.face_hits.append(index)
                ev.spent("faces-verified-out", t0)
        if pixelate is not None:
            ev.pixel_detail = worst

    def _audio(self) -> None:
        run, ev = self.run, self.run.evidence
        envelope = run.profile.first("audio_envelope")
        meter = sound.BandMeter(envelope.tone_hz) if envelope is not None else None  # type: ignore[union-attr]
        mutes = [r for m in run.profile.ops("mute") for r in m.ranges]  # type: ignore[union-attr]
        edge = int(sound.MUTE_EDGE_S * sound.RATE)
        spans = [(int(a * sound.RATE) + edge, int(b * sound.RATE) - edge) for a, b in mutes]
        energy = [0.0] * len(spans)
        counted = [0] * len(spans)
        carry: np.ndarray | None = None
        assert self._audio_fd is not None
        with os.fdopen(self._audio_fd, "rb", buffering=0) as pipe:
            while True:
                raw = media.read_exactly(pipe, sound.RATE // 10 * 4)
                if not raw:
                    break
                block = np.frombuffer(raw[: len(raw) - len(raw) % 4], dtype=np.float32)
                first = ev.samples_out
                ev.samples_out += block.size
                levels, carry = sound.rms_track(block, carry)
                ev.rms_out.extend(levels)
                if meter is not None:
                    meter.feed(block)
                for i, (lo, hi) in enumerate(spans):
                    a, b = max(lo, first), min(hi, first + block.size)
                    if a < b:
                        part = block[a - first : b - first].astype(np.float64)
                        energy[i] += float(np.square(part).sum())
                        counted[i] += b - a
        if meter is not None:
            ev.band_leak = meter.finish()
        ev.mute_db = [
            sound.level_db(np.array([np.sqrt(e / n)])) if n else -200.0
            for e, n in zip(energy, counted, strict=True)
        ]


# --- the checks ---------------------------------------------------------------------------------


def _check(name: str, passed: bool, **values: Any) -> dict[str, Any]:
    return {"check": name, "passed": bool(passed), **values}


def checks(run: Run) -> list[dict[str, Any]]:
    """Every check with its measured value and limit (all must pass for the output to be kept)."""
    ev, shape, profile = run.evidence, run.shape, run.profile
    report = ev.report
    assert report is not None
    out: list[dict[str, Any]] = []
    kinds = sorted(s.kind for s in report.streams)
    expected = sorted((["video"] if shape.video else []) + (["audio"] if shape.audio_out else []))
    out.append(
        _check(
            "streams",
            kinds == expected and not report.chapters,
            expected=expected,
            found=kinds,
            chapters=len(report.chapters),
        )
    )
    out.extend(_durations(ev, shape))
    if profile.ops("mute"):
        worst = max(ev.mute_db) if ev.mute_db else -200.0
        out.append(
            _check(
                "muted-ranges",
                worst <= MUTE_MAX_DB,
                max_db=round(worst, 1),
                limit_db=MUTE_MAX_DB,
                edge_s=sound.MUTE_EDGE_S,
            )
        )
    if profile.first("audio_envelope") is not None and shape.audio_out:
        out.append(
            _check(
                "envelope-band",
                ev.band_leak is not None and ev.band_leak <= BAND_LEAK_MAX,
                leak=_round(ev.band_leak),
                limit=BAND_LEAK_MAX,
                band_hz=sound.BAND_HZ,
            )
        )
        muted = [r for m in profile.ops("mute") for r in m.ranges]  # type: ignore[union-attr]
        follow = _follow(ev.rms_in, ev.rms_out, muted)
        out.append(
            _check(
                "envelope-follows-rms",
                follow is None or follow >= RMS_FOLLOW_MIN,
                correlation=_round(follow),
                limit=RMS_FOLLOW_MIN,
                window_s=sound.RMS_WINDOW_S,
            )
        )
    out_tags = [k for k, v in report.all_tags() if any(v == iv for _, iv in run.info.all_tags())]
    hits = sorted(set(ev.tag_hits) | set(out_tags))
    out.append(
        _check("no-input-tags", not hits, input_tags=len(run.info.all_tags()), surviving_keys=hits)
    )
    if run._checks_faces:
        sampled = sum(1 for b in ev.faces_in.values() if b)
        out.append(
            _check(
                "no-faces-left",
                not ev.face_hits,
                sampled_frames=len(ev.faces_in),
                frames_with_faces_in=sampled,
                frames_with_faces_out=len(ev.face_hits),
                threshold=faces.SENSITIVE_THRESHOLD,
                second_detector=None if profile.first("pixelate") else "haar",
            )
        )
    pixelate = profile.first("pixelate")
    if pixelate is not None and shape.video:
        detail = ev.pixel_detail
        out.append(
            _check(
                "pixelated",
                detail is not None and detail <= frames.PIXEL_TOLERANCE,
                block=pixelate.block,
                detail=_round(detail),  # type: ignore[union-attr]
                tolerance=frames.PIXEL_TOLERANCE,
            )
        )
    return out


def _duration(name: str, n_in: int, n_out: int, rate: float) -> dict[str, Any]:
    d_in, d_out = n_in / rate, n_out / rate
    return _check(
        name,
        n_out > 0 and abs(d_in - d_out) <= DURATION_TOLERANCE_S,
        input_s=round(d_in, 3),
        output_s=round(d_out, 3),
        tolerance_s=DURATION_TOLERANCE_S,
    )


def _durations(ev: Evidence, shape: Any) -> list[dict[str, Any]]:
    found = []
    if shape.video:
        found.append(_duration("video-duration", ev.frames_in, ev.frames_out, shape.fps))
    if shape.audio_out:
        found.append(_duration("audio-duration", ev.samples_in, ev.samples_out, sound.RATE))
    return found


def _follow(
    rms_in: list[float], rms_out: list[float], muted: list[list[float]]
) -> float | None:
    """Correlation of the input's and the output's short-term levels over audible windows that
    no muted range touches (a muted window is silent on purpose)."""
    n, w = min(len(rms_in), len(rms_out)), sound.RMS_WINDOW_S

    def kept(i: int) -> bool:
        return not any(a < (i + 1) * w and i * w < b for a, b in muted)

    pairs = [(rms_in[i], rms_out[i]) for i in range(n) if rms_in[i] > _AUDIBLE_DB and kept(i)]
    if len(pairs) < 3:
        return None  # too little sound to compare: nothing to follow
    a, b = np.array(pairs).T
    if np.std(a) < 0.5:  # a steady input level: compare levels, not their (flat) shape
        return 1.0 if float(np.max(np.abs(a - b))) <= 3.0 else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def failed(found: list[dict[str, Any]]) -> str | None:
    """The first failed check's name, or None."""
    return next((c["check"] for c in found if not c["passed"]), None)
