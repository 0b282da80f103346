"""Redaction profiles: named, validated lists of operations, part of the policy file.

A profile is ``[redaction_profiles.NAME]`` with ``operations = [{op = "...", ...}, ...]`` and an
optional ``deidentifying = true``. Rectangles are fractions of the frame (``[x, y, w, h]`` in
0..1), so one profile fits every resolution; time ranges are seconds ``[start, end]``.

``deidentifying`` is a claim the loader checks: a profile may make it only when it removes every
identifying channel, that is it pixelates the whole frame (or the input has no video) and drops
the audio or replaces it by its loudness envelope. Anything less (faces blurred, say) only
minimises: display names, shared screens and bodies stay.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "AUDIO_OPS", "VIDEO_OPS", "AudioEnvelope", "BlackBox", "BlurBox", "BlurFaces", "DropAudio",
    "Mute", "Operation", "Pixelate", "RedactionProfile", "StripMetadata",
]  # fmt: skip

_CONFIG = ConfigDict(extra="forbid", strict=True, frozen=True)
_MAX_SECONDS = 7 * 24 * 3600.0

Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Seconds = Annotated[float, Field(ge=0, le=_MAX_SECONDS, allow_inf_nan=False)]


class _Op(BaseModel):
    model_config = _CONFIG


class _Ranged(_Op):
    # [[start, end], ...] in seconds; empty: the whole clip.
    ranges: list[Annotated[list[Seconds], Field(min_length=2, max_length=2)]] = Field(
        default_factory=list, max_length=1000
    )

    @model_validator(mode="after")
    def _ordered(self) -> _Ranged:
        for start, end in self.ranges:
            if end <= start:
                raise PydanticCustomError(
                    "policy", "each range is [start, end] with end > start (got [{s}, {e}])",
                    {"s": start, "e": end},
                )  # fmt: skip
        return self


class DropAudio(_Op):
    op: Literal["drop_audio"]


class Mute(_Ranged):
    op: Literal["mute"]

    @model_validator(mode="after")
    def _has_ranges(self) -> Mute:
        if not self.ranges:
            raise PydanticCustomError("policy", 'mute needs ranges (use "drop_audio" for all)')
        return self


class AudioEnvelope(_Op):
    """Speech replaced by a steady tone whose level follows the input's short-term RMS."""

    op: Literal["audio_envelope"]
    tone_hz: float = Field(1000.0, ge=100, le=8000, allow_inf_nan=False)
    window_ms: float = Field(50.0, ge=10, le=1000, allow_inf_nan=False)


class _Rect(_Ranged):
    rect: Annotated[list[Fraction], Field(min_length=4, max_length=4)]  # x, y, w, h

    @model_validator(mode="after")
    def _inside(self) -> _Rect:
        x, y, w, h = self.rect
        if w <= 0 or h <= 0 or x + w > 1 or y + h > 1:
            raise PydanticCustomError("policy", "rect [x, y, w, h] must lie inside [0, 1]")
        return self


class BlackBox(_Rect):
    op: Literal["black_box"]


class BlurBox(_Rect):
    op: Literal["blur_box"]


class Pixelate(_Op):
    op: Literal["pixelate"]
    block: int = Field(16, ge=4, le=256)


class BlurFaces(_Op):
    op: Literal["blur_faces"]
    margin: float = Field(0.3, ge=0, le=2, allow_inf_nan=False)
    every: int = Field(5, ge=1, le=25)  # detect on every n-th frame, boxes carried between
    threshold: float = Field(0.5, gt=0, lt=1, allow_inf_nan=False)


class StripMetadata(_Op):
    op: Literal["strip_metadata"]


Operation = Annotated[
    DropAudio | Mute | AudioEnvelope | BlackBox | BlurBox | Pixelate | BlurFaces | StripMetadata,
    Field(discriminator="op"),
]
VIDEO_OPS = ("black_box", "blur_box", "pixelate", "blur_faces")
AUDIO_OPS = ("drop_audio", "mute", "audio_envelope")


class RedactionProfile(BaseModel):
    model_config = _CONFIG

    operations: list[Operation] = Field(min_length=1, max_length=50)
    deidentifying: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> RedactionProfile:
        kinds = [o.op for o in self.operations]
        for once in ("drop_audio", "audio_envelope", "pixelate", "blur_faces", "strip_metadata"):
            if kinds.count(once) > 1:
                raise PydanticCustomError("policy", "{op} is listed twice", {"op": once})
        if "drop_audio" in kinds and len(set(kinds) & set(AUDIO_OPS)) > 1:
            raise PydanticCustomError("policy", "drop_audio leaves nothing for other audio steps")
        if self.deidentifying:
            missing = [
                what for what, ok in (
                    ("pixelate the whole frame", "pixelate" in kinds),
                    ("drop the audio or replace it by its envelope",
                     "drop_audio" in kinds or "audio_envelope" in kinds),
                    ("strip_metadata", "strip_metadata" in kinds),
                ) if not ok
            ]  # fmt: skip
            if missing:
                raise PydanticCustomError(
                    "policy",
                    "deidentifying = true needs a profile that removes every identifying "
                    "channel; this one does not {what}",
                    {"what": " or ".join(missing)},
                )
        return self

    def ops(self, kind: str) -> list[Operation]:
        return [o for o in self.operations if o.op == kind]

    def first(self, kind: str) -> Operation | None:
        found = self.ops(kind)
        return found[0] if found else None

    @property
    def needs_video(self) -> bool:
        """Steps that only make sense on a picture (refused on an audio-only recording)."""
        return any(o.op in VIDEO_OPS for o in self.operations)

    @property
    def keeps_audio(self) -> bool:
        return self.first("drop_audio") is None
