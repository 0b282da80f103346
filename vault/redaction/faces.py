"""Face detection for redaction: CenterFace to find faces, Haar cascades to double-check.

CenterFace (a small CNN, run through ``cv2.dnn``; never onnxruntime) is the detector whose boxes
get blurred. Verification asks again, twice: CenterFace at a lower threshold, and OpenCV's Haar
cascades, an independent method with different failure modes, so a face the blur left
recognisable is not judged only by the model that placed the blur.

Frames are ``uint8`` arrays of shape (H, W, 3) in RGB order, as ffmpeg's ``rgb24`` decodes them.
The model is package data pinned by SHA-256 and is never downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

__all__ = [
    "DEFAULT_THRESHOLD",
    "MODEL_NAME",
    "MODEL_SHA256",
    "SENSITIVE_THRESHOLD",
    "Box",
    "CenterFace",
    "FaceDetector",
    "FaceTracker",
    "HaarFaces",
    "ModelIntegrityError",
    "blur_boxes",
    "default_centerface",
    "faces_present",
    "overlaps",
]

MODEL_NAME = "centerface"
MODEL_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
DEFAULT_THRESHOLD = 0.5
# Verification looks harder than redaction did: a blurred face must not even score 0.3.
SENSITIVE_THRESHOLD = 0.3

_NMS_IOU = 0.3  # as upstream: overlapping heatmap peaks of one face collapse into one box
_STRIDE = 4  # the output maps are 1/4 of the input size
_ALIGN = 32  # the network downsamples 5 times: input sides must be multiples of 32
_MAX_NETS = 4  # input sizes kept loaded at once (their buffers grow with the frame size)
_OUTPUTS = ["537", "538", "539", "540"]  # heatmap, log-scale (h, w), offset (y, x), landmarks
_BLUR_CELLS = 6  # width a blurred region is squeezed to: no facial feature survives 6 pixels


@dataclass(frozen=True, slots=True)
class Box:
    """Pixel coordinates in the frame, ``x1``/``y1`` exclusive, clipped to the frame."""

    x0: int
    y0: int
    x1: int
    y1: int
    score: float

    @property
    def area(self) -> int:
        return max(0, self.x1 - self.x0) * max(0, self.y1 - self.y0)


class ModelIntegrityError(RuntimeError):
    """The model file does not hash to :data:`MODEL_SHA256`; it was not loaded."""


class FaceDetector(Protocol):
    def detect(self, frame: np.ndarray, *, threshold: float = ...) -> list[Box]: ...


def _check_frame(frame: np.ndarray) -> tuple[int, int]:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 frame (H, W, 3), got {frame.dtype} {frame.shape}")
    return frame.shape[0], frame.shape[1]


def _clipped(x0: float, y0: float, x1: float, y1: float, score: float, w: int, h: int) -> Box:
    # Round outwards: a redaction box errs on the side of covering a pixel more.
    return Box(
        x0=min(max(math.floor(x0), 0), w),
        y0=min(max(math.floor(y0), 0), h),
        x1=min(max(math.ceil(x1), 0), w),
        y1=min(max(math.ceil(y1), 0), h),
        score=float(score),
    )


class CenterFace:
    """CenterFace through OpenCV's DNN module; one instance may be shared by threads."""

    def __init__(self, model_path: Path | None = None) -> None:
        if model_path is None:
            resource = resources.files("vault") / "redaction" / "models" / "centerface.onnx"
            data, where = resource.read_bytes(), str(resource)
        else:
            data, where = Path(model_path).read_bytes(), str(model_path)
        # Hash the very bytes handed to OpenCV, so the file cannot change in between.
        digest = hashlib.sha256(data).hexdigest()
        if digest != MODEL_SHA256:
            raise ModelIntegrityError(
                f"{where}: SHA-256 {digest} does not match the pinned {MODEL_SHA256}"
            )
        self._model = np.frombuffer(data, dtype=np.uint8)
        # OpenCV's DNN module (seen on 4.14) keeps shape-dependent state in a net after its first
        # forward: a later input of another size yields hundreds of bogus boxes. So each input
        # size gets its own net; parsing one takes ~25 ms and a video keeps one size.
        self._nets: OrderedDict[tuple[int, int], cv2.dnn.Net] = OrderedDict()
        self._unused: cv2.dnn.Net | None = cv2.dnn.readNetFromONNX(self._model)  # fail early
        # A net holds its input and buffers inside: setInput+forward must not interleave.
        self._lock = threading.Lock()

    def _net_for(self, size: tuple[int, int]) -> cv2.dnn.Net:
        """The net for one input size; call with the lock held."""
        net = self._nets.get(size)
        if net is None:
            net = self._unused if self._unused is not None else cv2.dnn.readNetFromONNX(self._model)
            self._unused = None
            self._nets[size] = net
            if len(self._nets) > _MAX_NETS:
                self._nets.popitem(last=False)
        self._nets.move_to_end(size)
        return net

    def detect(self, frame: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD) -> list[Box]:
        h, w = _check_frame(frame)
        w_in, h_in = _ALIGN * math.ceil(w / _ALIGN), _ALIGN * math.ceil(h / _ALIGN)
        # The model was trained on RGB (the upstream demo swaps OpenCV's BGR), which frames are.
        blob = cv2.dnn.blobFromImage(frame, 1.0, (w_in, h_in), (0, 0, 0), swapRB=False, crop=False)
        with self._lock:
            net = self._net_for((w_in, h_in))
            net.setInput(blob)
            heatmap, scale, offset, _landmarks = net.forward(_OUTPUTS)
        ys, xs = np.nonzero(heatmap[0, 0] > threshold)
        if len(ys) == 0:
            return []
        scores = heatmap[0, 0, ys, xs]
        # Each heatmap peak is a face centre; scale holds log sizes in units of the stride.
        box_h = np.exp(scale[0, 0, ys, xs]) * _STRIDE
        box_w = np.exp(scale[0, 1, ys, xs]) * _STRIDE
        cy = (ys + offset[0, 0, ys, xs] + 0.5) * _STRIDE
        cx = (xs + offset[0, 1, ys, xs] + 0.5) * _STRIDE
        # Back from the resized input to frame pixels (the two axes may be stretched differently).
        sx, sy = w / w_in, h / h_in
        x0, y0 = (cx - box_w / 2) * sx, (cy - box_h / 2) * sy
        bw, bh = box_w * sx, box_h * sy
        rects = np.stack([x0, y0, bw, bh], axis=1).astype(np.float64)
        keep = cv2.dnn.NMSBoxes(rects.tolist(), scores.tolist(), float(threshold), _NMS_IOU)
        return [
            _clipped(x0[i], y0[i], x0[i] + bw[i], y0[i] + bh[i], scores[i], w, h)
            for i in np.asarray(keep, dtype=int).ravel()
        ]


class HaarFaces:
    """Viola-Jones cascades: frontal, and profile both ways (the profile cascade only knows
    faces turned one way, so it also runs on the mirrored frame)."""

    def __init__(self) -> None:
        base = Path(cv2.data.haarcascades)
        self._frontal = cv2.CascadeClassifier(str(base / "haarcascade_frontalface_alt2.xml"))
        self._profile = cv2.CascadeClassifier(str(base / "haarcascade_profileface.xml"))
        if self._frontal.empty() or self._profile.empty():
            raise RuntimeError(f"Haar cascades missing or unreadable under {base}")
        # CascadeClassifier keeps per-call scratch state; OpenCV does not promise it is reentrant.
        self._lock = threading.Lock()

    def detect(self, frame: np.ndarray, *, min_neighbors: int = 3) -> list[Box]:
        h, w = _check_frame(frame)
        gray = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
        mirrored = cv2.flip(gray, 1)
        kwargs = {"scaleFactor": 1.1, "minNeighbors": min_neighbors, "minSize": (24, 24)}
        with self._lock:
            found = [
                (False, self._frontal.detectMultiScale(gray, **kwargs)),
                (False, self._profile.detectMultiScale(gray, **kwargs)),
                (True, self._profile.detectMultiScale(mirrored, **kwargs)),
            ]
        boxes: list[Box] = []
        for flipped, rects in found:
            for x, y, bw, bh in np.asarray(rects, dtype=int).reshape(-1, 4):
                x0 = w - (x + bw) if flipped else x
                # Haar gives no confidence: every box it keeps is a vote.
                boxes.append(_clipped(x0, y, x0 + bw, y + bh, 1.0, w, h))
        return boxes


def blur_boxes(frame: np.ndarray, boxes: Sequence[Box], *, margin: float = 0.3) -> None:
    """Make each box, grown by ``margin`` of its size on every side, unrecognisable, in place.

    The region is squeezed to ~6 pixels wide and smoothly scaled back up, then Gaussian-blurred:
    nothing survives the squeeze, and the smooth result (unlike pixel blocks) gives Haar no edges
    to mistake for a face. The margin covers hair, ears and a face that moved since detection.
    """
    h, w = _check_frame(frame)
    for box in boxes:
        mx, my = margin * (box.x1 - box.x0), margin * (box.y1 - box.y0)
        b = _clipped(box.x0 - mx, box.y0 - my, box.x1 + mx, box.y1 + my, box.score, w, h)
        rw, rh = b.x1 - b.x0, b.y1 - b.y0
        if rw <= 0 or rh <= 0:
            continue
        region = frame[b.y0 : b.y1, b.x0 : b.x1]
        cells_w = min(rw, _BLUR_CELLS)
        cells_h = min(rh, max(1, round(_BLUR_CELLS * rh / rw)))
        small = cv2.resize(region, (cells_w, cells_h), interpolation=cv2.INTER_AREA)
        smooth = cv2.resize(small, (rw, rh), interpolation=cv2.INTER_LINEAR)
        # An odd kernel about a cell wide smooths away the seams of bilinear interpolation.
        k = max(3, (rw // _BLUR_CELLS) | 1)
        region[...] = cv2.GaussianBlur(smooth, (k, k), 0)


class FaceTracker:
    """Detect on every `every`-th frame and carry the boxes over in between (the union of the
    last two detections, so a moving face stays covered)."""

    def __init__(
        self, detector: FaceDetector, *, every: int = 5, threshold: float = DEFAULT_THRESHOLD
    ) -> None:
        if every < 1:
            raise ValueError("every must be at least 1")
        self._detector = detector
        self._every = every
        self._threshold = threshold
        self._index = 0
        self._previous: list[Box] = []
        self._latest: list[Box] = []

    def boxes_for(self, frame: np.ndarray) -> list[Box]:
        """The boxes to redact in ``frame``; call once per frame, in order."""
        if self._index % self._every == 0:
            self._previous = self._latest
            self._latest = self._detector.detect(frame, threshold=self._threshold)
        self._index += 1
        # The older detection covers where the face came from, the blur margin where it goes.
        return self._previous + self._latest


def faces_present(
    frame: np.ndarray,
    *,
    centerface: CenterFace,
    haar: HaarFaces | None,
    sensitive: bool = True,
) -> list[Box]:
    """Every face either detector sees in a (redacted) frame, for verification.

    Pass ``haar=None`` on pixelated frames: Haar's edge features are prone to firing on pixel
    blocks, which would fail honest output; CenterFace at the sensitive threshold stays quiet.
    """
    threshold = SENSITIVE_THRESHOLD if sensitive else DEFAULT_THRESHOLD
    boxes = centerface.detect(frame, threshold=threshold)
    if haar is not None:
        boxes += haar.detect(frame)
    return boxes


def overlaps(a: Box, b: Box) -> float:
    """Intersection over the smaller box's area: 1.0 when one box holds the other."""
    iw = min(a.x1, b.x1) - max(a.x0, b.x0)
    ih = min(a.y1, b.y1) - max(a.y0, b.y0)
    smaller = min(a.area, b.area)
    if iw <= 0 or ih <= 0 or smaller == 0:
        return 0.0
    return iw * ih / smaller


@functools.lru_cache(maxsize=1)
def default_centerface() -> CenterFace:
    """The packaged model, loaded (and its hash checked) once per process."""
    return CenterFace()
